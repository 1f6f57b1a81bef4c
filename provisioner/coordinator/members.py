"""Before a run touches a host: every member of the pool really answers (docs/xapi.md "The pool after its
coordinator restarts").

After the master's xapi restarts, members reconnect on a backoff that reaches 256 s, and the restarted master
shows every host live for 10 minutes whatever its state, so `live` says nothing: only a call forwarded to the
member answers the question. CHECK (before each host) waits until host.get_servertime (a no-op the master
forwards to the host) answers for every live member, saying which are not back and why (a member the master
shows not live is down, not reconnecting: its own CHECK fails it, as before); it gives up after
timeouts.members with a message that says nothing was done to the host. CHECK and DISABLE retry a forwarded call
that meets CANNOT_CONTACT_HOST / HOST_OFFLINE (or no answer) for the same bound instead of failing the host.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from provisioner import states, xapi_members
from provisioner.coordinator import installing
from provisioner.coordinator.context import Context, StepFailed, error_code
from provisioner.store import RunHost, Store
from provisioner.xapi import XapiError, XapiUnreachable

T = TypeVar("T")

NOT_BACK_CODES = frozenset({"CANNOT_CONTACT_HOST", "HOST_OFFLINE"})
"""Errors a forwarded call meets while the member has not reconnected (message_forwarding.ml:129-172)."""
MEMBERS_WAITING = "pool.members_waiting"
"""Event {host, waiting: {member: why}, minutes}: the run waits for these members before touching `host`."""
MEMBERS_BACK = "pool.members_back"
"""Event {host, minutes}: every member answered after the run waited for them."""
MEMBER_SLOW = "pool.member_slow"
"""Event {host, member, seconds}: the master held the call to `member` that long before it answered (it was
reconnecting)."""
CALL_RETRY = "host.call_retry"
"""Event {host, method, error, minutes}: a forwarded call met a not-reconnected member; the run retries it."""


def not_back(exc: BaseException) -> bool:
    """The error of a call forwarded to a member that has not reconnected (or not answered in time)."""
    return isinstance(exc, XapiUnreachable) or error_code(exc) in NOT_BACK_CODES


def _why(exc: BaseException) -> str:
    return error_code(exc) or ("no answer" if isinstance(exc, XapiUnreachable) else str(exc)[:80])


def silent_members(ctx: Context, rh: RunHost) -> dict[str, str]:
    """{member name: why} for each live member whose forwarded no-op does not answer now; {} when all do. The master
    not answering counts as every member unknown (the caller waits the same way). A call the master held until
    the member reconnected (longer than a poll) is an event too: it is why the run did not move."""
    try:
        hosts = ctx.driver.hosts()
    except (XapiError, XapiUnreachable) as exc:
        return {"the pool master": _why(exc)}
    silent = {}
    for h in hosts:
        if h.is_master or not h.live:  # not live: shut down, or unheard 10 min; CHECK fails that host itself
            continue
        start = ctx.clock.now()
        try:
            xapi_members.servertime(ctx.driver, h.ref)
        except (XapiError, XapiUnreachable) as exc:
            silent[h.name] = _why(exc)
        took = ctx.clock.now() - start
        if took > ctx.timeouts.poll and h.name not in silent:  # (one that failed is in `silent` with why)
            ctx.event(MEMBER_SLOW, rh, member=h.name, seconds=round(took))
            ctx.say(f"{rh.name}: the master's call to member {h.name} waited {took / 60:.1f} min: it was "
                    "reconnecting to the master")
    return silent


def wait_all(ctx: Context, rh: RunHost) -> None:
    """Wait until every member answers a forwarded call (at most timeouts.members), with an event and a progress
    line each time the set of silent members changes; StepFailed after the bound, before anything is done."""
    start, shown = ctx.clock.now(), None
    share = getattr(ctx.driver, "shared", None)  # a wave's threads check together (shared_reads.py)
    while True:
        silent = share("members", lambda: silent_members(ctx, rh)) if share else silent_members(ctx, rh)
        minutes = round((ctx.clock.now() - start) / 60, 1)
        if not silent:
            if shown is not None:
                ctx.event(MEMBERS_BACK, rh, minutes=minutes)
                ctx.say(f"{rh.name}: every member answers again after {minutes} min")
            return
        if silent != shown:
            ctx.event(MEMBERS_WAITING, rh, waiting=silent, minutes=minutes)
            listed = ", ".join(f"{name} ({why})" for name, why in sorted(silent.items()))
            ctx.say(f"{rh.name}: waiting for pool members to reconnect to the master before touching it: "
                    f"{listed} [{minutes} min]")
            shown = silent
        if ctx.clock.now() - start >= ctx.timeouts.members:
            listed = ", ".join(f"{name} ({why})" for name, why in sorted(silent.items()))
            raise StepFailed(
                f"nothing done to {rh.name}: pool members still not answering after "
                f"{ctx.timeouts.members / 60:.0f} min: {listed}; members reconnect to a restarted master within a "
                "few minutes (backoff up to 256 s): check that they are running and reach the master "
                "(`xe host-list params=name-label,live`, their xapi and network), then resume the run")
        ctx.clock.sleep(ctx.timeouts.poll)


def retry(ctx: Context, rh: RunHost, method: str, fn: Callable[[], T]) -> T:
    """fn() again while it fails with not_back() (a member that has not reconnected), at most timeouts.members;
    then the last error is raised as it came."""
    start = ctx.clock.now()
    while True:
        try:
            return fn()
        except (XapiError, XapiUnreachable) as exc:
            waited = ctx.clock.now() - start
            if not not_back(exc) or waited >= ctx.timeouts.members:
                raise
            ctx.event(CALL_RETRY, rh, method=method, error=str(exc)[:200], minutes=round(waited / 60, 1))
            ctx.say(f"{rh.name}: {method}: {_why(exc)} (the member has not reconnected to the master yet); "
                    f"retrying [{waited / 60:.1f} min]")
        ctx.clock.sleep(ctx.timeouts.poll)



def waiting(store: Store, run_id: str, rh: RunHost) -> str | None:
    """What the run waits for at this host right now, for `upgrade status`, REST and the dashboard (report.py):
    members reconnecting, a forwarded call being retried, or the host-up timeout after its installer reported;
    None when none of these happened since its current step began (or it is not in a step)."""
    if rh.step in states.HOST_TERMINAL or rh.step == states.STEP_PENDING:
        return None
    began = store.events(run_id=run_id, mac=rh.mac, kind=f"step.{rh.step}")
    since = began[-1]["id"] if began else 0
    found = [e for kind in (MEMBERS_WAITING, MEMBERS_BACK, CALL_RETRY, installing.HOST_UP_WAIT)
             for e in store.events(run_id=run_id, mac=rh.mac, kind=kind, since_id=since)]
    if not found:
        return None
    last = max(found, key=lambda e: e["id"])
    d = last["details"]
    if last["kind"] == MEMBERS_WAITING:
        listed = ", ".join(f"{name} ({why})" for name, why in sorted(d.get("waiting", {}).items()))
        return f"waiting for members to reconnect to the master: {listed}"
    if last["kind"] == CALL_RETRY:
        return f"retrying {d.get('method')}: a member has not reconnected to the master ({d.get('error')})"
    if last["kind"] == installing.HOST_UP_WAIT:
        return f"installer reported {d.get('outcome')}: back within {d.get('minutes')} min (host-up timeout)"
    return None
