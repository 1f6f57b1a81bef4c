"""The host steps of an upgrade, each idempotent: it reads the world first and does nothing if its effect is there.

What each step does is said once, in provisioner.states; TABLE below gives each its action, whether an abort
stops before it, and the timeouts that bound it. The runner commits a step BEFORE calling its action, so after a
crash the same action runs again: it must then notice that its side effect already happened (host already
disabled, attempt already armed for this run, reboot already under way or done, VM already suspended) instead of
repeating it. Waits poll on an injectable clock with a timeout.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from provisioner import sites, states
from provisioner.boot import attempts
from provisioner.coordinator import (bmcboot, converge, hostplugin, installing, journal, members, pinned, selfcheck,
                                     vms)
from provisioner.coordinator.context import (Context, RealClock, StepFailed, Timeouts, error_code, find, host_probe,
                                             live_info, wait_for, xapi_call)
from provisioner.coordinator.evacuation import evacuate as evacuate_wave
from provisioner.coordinator.plan import at_target
from provisioner.store import RunHost
from provisioner.xapi import HostInfo, MasterNotBack, XapiError, XapiUnreachable

__all__ = ["Context", "RealClock", "StepFailed", "Timeouts", "Step", "TABLE", "STEPS", "DESTRUCTIVE_STEPS", "find",
           "make_safe"]


def check(ctx: Context, rh: RunHost) -> str:
    """Next step: DONE when the host is already at the target and enabled, else DISABLE."""
    info = live_info(ctx, rh)
    if at_target(info, ctx.media) and info.enabled:
        return states.STEP_DONE
    members.wait_all(ctx, rh)  # every member answers the master before this host is touched (members.py)
    info = live_info(ctx, rh)
    if not info.live:  # shut down, or unheard for 10 min (a member that never reconnected: members.py)
        raise StepFailed("host is not live (the master has not heard from it: shut down, or not reconnected to "
                         "the master)")
    pinned.recheck_evacuation(ctx, rh, info.ref)  # before anything destructive (pinned.py)
    return states.STEP_DISABLE


def disable(ctx: Context, rh: RunHost) -> str:
    info = live_info(ctx, rh)
    if info.enabled:  # a member not reconnected yet: CANNOT_CONTACT_HOST / HOST_OFFLINE retried (members.py)
        members.retry(ctx, rh, "host.disable",
                      lambda: xapi_call(ctx, rh, "host.disable", ctx.driver.disable, info.ref))
    return states.STEP_EVACUATE


def evacuate(ctx: Context, rh: RunHost) -> str:
    """Pool: journal the resident VMs, then host.evacuate. Pool of one: eject, suspend / shut down (vms.py)."""
    try:
        hosts = ctx.driver.hosts()
    except (XapiUnreachable, XapiError) as exc:
        raise StepFailed(f"the pool master does not answer: {exc}") from None
    info = next((h for h in hosts if h.uuid == rh.uuid), None)
    if info is None:
        raise StepFailed("XAPI no longer knows the host")
    if len(hosts) == 1:
        for line in vms.stop_for_upgrade(ctx, rh, info.ref):
            ctx.say(f"{rh.name}: {line}")
        return states.STEP_ARM
    said = pinned.stop_pinned(ctx, rh, info.ref)
    found = ctx.driver.vms()  # one read for both below: ejecting a CD moves no VM
    for line in said + vms.eject_tools_cds(ctx, rh, info.ref, found):
        ctx.say(f"{rh.name}: {line}")  # pinned VMs (consent) shut down, tools ISOs ejected: pinned.py, vms.py
    vms.note_resident(ctx, rh, info.ref, found)
    if ctx.wave is not None and rh.role != "master":  # a --parallel wave: per-VM migrations to chosen targets
        for line in evacuate_wave(ctx, rh, info.ref, ctx.wave, hosts, found):  # the reads above: no VM moved since
            ctx.say(f"{rh.name}: {line}")
        return states.STEP_ARM
    # host.evacuate on an empty host is a no-op, so calling it again after a crash is harmless.
    xapi_call(ctx, rh, "host.evacuate", ctx.driver.evacuate, info.ref)
    journal.write(ctx.store, ctx.run_id, journal.VM_EVACUATED, mac=rh.mac)
    return states.STEP_ARM


def arm(ctx: Context, rh: RunHost) -> str:
    """Record the boot_time to compare with, then arm (unless this run's attempt already exists)."""
    info = live_info(ctx, rh)
    current = ctx.store.current_attempt(rh.mac)
    if current is not None and current.run_id == ctx.run_id and current.state in (
            states.ARMED, states.STARTED, states.SUCCEEDED, states.FAILED):
        # Armed before a crash: never re-arm, above all not after the start script (a second install).
        ctx.store.set_host_step(ctx.run_id, rh.mac, None, attempt_id=current.id,
                                before_boot_time=rh.before_boot_time or info.boot_time,
                                before_version=rh.before_version or info.product_version)
        return states.STEP_REBOOT
    ctx.store.set_host_step(ctx.run_id, rh.mac, None, before_boot_time=info.boot_time,
                            before_version=info.product_version)
    if hostplugin.uses(ctx.store, rh.mac):  # the host boots its own answer file: nothing of ours to arm
        return states.STEP_REBOOT
    attempt = attempts.arm(ctx.store, ctx.config, rh.mac, ctx.media.name, run_id=ctx.run_id)
    ctx.store.set_host_step(ctx.run_id, rh.mac, None, attempt_id=attempt.id)
    return states.STEP_REBOOT


def _rebooted(ctx: Context, rh: RunHost, info: HostInfo | None) -> bool:
    """The reboot already happened or is under way (so it must not be sent again)."""
    if info is None or not info.live or info.boot_time != rh.before_boot_time:
        return True
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id else None
    return attempt is not None and attempt.state != states.ARMED


def reboot(ctx: Context, rh: RunHost) -> str:
    """host.reboot; with --power-cycle, host.shutdown for a member (POWER_ON follows). Without a BMC the master is
    always rebooted: while it is down no host could run its host.power_on. A host whose boot method is redfish or
    ipmi (master or member) is shut down, and POWER_ON powers it on through its BMC (bmcboot.py)."""
    cycle = bmcboot.uses_bmc(ctx, rh) or (ctx.power_cycle and rh.role != "master")
    after = states.STEP_POWER_ON if cycle else states.STEP_WAIT_DOWN
    info = find(ctx, rh.uuid)
    if _rebooted(ctx, rh, info):
        ctx.event("step.skipped", rh, step=states.STEP_REBOOT, why="already rebooting or rebooted")
        return after
    check_boot_server(ctx, rh)
    if hostplugin.uses(ctx.store, rh.mac):
        hostplugin.prepare(ctx, rh, info.ref)  # prepare_host_upgrade.py main, recorded first
    try:
        if cycle:
            xapi_call(ctx, rh, "host.shutdown", ctx.driver.shutdown, info.ref)
        else:
            xapi_call(ctx, rh, "host.reboot", ctx.driver.reboot, info.ref)
    except XapiError as exc:
        if error_code(exc) == "OTHER_OPERATION_IN_PROGRESS":
            return after  # the one sent before a crash is still starting
        raise
    except XapiUnreachable:
        if rh.role == "master" and _reboot_sent(ctx, rh):
            return after  # the master this run rebooted stopped answering between our read and the call
        raise
    return after


def _reboot_sent(ctx: Context, rh: RunHost) -> bool:
    """This run already had a host.reboot / host.shutdown of this host accepted (its xapi.call event)."""
    return any(e["details"].get("method") in ("host.reboot", "host.shutdown") and e["details"].get("ok")
               for e in ctx.store.events(run_id=ctx.run_id, mac=rh.mac, kind="xapi.call"))


def check_boot_server(ctx: Context, rh: RunHost) -> None:
    """Before anything reboots the host: our own TFTP and HTTP give it its installer (selfcheck.py), else the step
    fails with nothing sent, a "nothing changed" failure the run undoes (remedies.NOTHING_CHANGED). A host-plugin
    host fetches only the media, over HTTP, and has no attempt (hostplugin.py)."""
    host = ctx.store.get_host(rh.mac)
    config = sites.site_config(ctx.store, ctx.config, host)  # the host's site's server: where it will fetch from
    if hostplugin.uses(ctx.store, rh.mac):
        try:
            selfcheck.check_media(config, ctx.media)
        except selfcheck.SelfCheckFailed as exc:
            raise StepFailed(f"not rebooted: the host could not fetch the installer: {exc}") from None
        return
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id else None
    if host is None or attempt is None:
        raise StepFailed("not rebooted: the host or its installer attempt is no longer recorded; re-run the upgrade")
    try:
        selfcheck.check_boot_server(config, host, ctx.media, attempt)
    except selfcheck.SelfCheckFailed as exc:
        raise StepFailed(f"not rebooted: the boot server would not give it the installer: {exc}") from None


POWER_ON_TRIES = 3


def _boot_seen(ctx: Context, rh: RunHost, info: HostInfo | None) -> bool:
    """Since ARM, the host fetched a boot config on its attempt, or its installer started, or it is back."""
    if info is not None and info.live and info.boot_time != rh.before_boot_time:
        return True
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id else None
    if attempt is None or attempt.state != states.ARMED:
        return True
    return any(e["details"].get("attempt") == attempt.id and e["details"].get("what") in attempts.BOOT_CONFIG_KINDS
               for e in ctx.store.events(mac=rh.mac, run_id=ctx.run_id, kind="attempt.fetch"))


def _wait_host(ctx: Context, rh: RunHost, what: str, timeout: float,
               done: Callable[[HostInfo | None], bool]) -> HostInfo | None:
    """wait_for, except that a running installer is never timed out and mark-failed ends it (installing.py)."""
    probe, last = host_probe(ctx, rh, done)
    installing.wait(ctx, rh, what, timeout, probe)
    return last[0]


def power_on(ctx: Context, rh: RunHost) -> str:
    """--power-cycle, a member: wait until it is down and off, host.power_on through the master, and watch it
    network-boot (a boot-config fetch on its attempt); power it on again if it does not, POWER_ON_TRIES in all.
    Idempotent: a host that booted already (before a crash) is not powered on again. A redfish / ipmi host is
    powered on through its BMC instead, with a one-time network boot (bmcboot.py)."""
    if bmcboot.uses_bmc(ctx, rh):
        return bmcboot.power_on(ctx, rh)
    _wait_host(ctx, rh, "shutting down", ctx.timeouts.down,
               lambda info: info is not None and (not info.live or _boot_seen(ctx, rh, info)))
    if _boot_seen(ctx, rh, find(ctx, rh.uuid)):
        ctx.event("step.skipped", rh, step=states.STEP_POWER_ON, why="already booting or booted")
        return states.STEP_WAIT_DOWN
    ctx.clock.sleep(ctx.timeouts.off)
    mode = ""
    for n in range(1, POWER_ON_TRIES + 1):  # the master runs host.power_on: wait for it if it hiccups
        info = _wait_host(ctx, rh, "the pool master answers", ctx.timeouts.down, lambda info: info is not None)
        if _boot_seen(ctx, rh, info):
            return states.STEP_WAIT_DOWN
        mode = info.power_on_mode
        try:
            xapi_call(ctx, rh, "host.power_on", ctx.driver.power_on, info.ref, mode=mode, attempt=n)
        except XapiError as exc:
            if error_code(exc) != "HOST_IS_LIVE":  # live: it came up by itself; the wait below tells how
                raise
        try:
            _wait_host(ctx, rh, f"network boot after power-on {n}/{POWER_ON_TRIES}", ctx.timeouts.boot,
                       lambda info: _boot_seen(ctx, rh, info))
            return states.STEP_WAIT_DOWN
        except installing.MarkedFailed:
            raise
        except StepFailed:
            ctx.event("host.power_on_unseen", rh, attempt=n)
    raise StepFailed(f"powered on {POWER_ON_TRIES} times through the pool (power_on_mode {mode or 'unset'}) and "
                     f"it never network-booted: check its power-on settings and that it boots from the network")


def wait_down(ctx: Context, rh: RunHost) -> str:
    _wait_host(ctx, rh, "going down", ctx.timeouts.down, lambda info: _rebooted(ctx, rh, info) and (
        info is None or not info.live or info.boot_time != rh.before_boot_time))
    return states.STEP_WAIT_UP


def wait_up(ctx: Context, rh: RunHost) -> str:
    """Member: live with a new boot_time (read through the master). Master: first the re-login loop (xapi.py:
    refused, HOST_STILL_BOOTING, SESSION_INVALID tolerated, HOST_IS_SLAVE never followed), then the same.
    Neither is timed out while the installer runs (installing.py)."""
    start = ctx.clock.now()
    if rh.role == "master":
        why = {"last": "not answering"}

        def logged_in() -> tuple[bool, str]:  # one login try (timeout=0): the wait below paces and times it
            try:
                ctx.driver.relogin_master(timeout=0, clock=ctx.clock, interval=ctx.timeouts.poll,
                                          progress=lambda seen: why.update(last=seen))
                return True, "logged in"
            except MasterNotBack:
                return False, why["last"]
        installing.wait(ctx, rh, "master re-login", ctx.timeouts.up, logged_in)
        ctx.event("master.relogin", rh, seconds=round(ctx.clock.now() - start, 1))
    # a long install can use up `up` in the re-login wait: the master that answers still gets `down` to show live
    left = max(ctx.timeouts.up - (ctx.clock.now() - start), ctx.timeouts.down if rh.role == "master"
               else ctx.timeouts.poll)
    _wait_host(ctx, rh, "installing / coming back", left,
               lambda info: info is not None and info.live and info.boot_time != rh.before_boot_time)
    return states.STEP_VERIFY


def verify(ctx: Context, rh: RunHost) -> str:
    info = live_info(ctx, rh)
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id else None
    outcome = f"installer attempt {attempt.state}" if attempt else "no attempt"
    if not at_target(info, ctx.media) and attempt is None and hostplugin.uses(ctx.store, rh.mac):
        raise StepFailed(f"did not enter the installer (host-plugin): came back at {info.product_version} build "
                         f"{info.build_number} with a new boot time; its bootloader did not take the plugin's "
                         "upgrade entry, or the installer stopped before writing anything (it reports to nobody)")
    if not at_target(info, ctx.media):
        raise StepFailed(f"came back at {info.product_version} build {info.build_number}, not "
                         f"{ctx.media.product_version} build {ctx.media.build} ({outcome})")
    if attempt is not None and attempt.state == states.FAILED:
        raise StepFailed(f"at the target version but the installer reported failure ({outcome})")
    return states.STEP_CONVERGE if journal.options(ctx.store, ctx.run_id)["updates"] else states.STEP_STORAGE


def storage(ctx: Context, rh: RunHost) -> str:
    """XenCenter's CheckAndPlugPBDs (docs/xapi.md "XenCenter's plan for each host"): wait up to timeouts.storage for the
    host to be enabled with its PBDs attached (PBD state is not trusted while it is disabled, CA-66496), then PBD.plug
    what is still unplugged on every live host (the tools SR's too, which XenCenter skips: plugging it is harmless and a
    host should end with every PBD attached). Never fails the host: what stays unplugged is a warning."""
    start, shown, pbds = ctx.clock.now(), None, []
    while True:
        try:
            info, pbds = find(ctx, rh.uuid), ctx.driver.pbds()
            left = [p.sr for p in pbds if info is not None and p.host == info.ref and not p.attached]
            seen = None if info is not None and info.enabled and not left else (
                f"enabled={info.enabled if info else '?'}, unplugged: {', '.join(left) or 'none'}")
        except (XapiError, XapiUnreachable) as exc:
            seen = f"master not answering ({exc})"
        if seen is None or ctx.clock.now() - start >= ctx.timeouts.storage:
            break
        if seen != shown:
            ctx.say(f"{rh.name}: storage: {seen}")
            shown = seen
        ctx.clock.sleep(ctx.timeouts.poll)
    try:
        live = {h.ref: h.name for h in ctx.driver.hosts() if h.live}
    except (XapiError, XapiUnreachable):
        live = {}
    for pbd in pbds:
        if pbd.attached or pbd.host not in live:
            continue
        try:
            # Async.PBD.plug, waited for up to timeouts.pbd_plug: slow iSCSI / FC attaches (xapi_checks.py)
            xapi_call(ctx, rh, "PBD.plug", ctx.driver.plug_pbd, pbd.ref, ctx.timeouts.pbd_plug, sr=pbd.sr,
                      on=live[pbd.host])
        except (XapiError, XapiUnreachable) as exc:
            journal.warn(ctx.store, ctx.run_id, f"SR {pbd.sr} not plugged on {live[pbd.host]}: {exc}", mac=rh.mac)
    return states.STEP_ENABLE


def enable(ctx: Context, rh: RunHost) -> str:
    def enabled(info: HostInfo | None) -> bool:
        if info is None or not info.live:
            return False
        if info.enabled:
            return True
        try:
            xapi_call(ctx, rh, "host.enable", ctx.driver.enable, info.ref)
        except XapiError as exc:
            if error_code(exc) == "HOST_STILL_BOOTING":
                return False  # xapi's startup is not complete yet: retry (docs/xapi.md "Host lifecycle calls")
            raise
        except XapiUnreachable:
            return False
        return False  # re-read: the next poll confirms it
    wait_for(ctx, rh, "enable", ctx.timeouts.enable, enabled)
    return states.STEP_RESTORE


def restore(ctx: Context, rh: RunHost) -> str:
    """Resume / start the VMs EVACUATE stopped here; with migrate_back, bring back the ones it moved (vms.py).
    A VM that cannot be put back is a warning in the report, not a failed host."""
    info = live_info(ctx, rh)
    for line in vms.restore(ctx, rh, info.ref, migrate_back=ctx.migrate_back):
        ctx.say(f"{rh.name}: {line}")
    return states.STEP_DONE


class Step(NamedTuple):
    """One row of TABLE."""

    name: str  # a provisioner.states STEP_* constant
    action: Callable[[Context, RunHost], str]  # runs the committed step; returns the next step
    destructive: bool  # it changes the pool: an abort request stops the host before it (the runner)
    timeouts: tuple[str, ...]  # the Timeouts attributes bounding its waits (none: single XAPI calls)


TABLE: tuple[Step, ...] = (
    Step(states.STEP_CHECK, check, False, ()),
    Step(states.STEP_DISABLE, disable, True, ()),
    Step(states.STEP_EVACUATE, evacuate, True, ()),
    Step(states.STEP_ARM, arm, True, ()),
    Step(states.STEP_REBOOT, reboot, True, ()),
    # Changes the pool too, but an abort must not leave a host shut down: it is not destructive here.
    Step(states.STEP_POWER_ON, power_on, False, ("down", "off", "boot")),
    Step(states.STEP_WAIT_DOWN, wait_down, False, ("down",)),
    Step(states.STEP_WAIT_UP, wait_up, False, ("up", "down")),
    Step(states.STEP_VERIFY, verify, False, ()),
    # Changes the host (apply, reboot for a guidance) but runs to its end after an abort: a host left with a pending
    # reboot guidance could not be enabled (converge.py)
    Step(states.STEP_CONVERGE, converge.converge, False, ("down", "up", "enable")),
    Step(states.STEP_STORAGE, storage, False, ("storage", "pbd_plug")),
    Step(states.STEP_ENABLE, enable, False, ("enable",)),
    Step(states.STEP_RESTORE, restore, False, ()),  # after an abort too: VMs are put back
)
"""Every step that runs an action (states.HOST_ACTIVE), in the order a host walks them."""

STEPS: dict[str, Callable[[Context, RunHost], str]] = {step.name: step.action for step in TABLE}
"""The action of each committed step; it returns the next step."""
DESTRUCTIVE_STEPS = frozenset(step.name for step in TABLE if step.destructive)
"""Steps an abort request stops before (they change the pool; the later ones only watch or repair)."""


def make_safe(ctx: Context, rh: RunHost) -> list[str]:
    """Best effort after a failure or an abort: disarm, re-enable the host if it is live, and resume / start the
    VMs this run stopped on it (a pool of one whose upgrade did not happen); says what it did."""
    done = []
    for attempt in ctx.store.disarm_attempts(rh.mac, details={"reason": "run stopped"}):
        done.append(f"disarmed attempt {attempt.id}")
    info = find(ctx, rh.uuid)
    if info is None or not info.live:
        left = [e["name"] for e in vms.not_restored(ctx.store, ctx.run_id) if e["mac"] == rh.mac]
        return done + ([f"VMs left stopped: {', '.join(left)}"] if left else [])
    if not info.enabled:
        try:  # a host back at its old version may still be starting: wait for it as ENABLE does
            enable(ctx, rh)
            done.append("re-enabled")
        except (StepFailed, XapiError, XapiUnreachable) as exc:
            done.append(f"could not re-enable: {exc}")
    try:
        done += vms.restore(ctx, rh, info.ref, migrate_back=False)
    except (XapiError, XapiUnreachable) as exc:
        done.append(f"VMs not restored: {exc}")
    return done
