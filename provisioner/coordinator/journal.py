"""The run's write-ahead journal: what a step is about to change, written BEFORE the XAPI call that changes it.

PREPARE's changes (HA, WLB, auto_poweron), the VMs EVACUATE stops or moves, what RESTORE and FINALIZE did, and
the warnings and the guest-tools report all live here, so a restarted coordinator (and run_report(), which has no
XAPI access) knows exactly what the run changed. Entries are rows of the events table (kind, run, host MAC and
a JSON payload), committed one transaction each: the schema has no per-run JSON column, and an append-only log
is what a write-ahead journal is anyway. Everything that reads or writes it goes through this module.
"""

from __future__ import annotations

from typing import Any

from provisioner.store import Store

OPTIONS = "run.options"
"""{disable_ha_wlb, migrate_back, power_cycle, consent, host_up_timeout, updates}: the operator's choices, recorded
by start_run."""
PREPARE_INTENT = "prepare.intent"
"""{what: ha|wlb|auto_poweron, ...what undoing it needs, carried_from?}: written before PREPARE changes it, or when
PREPARE takes over what an earlier run (carried_from) left off (carry.py)."""
UNDO = "finalize.undo"
"""{what, vm?, ok, error?}: FINALIZE (or an abort during PREPARE) put it back, or could not."""
VM_RESIDENT, VM_EVACUATED = "vm.resident", "vm.evacuated"
"""{vms: [{uuid, name}]}: the real VMs running on a host just before host.evacuate (migrate back uses it);
{}: host.evacuate returned, they all left."""
VM_STOP, VM_STOPPED = "vm.stop", "vm.stopped"
"""{uuid, name, action: suspend|shutdown, was: Running|Paused, cds: [{vbd, iso}]}: a pool-of-one host's VM, before
/ after EVACUATE stops it (`how` on VM_STOPPED: suspended, clean shutdown, hard shutdown)."""
VM_EJECT = "vm.eject"
"""{uuid, name, vbd, iso}: a pool host's VM whose tools-ISO CD EVACUATE ejects before host.evacuate (vms.py)."""
VM_RESTORED = "vm.restored"
"""{uuid, name, how, ok, error?}: RESTORE resumed / started it, or migrated it back (how = migrated back)."""
WARNING = "run.warning"
"""{text}: something the run could not do and went on without (storage not plugged, VM not restored, ...)."""
MARKED_FAILED = "host.marked_failed"
"""{host, step}: the operator's decision (`upgrade mark-failed`) to fail a host the run is waiting on; the
waiting step fails it at its next look (installing.py)."""
TOOLS = "finalize.tools"
"""{target, checked, not_running, not_up_to_date: [{uuid, name, version}], no_tools: [{uuid, name}]}: the guest-tools
report (before issue 14: older / unknown, by version)."""
REMEDY = "host.remedy"
"""{cls, text, evidence: [{kind, when, what}], host_down}: what to do about a host that FAILED, classified from
evidence when it failed (remedies.py, docs/remedies.md); run_report() shows the last one."""
RPU_CLEARED = "finalize.rpu_cleared"
"""{seconds}: XAPI cleared rolling_upgrade_in_progress after that long (sim or wall seconds)."""
SETTLED = "prepare.settled"
"""{what, uuid?, name?, how: carried|restored|found back on|VM gone, by: run id|restore-settings}: on a run that left a
PREPARE change off, how it was settled later, so it is neither carried nor restored again (carry.py)."""
WAVES = "run.waves"
"""{parallel: auto|N, max_failures, notes, waves: [{number, hosts, macs, why}]}: the waves of a run started with
`--parallel` (wave 0: the master alone), recorded by start_run; a run without it goes one host at a time."""


def write(store: Store, run_id: str, kind: str, *, mac: str | None = None, **details: Any) -> None:
    """Append one entry (its own committed transaction: call it BEFORE the change it announces)."""
    store.add_event(kind, mac=mac, run_id=run_id, details=details)


def read(store: Store, run_id: str, kind: str, *, mac: str | None = None) -> list[dict[str, Any]]:
    """Every entry of `kind` for the run (and host), oldest first; each is its payload plus `mac`."""
    found, since = [], 0
    while True:
        batch = store.events(run_id=run_id, kind=kind, mac=mac, since_id=since, limit=1000)
        found += [{**e["details"], "mac": e["mac"]} for e in batch]
        if len(batch) < 1000:
            return found
        since = batch[-1]["id"]


def last(store: Store, run_id: str, kind: str, *, mac: str | None = None) -> dict[str, Any] | None:
    entries = read(store, run_id, kind, mac=mac)
    return entries[-1] if entries else None


def options(store: Store, run_id: str) -> dict[str, Any]:
    """The run's options; a run started before options existed (or without the entry) gets the safe defaults.
    consent: the precheck codes the operator consented to (coordinator/checks.py CONSENT; docs/prechecks.md).
    updates: the update repository CONVERGE brings each host to (`--updates NAME`), or None (converge.py)."""
    found = last(store, run_id, OPTIONS) or {}
    flags: dict[str, Any] = {name: bool(found.get(name)) for name in ("disable_ha_wlb", "migrate_back", "power_cycle")}
    flags["consent"] = tuple(str(code) for code in found.get("consent") or ())
    flags["updates"] = str(found["updates"]) if found.get("updates") else None
    return flags


def host_up_timeout(store: Store, run_id: str) -> float | None:
    """The run's own host-up timeout in seconds (`upgrade start --host-up-timeout`, REST host_up_timeout), kept in
    its OPTIONS entry; None: the configuration's host_up_timeout_s (installing.py)."""
    found = last(store, run_id, OPTIONS) or {}
    return float(found["host_up_timeout"]) if found.get("host_up_timeout") else None


def warn(store: Store, run_id: str, text: str, *, mac: str | None = None) -> None:
    write(store, run_id, WARNING, mac=mac, text=text)
