"""Pool settings an earlier run turned off and nobody put back (HA, WLB, VM auto_poweron): found, carried to the
pool's next run (its PREPARE journals them as its own, its FINALIZE restores them), or restored now.

A run aborted in MASTER / MEMBERS leaves PREPARE's changes off on purpose, and FINALIZE leaves HA / WLB off while
failed members keep the pool mixed; XO restores such settings in a `defer` (docs/real-world.md
"Settings an aborted run turned off"). Each earlier run's PREPARE intent stays outstanding until its journal says how it
was settled (SETTLED): carried by a later run, restored by `provisioner upgrade restore-settings`, found back on, or its
VM gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioner import states
from provisioner.coordinator import journal
from provisioner.model import version_tuple
from provisioner.store import ConflictError, Store
from provisioner.xapi import PoolDriver, VmInfo, XapiError, XapiUnreachable

HA, WLB, AUTO_POWERON = "ha", "wlb", "auto_poweron"
_ORDER = {HA: 0, WLB: 1, AUTO_POWERON: 2}
RESTORE_BY = "restore-settings"
OFF, BACK, GONE, UNKNOWN = "off", "back on", "vm gone", "unknown"


@dataclass
class LeftOff:
    """One setting earlier runs turned off and did not undo; `run` is the newest of `runs` (its values win)."""

    run: str
    what: str
    uuid: str | None
    name: str | None
    values: dict[str, Any]  # what undoing needs (HA: heartbeat_srs, failures_to_tolerate)
    runs: list[str] = field(default_factory=list)
    state: str = UNKNOWN  # OFF / BACK / GONE as the pool shows it now, UNKNOWN without a look at it

    @property
    def label(self) -> str:
        if self.what == HA:
            srs = self.values.get("heartbeat_srs") or []
            return (f"HA (heartbeat SRs: {', '.join(srs) or 'the default SR'}, failures to tolerate "
                    f"{self.values.get('failures_to_tolerate', 0)})")
        return "WLB" if self.what == WLB else f"VM {self.name} auto_poweron"

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "runs": list(self.runs), "what": self.what, "uuid": self.uuid, "vm": self.name,
                "state": self.state, "label": self.label, **self.values}


def _outstanding(store: Store, run_id: str) -> list[dict]:
    """The run's PREPARE intents (first per setting) neither undone nor settled since."""
    def key(e: dict) -> tuple[str, str | None]:
        return e["what"], e.get("uuid")
    undone = {key(e): e["ok"] for e in journal.read(store, run_id, journal.UNDO)}  # the last outcome wins
    settled = {key(e) for e in journal.read(store, run_id, journal.SETTLED)}
    found: dict[tuple[str, str | None], dict] = {}
    for e in journal.read(store, run_id, journal.PREPARE_INTENT):
        found.setdefault(key(e), e)
    return [e for k, e in found.items() if not undone.get(k) and k not in settled]


def left_off(store: Store, pool: str, *, pool_info: dict | None = None, vms: list[VmInfo] | None = None,
             exclude_run: str | None = None) -> list[LeftOff]:
    """Every setting an ended run of `pool` turned off and nobody undid, newest run's values first; with the pool's
    record (and VMs) each gets the state the pool shows now (someone may have put it back)."""
    found: dict[tuple[str, str | None], LeftOff] = {}
    for run in store.list_runs(pool):  # newest first
        if run.id == exclude_run or run.state not in states.RUN_TERMINAL:
            continue  # an active run owns its changes
        for e in _outstanding(store, run.id):
            k = (e["what"], e.get("uuid"))
            if k not in found:
                values = {n: v for n, v in e.items() if n not in ("what", "uuid", "name", "mac", "carried_from")}
                found[k] = LeftOff(run.id, e["what"], e.get("uuid"), e.get("name"), values)
            found[k].runs.append(run.id)
    items = sorted(found.values(), key=lambda i: (_ORDER.get(i.what, 9), i.name or ""))
    _judge(items, pool_info, vms)
    return items


def _judge(items: list[LeftOff], pool_info: dict | None, vms: list[VmInfo] | None) -> None:
    """Each item's state as the pool's record (HA, WLB) and VMs (auto_poweron) show it now, where given."""
    by_uuid = {v.uuid: v for v in vms} if vms is not None else None
    for item in items:
        if item.what == AUTO_POWERON and by_uuid is not None:
            vm = by_uuid.get(item.uuid)
            item.state = GONE if vm is None else BACK if vm.auto_poweron else OFF
        elif item.what != AUTO_POWERON and pool_info is not None:
            item.state = BACK if pool_info[f"{item.what}_enabled"] else OFF


def settle(store: Store, item: LeftOff, how: str, by: str) -> None:
    """Journal on every run that left it off how it was settled, so nothing restores or carries it again."""
    for run_id in item.runs:
        journal.write(store, run_id, journal.SETTLED, what=item.what, uuid=item.uuid, name=item.name, how=how, by=by)


