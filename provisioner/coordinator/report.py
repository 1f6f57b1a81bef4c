"""The run report: what a run did and where each host is, read from the store only (no XAPI).

The CLI (`upgrade status`, the end of `upgrade start`), the REST run document, the dashboard and the demo all
show this one dictionary (provisioner.output formats it as text). Each failed host carries its remedy: the one
journaled when it failed (classified from evidence, remedies.py), else the store-only classification.
"""

from __future__ import annotations

from typing import Any

from provisioner import states
from provisioner.coordinator import converge, finalize, journal, members, remedies, vms, wave_facts
from provisioner.store import NotFoundError, Run, RunHost, Store


def host_remedy(store: Store, run: Run, rh: RunHost) -> dict[str, Any]:
    """A FAILED host's remedy as run_report() shows it: the one journaled when it failed (classified from
    evidence, remedies.py), else the store-only classification; {remedy, remedy_class, evidence, host_down}."""
    left_unknown = rh.step not in states.HOST_TERMINAL and ": state unknown:" in (rh.reason or "")
    if rh.step != states.STEP_FAILED and not left_unknown:  # left unknown: an abort while its installer ran
        return {"remedy": None, "remedy_class": None, "evidence": [], "host_down": False}
    found = remedies.journaled(store, run.id, rh.mac) or remedies.from_store(store, run, rh).as_dict()
    return {"remedy": found["text"], "remedy_class": found["cls"], "evidence": found["evidence"],
            "host_down": found["host_down"]}


def run_report(store: Store, run_id: str) -> dict[str, Any]:
    """The run, each host's step, reason, remedy (+ remedy_class, evidence, host_down), VMs and warnings; what
    PREPARE changed; the guest-tools report.

    Read from the store only (no XAPI): each host adds "vms" (vms.host_report), "warnings" and "waiting" (what
    the run waits for at it: members reconnecting, the host-up timeout; members.waiting); the run adds
    "options", "prepare" (finalize.prepare_report), "vms_not_restored", "guest_tools" (None before FINALIZE),
    "rpu_cleared_after" (seconds, or None), "waves" (a --parallel run's journaled waves, else None; each host its
    "wave" number), "levels" (FINALIZE's record of each host's product version, build and
    update level, and the hosts left behind: converge.record_levels; None before) and "warnings" (those of no host)."""
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    warnings = journal.read(store, run_id, journal.WARNING)
    waves = wave_facts.recorded(store, run_id)
    wave_of = wave_facts.wave_of(store, run_id)
    hosts = [{**rh.as_dict(), **host_remedy(store, run, rh), "vms": vms.host_report(store, run_id, rh.mac),
              "warnings": [w["text"] for w in warnings if w["mac"] == rh.mac],
              "waiting": members.waiting(store, run_id, rh), "wave": wave_of.get(rh.mac)}
             for rh in store.run_hosts(run_id)]
    tools = journal.last(store, run_id, journal.TOOLS)
    cleared = journal.last(store, run_id, journal.RPU_CLEARED)
    levels = journal.last(store, run_id, converge.POOL)
    return {**run.as_dict(), "hosts": hosts, "options": journal.options(store, run_id),
            "prepare": finalize.prepare_report(store, run_id),
            "vms_not_restored": [{k: v for k, v in e.items() if k != "mac"} for e in vms.not_restored(store, run_id)],
            "guest_tools": {k: v for k, v in tools.items() if k != "mac"} if tools else None,
            "rpu_cleared_after": cleared["seconds"] if cleared else None,
            "levels": {k: v for k, v in levels.items() if k != "mac"} if levels else None,
            "warnings": [w["text"] for w in warnings if w["mac"] is None],
            "waves": {k: v for k, v in waves.items() if k != "mac"} if waves else None}


def status(store: Store, pool: str | None = None) -> list[dict[str, Any]]:
    """Reports of the runs (newest first), of one pool or of all."""
    return [run_report(store, run.id) for run in store.list_runs(pool)]
