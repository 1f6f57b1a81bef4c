"""What every step of a run shares: the context, the clock, the timeouts, and the read / call / wait helpers.

Steps (steps.py), the VM actions (vms.py) and PREPARE / FINALIZE (finalize.py) all use these, so that every XAPI
call lands in the events table with its outcome and every wait has a timeout and shows its progress.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from provisioner.config import Config
from provisioner.model import Media
from provisioner.power.confirm import ConfirmTimes
from provisioner.store import RunHost, Store
from provisioner.xapi import HostInfo, PoolDriver, XapiError, XapiUnreachable

log = logging.getLogger(__name__)


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
    storage: float = 120.0    # PBDs attach by themselves during startup; XenCenter waits 120 s, then plugs
    pbd_plug: float = 300.0   # one Async.PBD.plug (an iSCSI / FC attach takes minutes; xapi_checks.PBD_PLUG_TIMEOUT)
    finalize: float = 600.0   # rolling_upgrade_in_progress goes within one DB-GC pass (30 s) once versions match
    off: float = 60.0         # --power-cycle: XAPI says "not live" as a shutdown starts; the machine is off later
    boot: float = 600.0       # --power-cycle: host.power_on -> its first boot-config fetch (else power on again)
    members: float = 600.0    # before each host, every member answers a forwarded call; CANNOT_CONTACT_HOST /
                              # HOST_OFFLINE at CHECK/DISABLE retried this long (members.py: backoff up to 256 s)
    host_up: float = 1200.0   # the installer reported -> the host back (XO waits 20 min; `--host-up-timeout`)
    installing_note: float = 1200.0  # a running installer is never timed out: "still installing" this often
                                     # (XenCenter prompts after 20 min; installing.py, docs/remedies.md)


@dataclass(frozen=True)
class ReinstallTimeouts:
    """Seconds on a lab reinstall's clock: the operator powers the host on, a fresh install takes 20-60 min."""

    install: float = 4 * 3600.0  # armed -> installer reported
    xapi: float = 1800.0         # installed -> the new host's XAPI accepts a login
    joined: float = 1800.0       # pool.join sent -> the new host live and enabled in the pool
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
    migrate_back: bool = False  # RESTORE moves the VMs EVACUATE migrated away back to the upgraded host
    power_cycle: bool = False  # members: host.shutdown + host.power_on instead of host.reboot
    bmc_times: ConfirmTimes | None = None  # the BMC confirm loop on `clock` (None: Config bmc_*_seconds)
    wave: object = None  # a member of a --parallel wave: its evacuation.WaveTargets (EVACUATE migrates per VM)

    def event(self, kind: str, rh: RunHost | None, **details) -> None:
        """An events row, and the same as a log line naming the host's MAC, attempt and run (logs.py)."""
        if rh is None:
            self.store.add_event(kind, run_id=self.run_id, details=details)
        else:
            self.store.add_event(kind, mac=rh.mac, run_id=self.run_id, details={"host": rh.name, **details})
        failed = details.get("ok") is False or "fail" in kind
        log.log(logging.WARNING if failed else logging.INFO, "%s %s", kind,
                " ".join(f"{k}={v}" for k, v in details.items()),
                extra={"mac": rh.mac if rh else None, "attempt": rh.attempt_id if rh else None, "run": self.run_id})


def find(ctx: Context, uuid: str) -> HostInfo | None:
    """The host's XAPI record, or None while the master does not answer (it may be the one rebooting)."""
    try:
        return next((h for h in ctx.driver.hosts() if h.uuid == uuid), None)
    except (XapiUnreachable, XapiError):
        # Refused connections, HOST_STILL_BOOTING and SESSION_INVALID are all normal while the master restarts.
        return None


def live_info(ctx: Context, rh: RunHost) -> HostInfo:
    info = find(ctx, rh.uuid)
    if info is None:
        raise StepFailed("the pool master does not answer, or XAPI no longer knows the host")
    return info


def xapi_call(ctx: Context, rh: RunHost | None, method: str, fn: Callable, *args, **details):
    """One XAPI call that changes something, with its outcome (and `details`, e.g. the VM) in the event log."""
    try:
        result = fn(*args)
    except (XapiError, XapiUnreachable) as exc:
        ctx.event("xapi.call", rh, method=method, ok=False, error=str(exc)[:300], **details)
        raise
    ctx.event("xapi.call", rh, method=method, ok=True, **details)
    return result


def error_code(exc: BaseException) -> str:
    """The XAPI error code of an XapiError ('' for anything else)."""
    details = getattr(exc, "details", None)
    return str(details[0]) if details else ""


def poll_until(clock, interval: float, timeout: float, probe: Callable[[], tuple[bool, str]], *, who: str,
               what: str, say: Callable[[str], None], fail: type[Exception] = StepFailed) -> None:
    """Call probe() -> (done, what it saw) every `interval` s of `clock` until done; `fail` after `timeout`.
    Says what it sees each time that changes, with the minutes waited so far."""
    start, shown = clock.now(), None
    while True:
        done, seen = probe()
        if done:
            return
        if seen != shown:
            say(f"{who}: {what}: {seen} [{(clock.now() - start) / 60:.1f} min]")
            shown = seen
        if clock.now() - start > timeout:
            raise fail(f"{what}: not done after {timeout / 60:.0f} min (last seen: {seen})")
        clock.sleep(interval)


def wait_for(ctx: Context, rh: RunHost, what: str, timeout: float,
             done: Callable[[HostInfo | None], bool]) -> HostInfo | None:
    """Poll the host until done(info); StepFailed after `timeout`; progress through ctx.say when it changes."""
    probe, last = host_probe(ctx, rh, done)
    poll_until(ctx.clock, ctx.timeouts.poll, timeout, probe, who=rh.name, what=what, say=ctx.say)
    return last[0]


def host_probe(ctx: Context, rh: RunHost, done: Callable[[HostInfo | None], bool]
               ) -> tuple[Callable[[], tuple[bool, str]], list[HostInfo | None]]:
    """A poll_until probe over the host's XAPI record, and the list whose [0] holds the last record it read."""
    last: list[HostInfo | None] = [None]

    def probe() -> tuple[bool, str]:
        info = last[0] = find(ctx, rh.uuid)
        return done(info), ("master not answering" if info is None
                            else f"live={info.live} enabled={info.enabled} version={info.product_version}")

    return probe, last