def plan_lines(items: list[LeftOff], pool: str) -> list[str]:
    """One line per run that left settings off, for `upgrade plan`."""
    shown = [i for i in items if i.state != BACK]
    lines = []
    for run in dict.fromkeys(i.run for i in shown):
        labels = [i.label + (" (the VM no longer exists)" if i.state == GONE else "") for i in shown if i.run == run]
        lines.append(f"left off by run {run}: {', '.join(labels)}; the next run's FINALIZE restores them, or run "
                     f"`provisioner upgrade restore-settings {pool}`")
    return lines


def take_over(store: Store, run_id: str, pool: str, driver: PoolDriver) -> list[str]:
    """PREPARE of a new run: journal every setting earlier runs left off as this run's own intent (the ORIGINAL
    values: HA's heartbeat SRs and failures to tolerate from the old intent, not from the pool, where HA is off),
    then settle it on the old runs. Commit then act: a crash in between finds the intent and only settles."""
    items = left_off(store, pool, exclude_run=run_id)
    if not items:  # nothing left off (the usual case): no need to read the pool
        return []
    _judge(items, driver.pool_info(), driver.vms())
    known = {(e["what"], e.get("uuid")) for e in journal.read(store, run_id, journal.PREPARE_INTENT)}
    said = []
    for item in items:
        if item.state in (BACK, GONE):
            settle(store, item, "found back on" if item.state == BACK else "VM gone", run_id)
            continue
        if (item.what, item.uuid) not in known:
            extra = {"uuid": item.uuid, "name": item.name} if item.what == AUTO_POWERON else {}
            journal.write(store, run_id, journal.PREPARE_INTENT, what=item.what, carried_from=item.run, **extra,
                          **item.values)
        settle(store, item, "carried", run_id)
        said.append(f"{item.label}: left off by run {item.run}, back on in this run's FINALIZE")
    return said


def _mixed(driver: PoolDriver, pool_info: dict) -> str | None:
    """Why HA / WLB cannot go back on now: hosts at different versions (xapi_pool.ml enable_ha refuses
    NOT_SUPPORTED_DURING_UPGRADE, docs/xapi.md "Mixed versions: rolling_upgrade_in_progress"; WLB would move VMs across
    versions), or None."""
    versions = sorted({h.product_version for h in driver.hosts()}, key=version_tuple)
    if len(versions) > 1:
        return f"the pool has hosts at different versions ({', '.join(versions)}): finish the upgrade first"
    if pool_info["rolling_upgrade_in_progress"]:
        return "XAPI still shows rolling_upgrade_in_progress: try again in a minute"
    return None


def restore(store: Store, pool: str, driver: PoolDriver) -> dict[str, Any]:
    """`provisioner upgrade restore-settings POOL`: put back now what ended runs left off; idempotent (the world
    is read first, each restore is journaled on the runs that left it off). ConflictError while a run is active."""
    active = store.list_runs(pool, active_only=True)
    if active:
        raise ConflictError(f"pool {pool} has run {active[0].id} in state {active[0].state}: it owns the settings "
                            "it turned off (its FINALIZE puts them back); abort it or let it end first")
    info, found = driver.pool_info(), driver.vms()
    items = left_off(store, pool, pool_info=info, vms=found)
    vms = {v.uuid: v for v in found}
    done: dict[str, Any] = {"pool": pool, "restored": [], "already_back": [], "not_restored": []}
    blocked = _mixed(driver, info) if any(i.what != AUTO_POWERON and i.state == OFF for i in items) else None
    for item in sorted(items, key=lambda i: -_ORDER.get(i.what, 9)):  # VMs, then WLB, then HA (as undo)
        if item.state == BACK:
            settle(store, item, "found back on", RESTORE_BY)
            done["already_back"].append(item.label)
            continue
        if item.state == GONE:
            settle(store, item, "VM gone", RESTORE_BY)
            done["not_restored"].append({"setting": item.label, "why": "XAPI no longer knows this VM"})
            continue
        if item.what != AUTO_POWERON and blocked:
            done["not_restored"].append({"setting": item.label, "why": blocked})
            continue
        method, call = {
            AUTO_POWERON: ("VM auto_poweron on", lambda: driver.set_auto_poweron(vms[item.uuid].ref, True)),
            WLB: ("wlb on", lambda: driver.set_wlb_enabled(True)),
            HA: ("ha on", lambda: driver.enable_ha(item.values.get("heartbeat_srs") or [],
                                                   int(item.values.get("failures_to_tolerate") or 0)))}[item.what]
        try:
            call()
        except (XapiError, XapiUnreachable) as exc:
            store.add_event("xapi.call", run_id=item.run, details={"method": method, "ok": False, "by": RESTORE_BY,
                                                                   "error": str(exc)[:300], "vm": item.name})
            done["not_restored"].append({"setting": item.label, "why": f"XAPI refused: {exc}"})
            continue
        store.add_event("xapi.call", run_id=item.run, details={"method": method, "ok": True, "by": RESTORE_BY,
                                                               "vm": item.name})
        settle(store, item, "restored", RESTORE_BY)
        done["restored"].append(item.label)
    return done
