"""The host steps of an upgrade, each idempotent: it reads the world first and does nothing if its effect is there.

The runner commits a step BEFORE calling it, so after a crash the same step runs again: a step must then
notice that its side effect already happened (host already disabled, attempt already armed for this run,
reboot already under way or done) instead of repeating it. Waits poll on an injectable clock with a timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from provisioner import attempts, states
from provisioner.config import Config
from provisioner.coordinator.plan import at_target
from provisioner.model import Media
from provisioner.store import RunHost, Store
from provisioner.xapi import Failure, HostInfo, PoolDriver, XapiUnreachable


class StepFailed(RuntimeError):
    """A step could not reach its effect; the message is the reason shown to the operator."""


class RealClock:
    """Wall-clock time; tests pass the simulator's Clock (same now()/sleep() in simulated seconds)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Timeouts:
    """Seconds (on the run's clock). A real upgrade installs in 20-60 min; the master's startup takes minutes."""

    down: float = 900.0       # reboot sent -> host went down (or already came back)
    up: float = 4 * 3600.0    # went down -> back up with a new boot_time
    enable: float = 1800.0    # HOST_STILL_BOOTING may last minutes after xapi starts
    poll: float = 10.0


@dataclass
class Context:
    store: Store
    config: Config
    driver: PoolDriver
    media: Media
    run_id: str
    clock: object = field(default_factory=RealClock)
    timeouts: Timeouts = field(default_factory=Timeouts)
    say: Callable[[str], None] = lambda line: None

    def event(self, kind: str, rh: RunHost, **details) -> None:
        self.store.add_event(kind, mac=rh.mac, run_id=self.run_id, details={"host": rh.name, **details})


def find(ctx: Context, uuid: str) -> HostInfo | None:
    """The host's XAPI record, or None while the master does not answer (it may be the one rebooting)."""
    try:
        return next((h for h in ctx.driver.hosts() if h.uuid == uuid), None)
    except (XapiUnreachable, Failure):
        # Refused connections, HOST_STILL_BOOTING and SESSION_INVALID are all normal while the master restarts.
        return None


def _xapi(ctx: Context, rh: RunHost, method: str, fn: Callable[[str], None], ref: str) -> None:
    """One destructive XAPI call with its outcome in the event log."""
    try:
        fn(ref)
    except (Failure, XapiUnreachable) as exc:
        ctx.event("xapi.call", rh, method=method, ok=False, error=str(exc)[:300])
        raise
    ctx.event("xapi.call", rh, method=method, ok=True)


def _wait(ctx: Context, rh: RunHost, what: str, timeout: float,
          done: Callable[[HostInfo | None], bool]) -> HostInfo | None:
    start, shown = ctx.clock.now(), None
    while True:
        info = find(ctx, rh.uuid)
        if done(info):
            return info
        seen = ("master not answering" if info is None
                else f"live={info.live} enabled={info.enabled} version={info.product_version}")
        if seen != shown:
            ctx.say(f"{rh.name}: {what}: {seen} [{(ctx.clock.now() - start) / 60:.1f} min]")
            shown = seen
        if ctx.clock.now() - start > timeout:
            raise StepFailed(f"{what}: not done after {timeout / 60:.0f} min (last seen: {seen})")
        ctx.clock.sleep(ctx.timeouts.poll)


def _live_info(ctx: Context, rh: RunHost) -> HostInfo:
    info = find(ctx, rh.uuid)
    if info is None:
        raise StepFailed("the pool master does not answer, or XAPI no longer knows the host")
    return info


def check(ctx: Context, rh: RunHost) -> str:
    """Next step: DONE when the host is already at the target and enabled, else DISABLE."""
    info = _live_info(ctx, rh)
    if at_target(info, ctx.media) and info.enabled:
        return states.STEP_DONE
    if not info.live:
        raise StepFailed("host is not live")
    return states.STEP_DISABLE


def disable(ctx: Context, rh: RunHost) -> str:
    info = _live_info(ctx, rh)
    if info.enabled:
        _xapi(ctx, rh, "host.disable", ctx.driver.disable, info.ref)
    return states.STEP_EVACUATE


