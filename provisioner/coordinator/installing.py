"""Waiting on a host that reboots into, runs, or comes back from its installer: a timer never fails a running one.

A host whose installer started (its attempt STARTED: start script seen, no complete report) may be writing its
new root: failing it by a timer and moving on could leave two hosts down (docs/remedies.md, "still installing").
While it runs, the wait raises a `host.still_installing` event and a progress line every
timeouts.installing_note (XenCenter asks the operator after 20 minutes) and only the operator ends it:
`provisioner upgrade abort POOL` (past every timer: the run stops and the host is left in an unknown state) or
`provisioner upgrade mark-failed POOL HOST` (the host fails, "marked failed by the operator after N min").
"""

from __future__ import annotations

from typing import Callable

from provisioner import states
from provisioner.coordinator import hostplugin, journal
from provisioner.coordinator.context import Context, StepFailed
from provisioner.store import RunHost

STILL_INSTALLING = "host.still_installing"
"""Event {host, step, minutes, attempt, seen}: the host's installer has been running that long (host-plugin: may be;
`seen` says what was observed); the run still waits."""
LEFT_UNKNOWN = "host.left_unknown"
"""Event {host, step, minutes, why}: the run was aborted while the host's installer ran; its state is unknown."""
HOST_UP_WAIT = "host.up_wait"
"""Event {host, step, attempt, outcome, minutes}: its installer reported; the host has timeouts.host_up to be back."""
MARKED_FAILED_REASON = "marked failed by the operator"
"""How the reason of a host the operator marked failed starts (after its step); remedies.py reads it."""


QUIET_POLLS = 5
"""At WAIT_UP, while the host's own installer runs (its attempt STARTED: our start script was seen), the host cannot
be back in XAPI: the wait reads XAPI only every QUIET_POLLS + 1 polls (once a minute at the default 10 s poll) instead
of every poll, to notice a host back without its report (lost on the network); its report is read from the store at
every poll, and from then on XAPI is read at every poll again. Every read is calls to the pool master, for every
host of a wave (docs/waves.md "Running a wave")."""


class MarkedFailed(StepFailed):
    """The operator marked the host failed while the run waited on it (journal.MARKED_FAILED)."""


class AbortedWhileInstalling(RuntimeError):
    """The run was aborted while this host's installer ran past every timer: the host is in an unknown state."""


def installer_running(ctx: Context, rh: RunHost) -> bool:
    """Its attempt is STARTED: the start script was seen and no complete report came (yet)."""
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id else None
    if attempt is None and rh.step == states.STEP_WAIT_UP and hostplugin.prepared(ctx, rh):
        return True  # host-plugin: down after main + reboot, its installer may be running unseen (hostplugin.py)
    return attempt is not None and attempt.state == states.STARTED


def installer_reported(ctx: Context, rh: RunHost) -> str:
    """At WAIT_UP, its attempt's reported outcome (succeeded / failed); '' before a report (or elsewhere)."""
    attempt = ctx.store.get_attempt(rh.attempt_id) if rh.attempt_id and rh.step == states.STEP_WAIT_UP else None
    return attempt.state if attempt is not None and attempt.state in (states.SUCCEEDED, states.FAILED) else ""


def marked_failed(ctx: Context, rh: RunHost) -> bool:
    return journal.last(ctx.store, ctx.run_id, journal.MARKED_FAILED, mac=rh.mac) is not None


def wait(ctx: Context, rh: RunHost, what: str, timeout: float, probe: Callable[[], tuple[bool, str]]) -> None:
    """Call probe() -> (done, what it saw) every timeouts.poll until done. StepFailed after `timeout`, but only
    while the host's installer is not running; a running installer keeps the wait going (and gives the host
    timeouts.down more to reboot once it reports). Once its installer has reported, the host has timeouts.host_up
    (the host-up timeout) to be back. The operator's mark-failed ends the wait at any time. While the installer runs,
    probe() is called only every QUIET_POLLS + 1 polls at WAIT_UP."""
    start, shown, notes, reported = ctx.clock.now(), None, 0, None
    deadline = start + timeout
    running, quiet, seen = False, 0, None
    while True:
        if running and rh.attempt_id is not None and rh.step == states.STEP_WAIT_UP and quiet < QUIET_POLLS:
            quiet, done = quiet + 1, False
        else:
            quiet = 0
            done, seen = probe()
        if rh.attempt_id is None:  # host-plugin: its media downloads are what can be seen of it (hostplugin.py)
            hostplugin.say_downloads(ctx, rh)
        if done:
            return
        now = ctx.clock.now()
        minutes = (now - start) / 60
        if marked_failed(ctx, rh):
            raise MarkedFailed(f"{MARKED_FAILED_REASON} after {minutes:.0f} min ({what}: {seen})")
        if seen != shown:
            ctx.say(f"{rh.name}: {what}: {seen} [{minutes:.1f} min]")
            shown = seen
        running = installer_running(ctx, rh)
        if running:
            deadline = max(deadline, now + ctx.timeouts.down)
            if now - start >= (notes + 1) * ctx.timeouts.installing_note:
                notes += 1
                _note(ctx, rh, minutes)
            if now - start > timeout and ctx.store.get_run(ctx.run_id).abort_requested:
                ctx.event(LEFT_UNKNOWN, rh, step=rh.step, minutes=round(minutes), why="abort requested")
                raise AbortedWhileInstalling(
                    f"the run was aborted while {rh.name}'s installer was still running after {minutes:.0f} min: "
                    "its state is unknown (watch its console: it may still finish, or be broken)")
        else:
            outcome = installer_reported(ctx, rh)
            if outcome and reported is None:
                reported, deadline = now, now + ctx.timeouts.host_up
                ctx.event(HOST_UP_WAIT, rh, step=rh.step, attempt=rh.attempt_id, outcome=outcome,
                          minutes=round(ctx.timeouts.host_up / 60))
                ctx.say(f"{rh.name}: its installer reported {outcome}: waiting up to "
                        f"{ctx.timeouts.host_up / 60:.0f} min for it to come back (host-up timeout)")
            if now > deadline:
                late = (f"; not back {ctx.timeouts.host_up / 60:.0f} min after its installer reported {outcome} "
                        "(host-up timeout: `upgrade start --host-up-timeout`)" if reported is not None else "")
                raise StepFailed(f"{what}: not done after {(now - start) / 60:.0f} min{late} (last seen: {seen})")
        ctx.clock.sleep(ctx.timeouts.poll)


def _note(ctx: Context, rh: RunHost, minutes: float) -> None:
    """The periodic "still installing" event and progress line, with what the operator can do."""
    plugin = rh.attempt_id is None  # host-plugin: no attempt, so no start script seen; say what was (hostplugin.py)
    seen = hostplugin.observed(ctx, rh) if plugin else "installer started, no report yet"
    ctx.event(STILL_INSTALLING, rh, step=rh.step, minutes=round(minutes), attempt=rh.attempt_id, seen=seen)
    pool = ctx.store.get_run(ctx.run_id).pool
    ctx.say(f"{rh.name}: {'not back' if plugin else 'still installing'} after {minutes:.0f} min ({seen}); the run "
            f"waits: look at its console, then `provisioner upgrade abort {pool}` or `provisioner upgrade "
            f"mark-failed {pool} {rh.name}`")
