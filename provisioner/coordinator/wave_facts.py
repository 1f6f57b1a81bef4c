"""What the wave planner needs from the pool, read through XAPI, and the plan of a run's waves (docs/waves.md).

Reads only: each host's free memory as XAPI counts it, the VMs running on it with the memory a migration needs
(memory_target + memory_overhead), its dom0 growth after the upgrade (the host plugin's getDom0DefaultMemory, as
the DOM0_MEMORY precheck reads it), its tags, and HA's failures to tolerate. The chosen waves are journaled by
start_run (journal.WAVES) so that a resumed run keeps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from provisioner.coordinator import journal
from provisioner.coordinator.waves import AUTO, HostCap, WavePlan, parse_max_failures, parse_parallel, plan_waves
from provisioner.store import Store
from provisioner.xapi import PoolDriver, XapiError, XapiUnreachable

if TYPE_CHECKING:
    from provisioner.xapi_prechecks import PoolFacts

RUNNING = ("Running", "Paused")


def _cap(facts, ref: str, growth: int, prefix: str | None) -> HostCap:
    host = facts.hosts[ref]
    vms = tuple((v.name, v.memory) for v in facts.vms if v.resident_on == ref and v.power_state in RUNNING)
    groups = tuple(sorted(t for t in host.tags if prefix and t.startswith(prefix)))
    return HostCap(host.name, host.memory_free, vms, growth, groups)


def _growth(driver: PoolDriver, facts, ref: str) -> int:
    try:
        after = driver.dom0_memory_after_upgrade(ref)
    except (XapiError, XapiUnreachable):
        return 0  # as the DOM0_MEMORY precheck: no answer, no growth known
    return max(0, after - facts.hosts[ref].dom0_memory) if after is not None else 0


def plan_for(driver: PoolDriver, hosts: list[Any], parallel: str, *, group_prefix: str | None = None,
             disable_ha_wlb: bool = False, facts: PoolFacts | None = None) -> WavePlan:
    """The waves of `hosts` (the plan's to_upgrade: PlannedHost with ref, name, role; master first). `facts`: the
    pool as the plan's prechecks read it a moment ago (Plan.facts), else read now."""
    facts = facts if facts is not None else driver.precheck_facts()
    pool = driver.pool_info()
    tolerate = int(pool.get("ha_host_failures_to_tolerate") or 0) if pool.get("ha_enabled") else 0
    notes = []
    if tolerate:
        notes.append(f"HA tolerates {tolerate} host failure(s): every wave keeps room for that"
                     + (" (PREPARE turns HA off for the run and FINALIZE back on; the room is kept anyway)"
                        if disable_ha_wlb else ""))
    if group_prefix:
        notes.append(f"group tags: host tags starting with {group_prefix!r}; no two hosts of a group in one wave")
    master = next((h for h in hosts if h.role == "master" and h.ref in facts.hosts), None)
    members = [h for h in hosts if h.role != "master" and h.ref in facts.hosts]
    master_cap = _cap(facts, master.ref, _growth(driver, facts, master.ref), group_prefix) if master else None
    caps = [_cap(facts, h.ref, _growth(driver, facts, h.ref), group_prefix) for h in members]
    planned = {h.ref for h in hosts}
    # hosts at the target already (the master too, when it is): they take VMs with what they have free
    upgraded = tuple(_cap(facts, r, 0, group_prefix) for r, h in facts.hosts.items()
                     if r not in planned and h.live and h.enabled)
    return plan_waves(master_cap, caps, parallel, ha_tolerate=tolerate, notes=tuple(notes), upgraded=upgraded)


def plan_of(plan: Any, driver: PoolDriver, parallel: str | None, max_failures: str | None,
            group_prefix: str | None, *, disable_ha_wlb: bool = False) -> WavePlan | None:
    """What `upgrade plan --parallel` shows: the waves start_run would journal (None without --parallel or
    --max-failures); ValueError for a bad value, as start_run."""
    parallel = parse_parallel(parallel) or ("1" if max_failures not in (None, "") else None)
    if not parallel:
        return None
    limit = parse_max_failures(max_failures, sum(1 for h in plan.to_upgrade if h.role != "master"))
    found = plan_for(driver, plan.to_upgrade, parallel, group_prefix=group_prefix, disable_ha_wlb=disable_ha_wlb,
                     facts=plan.facts)
    if limit is not None:
        found.notes.append(f"--max-failures: no new wave once {limit} member(s) failed")
    return found


def record(store: Store, run_id: str, plan: WavePlan, macs: dict[str, str], max_failures: int | None) -> None:
    """Journal the run's waves (by host name and MAC) and its failure limit, before the Runner acts."""
    journal.write(store, run_id, journal.WAVES, parallel=plan.parallel, max_failures=max_failures,
                  notes=plan.notes, waves=[{**w.as_dict(), "macs": [macs[n] for n in w.hosts]} for w in plan.waves])


def recorded(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run's journaled waves, or None for a run one host at a time."""
    return journal.last(store, run_id, journal.WAVES)


def wave_of(store: Store, run_id: str) -> dict[str, int]:
    """MAC -> wave number, for the report and the dashboard ({} for a run one host at a time)."""
    found = recorded(store, run_id)
    return {mac: w["number"] for w in (found or {}).get("waves", []) for mac in w["macs"]}


__all__ = ["AUTO", "plan_for", "plan_of", "record", "recorded", "wave_of"]
