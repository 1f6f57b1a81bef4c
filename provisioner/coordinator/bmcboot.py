"""POWER_ON through the host's BMC, for hosts whose boot method is redfish or ipmi (docs/architecture.md "Rolling
pool upgrade", its boot methods; docs/power.md).

REBOOT shut the host down through XAPI (dom0 stops cleanly); this step then waits for it to go down, and powers it
on through its BMC with a one-time network boot (power/netboot.py: confirmed off, the override, confirmed on; a
power-on is never sent while it is still going down), then watches for a boot-config fetch on its attempt. A host
that booted its disk anyway is power-cycled through the BMC once more (BMC_TRIES in all), then the step fails and
the remedy is "did not network-boot" (remedies.NOT_NETWORK_BOOTED, naming the boot method and the BMC).

Commit then act: each try is recorded (a `bmc.netboot` event) before the BMC is touched; after a crash, a host that
fetched its boot config (or whose installer ran) is never power-cycled again, and one whose last try is recorded
is first given `timeouts.boot` to fetch before another try.
"""

from __future__ import annotations

from provisioner import registry, states
from provisioner.boot import attempts
from provisioner.coordinator import installing, wiring
from provisioner.coordinator.context import Context, StepFailed, find, host_probe
from provisioner.power import hosts as power_hosts
from provisioner.power.base import PowerError
from provisioner.power.netboot import network_boot_cycle
from provisioner.store import RunHost

BMC_TRIES = 2
"""One-time network boots through the BMC before "did not network-boot": the first, and one retry."""
EVENT = "bmc.netboot"
"""Recorded before each try (attempt number, BMC, boot method)."""


def method(ctx: Context, rh: RunHost) -> str:
    """The host's boot method (its own, else its pool's default: registry.boot_method_of)."""
    host = ctx.store.get_host(rh.mac)
    return registry.boot_method_of(ctx.store, host) if host is not None else "network-first"


def uses_bmc(ctx: Context, rh: RunHost) -> bool:
    return method(ctx, rh) in wiring.BMC_METHODS


def fetched(ctx: Context, rh: RunHost) -> bool:
    """A boot config was fetched on its attempt since ARM, or its installer got further (the attempt left ARMED).
    Unlike steps._boot_seen, a host that came back from its disk does not count."""
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id else None
    if attempt is None or attempt.state != states.ARMED:
        return True
    return any(e["details"].get("attempt") == attempt.id and e["details"].get("what") in attempts.BOOT_CONFIG_KINDS
               for e in ctx.store.events(mac=rh.mac, run_id=ctx.run_id, kind="attempt.fetch"))


def _tries(ctx: Context, rh: RunHost) -> int:
    return len(ctx.store.events(mac=rh.mac, run_id=ctx.run_id, kind=EVENT))


def _wait_fetch(ctx: Context, rh: RunHost, what: str, boot_time_before: float | None) -> bool:
    """Wait up to timeouts.boot for a boot-config fetch; stop early when the host is back with a boot time newer
    than `boot_time_before` (it booted its disk). True when it fetched."""
    def done(info) -> bool:
        return fetched(ctx, rh) or (info is not None and info.live
                                    and info.boot_time not in (rh.before_boot_time, boot_time_before))
    probe, _ = host_probe(ctx, rh, done)
    try:
        installing.wait(ctx, rh, what, ctx.timeouts.boot, probe)
    except installing.MarkedFailed:
        raise
    except StepFailed:
        pass
    return fetched(ctx, rh)


def power_on(ctx: Context, rh: RunHost) -> str:
    """The POWER_ON step of a redfish / ipmi host (master or member)."""
    how = method(ctx, rh)
    if fetched(ctx, rh):
        ctx.event("step.skipped", rh, step=states.STEP_POWER_ON, why="already network-booting or booted")
        return states.STEP_WAIT_DOWN
    done = _tries(ctx, rh)
    host = ctx.store.get_host(rh.mac)
    try:
        control = wiring.boot_control(ctx.store, ctx.config, host)
    except PowerError as exc:
        raise StepFailed(f"not powered on: {exc}") from None
    try:
        return _tries_from(ctx, rh, control, how, host.firmware == "uefi", done)
    finally:
        power_hosts.close(control)


def _state(control) -> str | None:
    try:
        return control.power_state()
    except PowerError:
        return None


def _tries_from(ctx: Context, rh: RunHost, control, how: str, uefi: bool, done: int) -> str:
    """Run the BMC tries after the `done` recorded ones. Resuming a recorded try: a machine the BMC shows off
    never got its power-on (a crash before the confirm loop finished), so that try is run again; one that is on
    is given timeouts.boot to fetch first."""
    first = done + 1
    if done == 0:
        probe, _ = host_probe(ctx, rh, lambda info: info is None or not info.live or fetched(ctx, rh))
        installing.wait(ctx, rh, "shutting down", ctx.timeouts.down, probe)
    elif _state(control) == "off":
        first = done
    elif _wait_fetch(ctx, rh, f"network boot after BMC try {done}/{BMC_TRIES}", None):
        return states.STEP_WAIT_DOWN  # the try recorded before a crash worked
    say = wiring.bmc_progress(lambda line: ctx.say(f"{rh.name}: {line}"))
    for n in range(first, BMC_TRIES + 1):
        info = find(ctx, rh.uuid)
        boot_time = info.boot_time if info is not None and info.live else None
        if n > done:
            ctx.event(EVENT, rh, attempt=n, bmc=control.name, method=how)
        try:
            network_boot_cycle(control, uefi=uefi, times=ctx.bmc_times or wiring.confirm_times(ctx.config),
                               clock=ctx.clock, progress=say)
        except PowerError as exc:
            raise StepFailed(f"one-time network boot through the BMC failed: {exc}") from None
        if _wait_fetch(ctx, rh, f"network boot after BMC try {n}/{BMC_TRIES}", boot_time):
            return states.STEP_WAIT_DOWN
        ctx.event("host.power_on_unseen", rh, attempt=n, bmc=control.name)
    raise StepFailed(f"did not network-boot: boot method {how}, one-time network boot and power-on through BMC "
                     f"{control.name} {BMC_TRIES} times and no boot config was fetched on its attempt")
