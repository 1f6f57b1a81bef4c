"""The rolling-upgrade loop of one pool: run states, host steps, persistence (commit then act), resume and abort.

The run walks the RUN states of provisioner.states (`provisioner states` prints them), each host the host steps
through steps.TABLE; report.py reads back what a run did. Every host step is committed to the store before its
XAPI call, and every change PREPARE or a step makes to the pool is journaled before it is made (journal.py); a new
Runner on the same store continues where the last one stopped, and each step re-reads the world first (steps.py),
so nothing destructive is repeated.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any, Callable

from provisioner import states
from provisioner.config import Config
from provisioner.coordinator import finalize, installing, journal, remedies, report, steps, wiring
from provisioner.coordinator import wave_facts, wave_runner, waves
from provisioner.coordinator.plan import Plan, make_plan
from provisioner.coordinator.prechecks_vms import PINNED_VM
from provisioner.model import normalize_mac
from provisioner.power.confirm import ConfirmTimes
from provisioner.store import ConflictError, NotFoundError, Run, RunHost, Store
from provisioner.xapi import PoolDriver, XapiError, XapiUnreachable

_STEP_ERRORS = (steps.StepFailed, XapiError, XapiUnreachable, NotFoundError, ConflictError, ValueError)


def start_run(store: Store, pool: str, media: str, driver: PoolDriver, **kw: Any) -> Run:
    """Create the run (PRECHECK) with the hosts to upgrade in order (create_run, whose keywords it takes)."""
    return create_run(store, pool, media, driver, **kw)[0]


def create_run(store: Store, pool: str, media: str, driver: PoolDriver, *, stop_on_failure: bool = False,
               disable_ha_wlb: bool = False, migrate_back: bool = False, power_cycle: bool = False,
               consent: tuple[str, ...] = (), stop_pinned_vms: bool = False, parallel: str | int | None = None,
               max_failures: str | int | None = None, group_tag_prefix: str | None = None,
               host_up_timeout: float | None = None, updates: str | None = None,
               config: Config | None = None) -> tuple[Run, Plan]:
    """Create the run (PRECHECK) with the hosts to upgrade in order; ConflictError if the pool has an active run.
    Also returns the plan it was made from: with `config` given, every precheck the Runner's PRECHECK runs, so a
    Runner started on it right away takes it (Runner `precheck`) instead of asking XAPI the same again.

    disable_ha_wlb: HA / WLB that are on are turned off by PREPARE and back on by FINALIZE (default: the precheck
    refuses). migrate_back: RESTORE migrates each host's VMs back after its upgrade (XenCenter's RPU does not).
    power_cycle: members are shut down and powered on through the pool (host.power_on) instead of rebooted.
    consent: codes of consent-level prechecks the operator agreed to (docs/prechecks.md); kept for PRECHECK.
    stop_pinned_vms: the same as consent PINNED_VM (`--stop-pinned-vms`, REST stop_pinned_vms; pinned.py).
    host_up_timeout: seconds a host has to come back once its installer reported (None: the configuration's
    host_up_timeout_s); kept with the run, so a resume keeps it (installing.py).
    updates: the update repository (`--updates NAME`) CONVERGE brings each upgraded host to, and FINALIZE the
    pool (converge.py); kept with the run. None: no CONVERGE step.
    parallel: "auto" or N: members in waves (docs/waves.md; wave_facts.py plans them now and journals them);
    max_failures: K or "P%": no new wave once that many members failed (given alone: waves of 1);
    group_tag_prefix: host tags with this prefix are groups (rack, power feed) never two in one wave.
    Run it with Runner(...).run(), which decides PRECHECK on this plan when handed it (Runner `precheck`) or runs
    the prechecks again (a resume), so a crash before PRECHECK ends is resumable.
    """
    parallel = waves.parse_parallel(parallel) or ("1" if max_failures not in (None, "") else None)
    consent = tuple(sorted({c.upper() for c in consent} | ({PINNED_VM} if stop_pinned_vms else set())))
    if host_up_timeout is not None and not 60 <= float(host_up_timeout) <= 86_400:
        raise ValueError("host_up_timeout must be between 60 and 86400 seconds")
    plan = make_plan(store, pool, media, driver, disable_ha_wlb=disable_ha_wlb, migrate_back=migrate_back,
                     power_cycle=power_cycle, consent=consent, updates=updates, config=config)
    if updates and plan.updates is None:
        raise NotFoundError(f"no update repository named {updates!r}: `provisioner updates list` shows those known")
    wave_plan = limit = None
    if parallel:
        limit = waves.parse_max_failures(max_failures, sum(1 for h in plan.to_upgrade if h.role != "master"))
        wave_plan = wave_facts.plan_for(driver, plan.to_upgrade, parallel, group_prefix=group_tag_prefix or None,
                                        disable_ha_wlb=disable_ha_wlb, facts=plan.facts)
    run_id = f"{pool}-{secrets.token_hex(4)}"
    run = store.create_run(run_id, pool, media, stop_on_failure=stop_on_failure,
                           hosts=[h.as_dict() for h in plan.to_upgrade])
    # Before the Runner can act; without this entry (a crash right here) the run keeps the safe defaults.
    journal.write(store, run_id, journal.OPTIONS, disable_ha_wlb=disable_ha_wlb, migrate_back=migrate_back,
                  power_cycle=power_cycle, consent=list(consent),
                  host_up_timeout=float(host_up_timeout) if host_up_timeout is not None else None,
                  updates=updates or None)
    if wave_plan is not None:
        wave_facts.record(store, run_id, wave_plan, {h.name: h.mac for h in plan.to_upgrade}, limit)
    return run, plan


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


MARKABLE_STEPS = (states.STEP_POWER_ON, states.STEP_WAIT_DOWN, states.STEP_WAIT_UP)
"""The waits a host can be marked failed in: the ones where its installer may be running (installing.py)."""


def request_mark_failed(store: Store, pool: str, host: str) -> RunHost:
    """Journal the operator's decision to fail HOST (name or MAC) of the pool's run while the run waits on it
    (installer running past every timer, or a host that does not come back); the waiting step fails it at its next
    look, "marked failed by the operator after N min", and its remedy is classified from evidence."""
    run = active_run(store, pool)
    try:
        mac = normalize_mac(host)
    except ValueError:
        mac = None
    found = next((rh for rh in store.run_hosts(run.id) if rh.name == host or rh.mac == mac), None)
    if found is None:
        raise NotFoundError(f"run {run.id} of pool {pool} has no host named {host!r}")
    if found.step not in MARKABLE_STEPS:
        raise ConflictError(f"{found.name} is at step {found.step}: only a host the run is waiting on ("
                            f"{', '.join(MARKABLE_STEPS)}) can be marked failed")
    journal.write(store, run.id, journal.MARKED_FAILED, mac=found.mac, host=found.name, step=found.step)
    return found


class Runner:
    """Drives one run to a final state; safe to construct again on the same store after a crash (resume)."""

    def __init__(self, store: Store, config: Config, run_id: str, driver: PoolDriver, *, clock: Any = None,
                 timeouts: steps.Timeouts | None = None, say: Callable[[str], None] = lambda line: None,
                 on_commit: Callable[[RunHost], None] | None = None, bmc_times: ConfirmTimes | None = None,
                 precheck: Plan | None = None):
        """precheck: the plan create_run made with the configuration a moment ago for this run, in this process
        (FlowService.start): PRECHECK decides on it instead of running every precheck again. A resume (a new
        Runner after a crash, a restart or a takeover) has none, so its PRECHECK reads the pool afresh."""
        run = store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        media = store.get_media(run.media)
        if media is None:
            raise NotFoundError(f"no media named {run.media!r}")
        self.store, self.run_id, self.say = store, run_id, say
        self._precheck = precheck
        self.stopped_why: str | None = None  # why _host() stopped the run, when it was not a plain abort
        self.on_commit = on_commit or (lambda rh: None)
        self.options = journal.options(store, run_id)
        timeouts = timeouts or wiring.run_timeouts(config)
        host_up = journal.host_up_timeout(store, run_id)
        if host_up:  # the run's own, kept with it (start_run)
            timeouts = dataclasses.replace(timeouts, host_up=host_up)
        self.ctx = steps.Context(store, config, driver, media, run_id, clock or steps.RealClock(), timeouts, say,
                                 migrate_back=self.options["migrate_back"],
                                 power_cycle=self.options["power_cycle"],
                                 bmc_times=bmc_times or wiring.confirm_times(config))

    @property
    def run_record(self) -> Run:
        return self.store.get_run(self.run_id)

    def _set(self, new: str, reason: str | None = None) -> Run:
        if new == states.RUN_ABORTED and self.run_record.state in (states.RUN_MASTER, states.RUN_MEMBERS) and \
                journal.read(self.store, self.run_id, journal.PREPARE_INTENT):
            reason = f"{reason}; what PREPARE turned off stays off (listed in the report)"
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
            plan, self._precheck = self._precheck, None  # taken once: a second PRECHECK reads the pool again
            if plan is None:
                plan = make_plan(self.store, run.pool, run.media, self.ctx.driver, config=self.ctx.config,
                                 **self.options)
            if not plan.ok:
                return self._set(states.RUN_BLOCKED, "; ".join(plan.problems))
            run = self._set(states.RUN_PREPARE)
        if run.state == states.RUN_PREPARE:
            if run.abort_requested:
                undone = finalize.undo(self.ctx)
                return self._set(states.RUN_ABORTED, "abort requested; no host touched"
                                 + (f"; {'; '.join(undone)}" if undone else ""))
            try:
                for line in finalize.prepare(self.ctx, [h.uuid for h in hosts],
                                             disable_ha_wlb=self.options["disable_ha_wlb"]):
                    self.say(line)
            except steps.StepFailed as exc:
                undone = finalize.undo(self.ctx)
                return self._set(states.RUN_BLOCKED, f"{exc}; what PREPARE changed is undone"
                                 + (f" except: {'; '.join(undone)}" if undone else ""))
            run = self._set(states.RUN_MASTER if master else states.RUN_MEMBERS)
        if run.state == states.RUN_MASTER:
            rh = self._host(master[0])
            if rh is None:
                return self._set(states.RUN_ABORTED, self.stopped_why or "abort requested; no member touched")
            if rh.step == states.STEP_FAILED:
                remedy = report.host_remedy(self.store, self.run_record, rh)
                return self._set(states.RUN_ABORTED, f"master {rh.name} failed ({remedy['remedy_class']}): "
                                 f"{rh.reason}; {remedy['remedy']}")
            run = self._set(states.RUN_MEMBERS)
        recorded = wave_facts.recorded(self.store, self.run_id)
        if run.state == states.RUN_MEMBERS and recorded:  # --parallel: wave by wave (wave_runner.py)
            stopped = wave_runner.run_waves(self, members, recorded)
            if stopped is not None:
                return stopped
            run = self._set(states.RUN_FINALIZE)
        if run.state == states.RUN_MEMBERS:
            for member in members:
                rh = self._host(member)
                if rh is None:
                    return self._set(states.RUN_ABORTED, self.stopped_why or "abort requested")
                remedy = report.host_remedy(self.store, run, rh)
                if remedy["host_down"]:  # never two hosts down: no other host starts while this one is down
                    return self._set(states.RUN_ABORTED, f"member {rh.name} failed and is down or in an unknown "
                                     f"state ({remedy['remedy_class']}), so no other host is started: "
                                     f"{remedy['remedy']}")
                if rh.step == states.STEP_FAILED and run.stop_on_failure:
                    return self._set(states.RUN_ABORTED, f"member {rh.name} failed and stop-on-failure is set")
            run = self._set(states.RUN_FINALIZE)
        if run.state == states.RUN_FINALIZE:
            failed = [h.name for h in self.store.run_hosts(self.run_id) if h.step == states.STEP_FAILED]
            problems = finalize.finalize(self.ctx, failed_hosts=failed)
            if failed or problems:
                why = ([f"failed: {', '.join(failed)}"] if failed else []) + problems
                return self._set(states.RUN_DONE_WITH_FAILURES, "; ".join(why))
            return self._set(states.RUN_DONE)
        return run

    def _journal_remedy(self, rh: RunHost, error: BaseException | None = None,
                        ctx: steps.Context | None = None) -> remedies.Remedy:
        """Classify the host that just failed from evidence (remedies.assess, with XAPI) and journal it."""
        remedy = remedies.assess(ctx or self.ctx, rh, error)
        journal.write(self.store, self.run_id, journal.REMEDY, mac=rh.mac, **remedy.as_dict())
        self.say(f"{rh.name}: {remedy.cls}: {remedy.text}")
        return remedy

    def _host(self, rh: RunHost, ctx: steps.Context | None = None, until: str | None = None) -> RunHost | None:
        """Walk one host to DONE or FAILED; None when an abort stopped it before a destructive step.
        ctx: a wave thread's own (its driver, the wave's targets); until: stop (returning the host) once its
        committed step is that one or a later one of steps.TABLE (wave_runner.py walks CHECK and DISABLE first)."""
        ctx = ctx or self.ctx
        order = [s.name for s in steps.TABLE]
        rh = self.store.get_run_host(self.run_id, rh.mac)
        if rh.step == states.STEP_PENDING:
            if self.run_record.abort_requested:
                return None
            rh = self._commit(rh, states.STEP_CHECK)
        while rh.step not in states.HOST_TERMINAL:
            if until is not None and rh.step in order and order.index(rh.step) >= order.index(until):
                return rh
            try:
                nxt = steps.STEPS[rh.step](ctx, rh)
            except installing.AbortedWhileInstalling as exc:  # left as it is: no disarm, nothing re-enabled
                self.stopped_why = str(exc)
                self.store.set_host_step(self.run_id, rh.mac, None, reason=f"{rh.step}: state unknown: {exc}")
                return None
            except _STEP_ERRORS as exc:
                reason = f"{rh.step}: {exc}"
                safe = steps.make_safe(ctx, rh)
                self.say(f"{rh.name}: FAILED at {reason}")
                rh = self._commit(rh, states.STEP_FAILED, reason=reason + (f" ({', '.join(safe)})" if safe else ""))
                self._journal_remedy(rh, exc, ctx)
                return rh
            if nxt in steps.DESTRUCTIVE_STEPS and self.run_record.abort_requested:
                safe = steps.make_safe(ctx, rh)
                self.store.set_host_step(self.run_id, rh.mac, None,
                                         reason=f"aborted before {nxt}" + (f" ({', '.join(safe)})" if safe else ""))
                return None
            rh = self._commit(rh, nxt)
        return rh