def evacuate(ctx: Context, rh: RunHost) -> str:
    info = _live_info(ctx, rh)
    # host.evacuate on an empty host is a no-op, so calling it again after a crash is harmless.
    _xapi(ctx, rh, "host.evacuate", ctx.driver.evacuate, info.ref)
    return states.STEP_ARM


def arm(ctx: Context, rh: RunHost) -> str:
    """Record the boot_time to compare with, then arm (unless this run's attempt already exists)."""
    info = _live_info(ctx, rh)
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
    info = find(ctx, rh.uuid)
    if _rebooted(ctx, rh, info):
        ctx.event("step.skipped", rh, step=states.STEP_REBOOT, why="already rebooting or rebooted")
        return states.STEP_INSTALLING
    try:
        _xapi(ctx, rh, "host.reboot", ctx.driver.reboot, info.ref)
    except Failure as exc:
        if exc.details and exc.details[0] == "OTHER_OPERATION_IN_PROGRESS":
            return states.STEP_INSTALLING  # the reboot sent before a crash is still starting
        raise
    return states.STEP_INSTALLING


def wait_down(ctx: Context, rh: RunHost) -> str:
    _wait(ctx, rh, "going down", ctx.timeouts.down, lambda info: _rebooted(ctx, rh, info) and (
        info is None or not info.live or info.boot_time != rh.before_boot_time))
    return states.STEP_WAIT_UP


def wait_up(ctx: Context, rh: RunHost) -> str:
    _wait(ctx, rh, "installing / coming back", ctx.timeouts.up,
          lambda info: info is not None and info.live and info.boot_time != rh.before_boot_time)
    return states.STEP_VERIFY


def verify(ctx: Context, rh: RunHost) -> str:
    info = _live_info(ctx, rh)
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id else None
    outcome = f"installer attempt {attempt.state}" if attempt else "no attempt"
    if not at_target(info, ctx.media):
        raise StepFailed(f"came back at {info.product_version} build {info.build_number}, not "
                         f"{ctx.media.product_version} build {ctx.media.build} ({outcome})")
    if attempt is not None and attempt.state == states.FAILED:
        raise StepFailed(f"at the target version but the installer reported failure ({outcome})")
    return states.STEP_ENABLE


def enable(ctx: Context, rh: RunHost) -> str:
    def enabled(info: HostInfo | None) -> bool:
        if info is None or not info.live:
            return False
        if info.enabled:
            return True
        try:
            _xapi(ctx, rh, "host.enable", ctx.driver.enable, info.ref)
        except Failure as exc:
            if exc.details and exc.details[0] == "HOST_STILL_BOOTING":
                return False  # xapi's startup is not complete yet: retry (xapi.md 2.4)
            raise
        except XapiUnreachable:
            return False
        return False  # re-read: the next poll confirms it
    _wait(ctx, rh, "enable", ctx.timeouts.enable, enabled)
    return states.STEP_DONE


STEPS: dict[str, Callable[[Context, RunHost], str]] = {
    states.STEP_CHECK: check, states.STEP_DISABLE: disable, states.STEP_EVACUATE: evacuate, states.STEP_ARM: arm,
    states.STEP_REBOOT: reboot, states.STEP_INSTALLING: wait_down, states.STEP_WAIT_UP: wait_up,
    states.STEP_VERIFY: verify, states.STEP_ENABLE: enable,
}
"""The action of each committed step; it returns the next step."""


def make_safe(ctx: Context, rh: RunHost) -> list[str]:
    """Best effort after a failure or abort before the reboot: disarm and re-enable the host; says what it did."""
    done = []
    for attempt in ctx.store.disarm_attempts(rh.mac, details={"reason": "run stopped"}):
        done.append(f"disarmed attempt {attempt.id}")
    info = find(ctx, rh.uuid)
    if info is not None and info.live and not info.enabled:
        try:
            ctx.driver.enable(info.ref)
            done.append("re-enabled")
        except (Failure, XapiUnreachable) as exc:
            done.append(f"could not re-enable: {exc}")
    return done
