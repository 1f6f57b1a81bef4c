"""The rolling-upgrade loop of one pool: run states, host steps, persistence (commit then act), resume and abort.

PRECHECK -> MASTER -> MEMBERS -> FINALIZE -> DONE | DONE_WITH_FAILURES, or BLOCKED / ABORTED. Every host step is
committed to the store before its XAPI call; a new Runner on the same store continues where the last one
stopped, and each step re-reads the world first (steps.py), so nothing destructive is repeated.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable

from provisioner import states
from provisioner.config import Config
from provisioner.coordinator import steps
from provisioner.coordinator.plan import make_plan
from provisioner.store import ConflictError, NotFoundError, Run, RunHost, Store
from provisioner.xapi import Failure, PoolDriver, XapiUnreachable

MASTER_REMEDY = ("restore the master to a working version (vendor rule: never go on after a master failure), "
                 "then start a new run")
_STEP_ERRORS = (steps.StepFailed, Failure, XapiUnreachable, NotFoundError, ConflictError, ValueError)


def start_run(store: Store, pool: str, media: str, driver: PoolDriver, *, stop_on_failure: bool = False) -> Run:
    """Create the run (PRECHECK) with the hosts to upgrade in order; ConflictError if the pool has an active run.

    Run it with Runner(...).run(); the prechecks themselves run there, so a crash before they finish is resumable.
    """
    plan = make_plan(store, pool, media, driver)
    run_id = f"{pool}-{secrets.token_hex(4)}"
    return store.create_run(run_id, pool, media, stop_on_failure=stop_on_failure,
                            hosts=[h.as_dict() for h in plan.to_upgrade])


def active_run(store: Store, pool: str) -> Run:
    runs = store.list_runs(pool, active_only=True)
    if not runs:
        raise NotFoundError(f"pool {pool} has no run in progress")
    return runs[0]


def resume(store: Store, config: Config, pool: str, driver: PoolDriver, **kw: Any) -> "Runner":
    """A Runner for the pool's run in progress (after a crash or restart); call .run() on it."""
    return Runner(store, config, active_run(store, pool).id, driver, **kw)


def request_abort(store: Store, pool: str) -> Run:
    """Ask the pool's run to stop before its next destructive step (a runner picks it up, now or on resume)."""
    return store.request_abort(active_run(store, pool).id)


def _remedy(rh: RunHost) -> str | None:
    if rh.step != states.STEP_FAILED:
        return None
    if rh.role == "master":
        return MASTER_REMEDY
    return (f"forget the host (xe host-forget uuid={rh.uuid}), reinstall it fresh "
            f"(`provisioner reinstall {rh.mac}`) and join it to the pool again (xe pool-join)")


def report(store: Store, run_id: str) -> dict[str, Any]:
    """The run, each host's step and reason, and the remedy for each failed host."""
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    hosts = [{**rh.as_dict(), "remedy": _remedy(rh)} for rh in store.run_hosts(run_id)]
    return {**run.as_dict(), "hosts": hosts}


def status(store: Store, pool: str | None = None) -> list[dict[str, Any]]:
    """Reports of the runs (newest first), of one pool or of all."""
    return [report(store, run.id) for run in store.list_runs(pool)]


class Runner:
    """Drives one run to a final state; safe to construct again on the same store after a crash (resume)."""

    def __init__(self, store: Store, config: Config, run_id: str, driver: PoolDriver, *, clock: Any = None,
                 timeouts: steps.Timeouts | None = None, say: Callable[[str], None] = lambda line: None,
                 on_commit: Callable[[RunHost], None] | None = None):
        run = store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        media = store.get_media(run.media)
        if media is None:
            raise NotFoundError(f"no media named {run.media!r}")
        self.store, self.run_id, self.say = store, run_id, say
        self.on_commit = on_commit or (lambda rh: None)
        self.ctx = steps.Context(store, config, driver, media, run_id, clock or steps.RealClock(),
                                 timeouts or steps.Timeouts(), say)

    @property
    def run_record(self) -> Run:
        return self.store.get_run(self.run_id)

    def _set(self, new: str, reason: str | None = None) -> Run:
        self.say(f"run {self.run_id}: {new}" + (f" ({reason})" if reason else ""))
        return self.store.set_run_state(self.run_id, new, reason=reason)

    def _commit(self, rh: RunHost, step: str, **updates: Any) -> RunHost:
        rh = self.store.set_host_step(self.run_id, rh.mac, step, **updates)
        self.on_commit(rh)  # tests stop the runner here to simulate a crash at a step boundary
        return rh

    def run(self) -> Run:
        run = self.run_record
        hosts = self.store.run_hosts(self.run_id)
        master = [h for h in hosts if h.role == "master"]
        members = [h for h in hosts if h.role != "master"]
        if run.state == states.RUN_PRECHECK:
            if run.abort_requested:
                return self._set(states.RUN_ABORTED, "abort requested before any change")
            plan = make_plan(self.store, run.pool, run.media, self.ctx.driver)
            if not plan.ok:
                return self._set(states.RUN_BLOCKED, "; ".join(plan.problems))
            run = self._set(states.RUN_MASTER if master else states.RUN_MEMBERS)
        if run.state == states.RUN_MASTER:
            rh = self._host(master[0])
            if rh is None:
                return self._set(states.RUN_ABORTED, "abort requested; no member touched")
            if rh.step == states.STEP_FAILED:
                return self._set(states.RUN_ABORTED, f"master {rh.name} failed: {rh.reason}; {MASTER_REMEDY}")
            run = self._set(states.RUN_MEMBERS)
        if run.state == states.RUN_MEMBERS:
            for member in members:
                rh = self._host(member)
                if rh is None:
                    return self._set(states.RUN_ABORTED, "abort requested")
                if rh.step == states.STEP_FAILED and run.stop_on_failure:
                    return self._set(states.RUN_ABORTED, f"member {rh.name} failed and stop-on-failure is set")
            run = self._set(states.RUN_FINALIZE)
        if run.state == states.RUN_FINALIZE:
            failed = [h.name for h in self.store.run_hosts(self.run_id) if h.step == states.STEP_FAILED]
            if failed:
                return self._set(states.RUN_DONE_WITH_FAILURES, f"failed: {', '.join(failed)}")
            return self._set(states.RUN_DONE)
        return run

    def _host(self, rh: RunHost) -> RunHost | None:
        """Walk one host to DONE or FAILED; None when an abort stopped it before a destructive step."""
        rh = self.store.get_run_host(self.run_id, rh.mac)
        if rh.step == states.STEP_PENDING:
            if self.run_record.abort_requested:
                return None
            rh = self._commit(rh, states.STEP_CHECK)
        while rh.step not in states.HOST_TERMINAL:
            try:
                nxt = steps.STEPS[rh.step](self.ctx, rh)
            except _STEP_ERRORS as exc:
                reason = f"{rh.step}: {exc}"
                safe = steps.make_safe(self.ctx, rh) if rh.step in states.DESTRUCTIVE_STEPS else []
                self.say(f"{rh.name}: FAILED at {reason}")
                return self._commit(rh, states.STEP_FAILED, reason=reason + (f" ({', '.join(safe)})" if safe else ""))
            if nxt in states.DESTRUCTIVE_STEPS and self.run_record.abort_requested:
                safe = steps.make_safe(self.ctx, rh)
                self.store.set_host_step(self.run_id, rh.mac, None,
                                         reason=f"aborted before {nxt}" + (f" ({', '.join(safe)})" if safe else ""))
                return None
            rh = self._commit(rh, nxt)
        return rh
