"""The MEMBERS state of a run with `--parallel N|auto`: the journaled waves one after the other (docs/waves.md).

Each wave: every host walks CHECK and DISABLE (CHECK waits for every member to answer the master, so no host of the
wave may be rebooting yet) and waits for the others there, then walks its remaining steps; each host on a thread of
its own with its own XAPI session (driver.fork()), its VMs moved by the coordinated evacuation (evacuation.py). Every step is still
committed before it acts, and the Runner's abort check runs before every destructive step of every host. After a
crash each host of the wave resumes at its own committed step. Before a new wave starts: a member that failed and
is down or in an unknown state (remedy host_down) stops the run, as does stop-on-failure, and `--max-failures K`
once K members have failed; the wave in flight always finishes.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from provisioner import states
from provisioner.coordinator import report
from provisioner.coordinator.evacuation import WaveTargets
from provisioner.coordinator.shared_reads import Sessions, SharedReads
from provisioner.store import Run, RunHost

Runner = Any
"""runner.Runner (not imported: it imports this module): its store, run_id, ctx, say, _set and _host are used."""

WAVE_START, WAVE_DONE = "wave.start", "wave.done"
"""Events {wave, hosts}: a wave's hosts start (or resume); {wave, done, failed}: every host of it is DONE/FAILED."""


def _failed_members(runner: Runner) -> list[RunHost]:
    return [h for h in runner.store.run_hosts(runner.run_id) if h.role != "master" and h.step == states.STEP_FAILED]


def _stop_reason(runner: Runner, run: Run, hosts: list[RunHost], max_failures: int | None) -> str | None:
    """Why no new wave may start after `hosts` finished, or None."""
    for rh in hosts:
        remedy = report.host_remedy(runner.store, run, rh)
        if remedy["host_down"]:
            return (f"member {rh.name} failed and is down or in an unknown state ({remedy['remedy_class']}), so no "
                    f"new wave is started: {remedy['remedy']}")
        if rh.step == states.STEP_FAILED and run.stop_on_failure:
            return f"member {rh.name} failed and stop-on-failure is set"
    failed = _failed_members(runner)
    if max_failures is not None and len(failed) >= max_failures:
        return (f"{len(failed)} member(s) failed ({', '.join(h.name for h in failed)}), --max-failures is "
                f"{max_failures}: no new wave is started")
    return None


def _real_seconds(clock: Any, seconds: float) -> float:
    """Seconds of `clock` in real seconds (the simulator's clock runs faster; a service wraps it as `inner`)."""
    for found in (clock, getattr(clock, "inner", None)):
        if found is not None and hasattr(found, "real"):
            return found.real(seconds)
    return seconds


def _walk_threads(runner: Runner, hosts: list[RunHost], targets: WaveTargets, shared: SharedReads,
                  until: str | None = None) -> dict[str, RunHost | None]:
    """Each host from its committed step to DONE / FAILED, or to `until` (None: stopped by an abort), on its own
    thread with its own XAPI session (its hosts() and vms() reads shared with the wave: shared_reads.py); returns
    when every thread has."""
    results: dict[str, RunHost | None] = {}
    errors: list[BaseException] = []

    def walk(rh: RunHost) -> None:
        ctx = dataclasses.replace(runner.ctx, driver=shared.session(runner.ctx.driver), wave=targets)
        try:
            results[rh.mac] = runner._host(rh, ctx, until)
        except BaseException as exc:  # a crash of one thread (a test's kill, the service stopping) ends the wave
            errors.append(exc)
        finally:
            ctx.driver.close()
    threads = [threading.Thread(target=walk, args=(rh,), name=f"wave-{rh.name}") for rh in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def run_waves(runner: Runner, members: list[RunHost], recorded: dict[str, Any]) -> Run | None:
    """Walk the members wave by wave; the run's final state when it stops early, None when every wave ran. The
    threads' XAPI sessions are kept for the run (shared_reads.Sessions) and logged out at its end."""
    sessions = Sessions(runner.ctx.driver)
    try:
        return _run_waves(runner, members, recorded, sessions)
    finally:
        sessions.close()


def _run_waves(runner: Runner, members: list[RunHost], recorded: dict[str, Any], sessions: Sessions) -> Run | None:
    by_mac = {m.mac: m for m in members}
    max_failures = recorded.get("max_failures")
    wave_of = {mac: w["number"] for w in recorded["waves"] for mac in w["macs"]}
    for wave in recorded["waves"]:
        hosts = [runner.store.get_run_host(runner.run_id, mac) for mac in wave["macs"] if mac in by_mac]
        if not hosts or all(h.step in states.HOST_TERMINAL for h in hosts):
            continue
        run = runner.run_record
        if all(h.step == states.STEP_PENDING for h in hosts):  # not started yet: may it start?
            if run.abort_requested:
                return runner._set(states.RUN_ABORTED, runner.stopped_why or "abort requested")
            why = _stop_reason(runner, run, _failed_members(runner), max_failures)
            if why:
                return runner._set(states.RUN_ABORTED, why)
        number = wave["number"]
        runner.ctx.event(WAVE_START, None, wave=number, hosts=[h.name for h in hosts],
                         steps={h.name: h.step for h in hosts})
        runner.say(f"wave {number}: {', '.join(h.name for h in hosts)} ({wave['why']})")
        targets = WaveTargets(number, wave_of)
        shared = SharedReads(_real_seconds(runner.ctx.clock, runner.ctx.timeouts.poll), sessions)
        # every host CHECK and DISABLE first, all at once; none goes on before all are there: nothing of the wave
        # is down while another host's CHECK asks every member to answer, and none is evacuated onto another
        checked = _walk_threads(runner, hosts, targets, shared, until=states.STEP_EVACUATE)
        stopped = any(r is None for r in checked.values())
        ready = [r for r in checked.values() if r is not None and r.step not in states.HOST_TERMINAL]
        results = _walk_threads(runner, ready, targets, shared) if ready else {}  # an abort stops each before ARM
        stopped = stopped or any(r is None for r in results.values())
        final = [runner.store.get_run_host(runner.run_id, h.mac) for h in hosts]
        runner.ctx.event(WAVE_DONE, None, wave=number, done=[h.name for h in final if h.step == states.STEP_DONE],
                         failed=[h.name for h in final if h.step == states.STEP_FAILED])
        if stopped:
            return runner._set(states.RUN_ABORTED, runner.stopped_why or "abort requested")
        why = _stop_reason(runner, runner.run_record, [h for h in final if h.step == states.STEP_FAILED],
                           max_failures)
        if why and any(h.step == states.STEP_PENDING for h in runner.store.run_hosts(runner.run_id)):
            return runner._set(states.RUN_ABORTED, why)
    return None
