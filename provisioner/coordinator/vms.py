"""What happens to each VM of a host being upgraded, doing it, and putting it back (docs/xapi.md
"XenCenter's prechecks and their unwind", "XenCenter's plan for each host", "VM and VBD calls").

A pool with room: host.evacuate live-migrates the host's VMs (RESTORE migrates them back when the operator asks).
A pool of one has nowhere to move them, so like XenCenter's NoHosts fix: eject the CDs of the VMs to be suspended
(a suspended VM with a disc in may not resume after the upgrade), suspend each VM when XAPI allows it, otherwise
shut it down; after the upgrade resume / start exactly those VMs. Every VM is journaled BEFORE it is touched, and
every action first reads the VM's state, so a re-run after a crash finishes the job without repeating it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from provisioner.coordinator import journal
from provisioner.coordinator.context import Context, StepFailed, error_code, xapi_call
from provisioner.store import RunHost, Store
from provisioner.xapi import VmInfo, XapiError, XapiUnreachable

MIGRATE, SUSPEND, SHUTDOWN = "migrate", "suspend", "shutdown"
RUNNING = ("Running", "Paused")
"""Power states of a VM that is resident on a host and must leave it before the reboot."""


@dataclass(frozen=True)
class PlannedVm:
    """One VM of a host to upgrade: what EVACUATE does to it, what it ejects first, and what happens after."""

    host: str
    name: str
    uuid: str
    power_state: str
    action: str  # migrate | suspend | shutdown
    eject: tuple[str, ...]  # the discs ejected before a suspend (never reinserted)
    auto_poweron: bool  # turned off by PREPARE, back on by FINALIZE
    afterwards: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "eject": list(self.eject)}


def action_for(vm: VmInfo, standalone: bool) -> str:
    """migrate in a pool; on a pool of one suspend when XAPI allows it (XenCenter VMProblem), else shut down."""
    if not standalone:
        return MIGRATE
    return SUSPEND if vm.power_state == "Running" and "suspend" in vm.allowed_operations else SHUTDOWN


def resident(vms: list[VmInfo], host_ref: str) -> list[VmInfo]:
    """The real VMs running (or paused) on the host: the ones that must leave it."""
    return [v for v in vms if v.resident_on == host_ref and v.power_state in RUNNING]


def plan_host(host_name: str, host_ref: str, vms: list[VmInfo], *, standalone: bool,
              migrate_back: bool, pinned: frozenset[str] = frozenset()) -> list[PlannedVm]:
    """pinned: refs of the VMs pinned to this host that the run shuts down (consent PINNED_VM, pinned.py)."""
    planned = []
    for vm in resident(vms, host_ref):
        action = SHUTDOWN if vm.ref in pinned and not standalone else action_for(vm, standalone)
        if action == MIGRATE:
            after = "migrated back" if migrate_back else "stays where host.evacuate moved it"
        elif action == SUSPEND:
            after = "resumed on this host"
        else:
            after = "started on this host" + (" (paused)" if vm.power_state == "Paused" else "")
        # suspend: every disc (it may not resume); migrate: the tools ISO, as XenCenter's ToolsCD fix does
        eject = tuple(cd.iso for cd in vm.cds if action == SUSPEND or (action == MIGRATE and cd.tools))
        planned.append(PlannedVm(host_name, vm.name, vm.uuid, vm.power_state, action, eject, vm.auto_poweron, after))
    return planned


# --- EVACUATE ---

def note_resident(ctx: Context, rh: RunHost, host_ref: str, vms: list[VmInfo] | None = None) -> None:
    """Journal the VMs on the host before the first evacuation attempt (never overwritten by a re-run)."""
    if journal.last(ctx.store, ctx.run_id, journal.VM_RESIDENT, mac=rh.mac) is None:
        on_host = resident(ctx.driver.vms() if vms is None else vms, host_ref)
        journal.write(ctx.store, ctx.run_id, journal.VM_RESIDENT, mac=rh.mac,
                      vms=[{"uuid": v.uuid, "name": v.name} for v in on_host])


def stop_for_upgrade(ctx: Context, rh: RunHost, host_ref: str) -> list[str]:
    """Pool of one: eject, then suspend or shut down each VM on the host; journal first, act second. What it did."""
    vms = {v.uuid: v for v in ctx.driver.vms()}
    planned = {e["uuid"]: e for e in journal.read(ctx.store, ctx.run_id, journal.VM_STOP, mac=rh.mac)}
    for vm in resident(list(vms.values()), host_ref):
        if vm.uuid not in planned:
            action = action_for(vm, True)
            entry = {"uuid": vm.uuid, "name": vm.name, "action": action, "was": vm.power_state,
                     "cds": [{"vbd": cd.vbd_uuid, "iso": cd.iso} for cd in vm.cds] if action == SUSPEND else []}
            journal.write(ctx.store, ctx.run_id, journal.VM_STOP, mac=rh.mac, **entry)
            planned[vm.uuid] = entry
    return stop_planned(ctx, rh, vms, planned)


def stop_planned(ctx: Context, rh: RunHost, vms: dict[str, VmInfo], planned: dict[str, dict]) -> list[str]:
    """Stop each journaled VM_STOP entry not yet VM_STOPPED (uuid -> entry; `vms` by uuid, read now); what it did."""
    done = {e["uuid"] for e in journal.read(ctx.store, ctx.run_id, journal.VM_STOPPED, mac=rh.mac)}
    said = []
    for uuid, entry in planned.items():
        vm = vms.get(uuid)
        if uuid in done or vm is None:
            continue
        how = _stop(ctx, rh, vm, entry)
        journal.write(ctx.store, ctx.run_id, journal.VM_STOPPED, mac=rh.mac, uuid=uuid, name=entry["name"],
                      action=entry["action"], how=how, cds=entry["cds"])
        said.append(f"{entry['name']}: {how}" + (f" (ejected {', '.join(c['iso'] for c in entry['cds'])})"
                                                  if entry["cds"] else ""))
    return said


def _stop(ctx: Context, rh: RunHost, vm: VmInfo, entry: dict) -> str:
    if vm.power_state == "Suspended":
        return "suspended"  # done before a crash
    if vm.power_state == "Halted":
        return "shut down"
    call = {"vm": vm.name}
    try:
        if entry["action"] == SUSPEND:
            for cd in vm.cds:  # what is still in the drive (a re-run finds the ejected ones empty)
                try:
                    xapi_call(ctx, rh, "VBD.eject", ctx.driver.eject_cd, cd.vbd, iso=cd.iso, **call)
                except XapiError as exc:
                    if error_code(exc) != "VBD_IS_EMPTY":
                        raise
            xapi_call(ctx, rh, "VM.suspend", ctx.driver.suspend_vm, vm.ref, **call)
            return "suspended"
        if vm.power_state == "Running":
            try:
                xapi_call(ctx, rh, "VM.clean_shutdown", ctx.driver.clean_shutdown_vm, vm.ref, **call)
                return "clean shutdown"
            # no PV drivers, guest hung: the hard way, as XenCenter does (docs/xapi.md
            # "XenCenter's prechecks and their unwind")
            except XapiError as exc:
                ctx.say(f"{rh.name}: {vm.name}: clean shutdown failed ({exc}); hard shutdown")
        xapi_call(ctx, rh, "VM.hard_shutdown", ctx.driver.hard_shutdown_vm, vm.ref, **call)
        return "hard shutdown"
    except (XapiError, XapiUnreachable) as exc:
        raise StepFailed(f"could not {entry['action']} VM {vm.name}: {exc}") from None


def eject_tools_cds(ctx: Context, rh: RunHost, host_ref: str, vms: list[VmInfo] | None = None) -> list[str]:
    """Pool: before host.evacuate, eject the tools ISO from the CD drive of every VM on the host (XenCenter's
    AssertCanEvacuateCheck raises ToolsCD and its fix ejects it: an upgrade replaces the tools ISO, and a VM holding
    the old one may not migrate to or resume on an upgraded host). Journaled first (VM_EJECT), never reinserted.
    `vms`: the pool's VMs as just read (read here when not given)."""
    said = []
    for vm in resident(ctx.driver.vms() if vms is None else vms, host_ref):
        for cd in (c for c in vm.cds if c.tools):
            journal.write(ctx.store, ctx.run_id, journal.VM_EJECT, mac=rh.mac, uuid=vm.uuid, name=vm.name,
                          vbd=cd.vbd_uuid, iso=cd.iso)
            try:
                xapi_call(ctx, rh, "VBD.eject", ctx.driver.eject_cd, cd.vbd, iso=cd.iso, vm=vm.name)
            except XapiError as exc:
                if error_code(exc) != "VBD_IS_EMPTY":  # emptied meanwhile: nothing to do
                    raise StepFailed(f"could not eject {cd.iso} from VM {vm.name}: {exc}") from None
            said.append(f"{vm.name}: ejected {cd.iso} (tools ISO) before evacuation")
    return said


# --- RESTORE ---

def restore(ctx: Context, rh: RunHost, host_ref: str, *, migrate_back: bool) -> list[str]:
    """Resume / start exactly the VMs EVACUATE stopped on this host (and migrate back the moved ones when asked).

    Never raises for one VM: a VM that cannot be put back is journaled as a warning and the others go on."""
    restored = {e["uuid"] for e in journal.read(ctx.store, ctx.run_id, journal.VM_RESTORED, mac=rh.mac) if e["ok"]}
    stops = [e for e in journal.read(ctx.store, ctx.run_id, journal.VM_STOP, mac=rh.mac) if e["uuid"] not in restored]
    moved = (journal.last(ctx.store, ctx.run_id, journal.VM_RESIDENT, mac=rh.mac) or {}).get("vms", [])
    moved = [m for m in moved if m["uuid"] not in restored] if migrate_back else []
    if not stops and not moved:
        return []
    vms = {v.uuid: v for v in ctx.driver.vms()}
    said = []
    for entry in stops:
        said.append(_put_back(ctx, rh, vms.get(entry["uuid"]), entry, host_ref))
    for entry in moved:
        said.append(_put_back(ctx, rh, vms.get(entry["uuid"]), {**entry, "action": MIGRATE}, host_ref))
    return [line for line in said if line]


def _put_back(ctx: Context, rh: RunHost, vm: VmInfo | None, entry: dict, host_ref: str) -> str | None:
    name, uuid = entry["name"], entry["uuid"]

    def outcome(how: str, ok: bool = True, error: str | None = None) -> str:
        journal.write(ctx.store, ctx.run_id, journal.VM_RESTORED, mac=rh.mac, uuid=uuid, name=name, how=how, ok=ok,
                      **({"error": error} if error else {}))
        if not ok:
            journal.warn(ctx.store, ctx.run_id, f"VM {name} not {how}: {error}", mac=rh.mac)
        return f"{name}: {how}" + ("" if ok else f" FAILED ({error})")

    if vm is None:
        return outcome("restored", False, "XAPI no longer knows this VM")
    call = {"vm": name}
    try:
        if entry["action"] == MIGRATE:
            if vm.power_state not in RUNNING or vm.resident_on == host_ref:
                return None  # stopped by someone else meanwhile, or already back: nothing to move
            xapi_call(ctx, rh, "VM.pool_migrate", ctx.driver.migrate_vm, vm.ref, host_ref, **call)
            return outcome("migrated back")
        if vm.power_state in RUNNING:
            return outcome("already running")
        if vm.power_state == "Suspended":
            xapi_call(ctx, rh, "VM.resume_on", ctx.driver.resume_vm_on, vm.ref, host_ref, **call)
            return outcome("resumed")
        paused = entry.get("was") == "Paused"
        xapi_call(ctx, rh, "VM.start_on", ctx.driver.start_vm_on, vm.ref, host_ref, paused, **call)
        return outcome("started paused" if paused else "started")
    except (XapiError, XapiUnreachable) as exc:
        how = "migrated back" if entry["action"] == MIGRATE else "restored"
        return outcome(how, False, str(exc)[:300])


# --- what report.run_report() shows (from the journal only: it has no XAPI access) ---

def host_report(store: Store, run_id: str, mac: str) -> list[dict[str, Any]]:
    """Per VM the run touched on this host: what EVACUATE did (and which discs it ejected) and what came after."""
    rows: dict[str, dict[str, Any]] = {}
    moved = "migrated away" if journal.last(store, run_id, journal.VM_EVACUATED, mac=mac) is not None else None
    for e in journal.read(store, run_id, journal.VM_RESIDENT, mac=mac)[-1:]:
        for vm in e["vms"]:
            rows[vm["uuid"]] = {"uuid": vm["uuid"], "name": vm["name"], "action": MIGRATE, "done": moved,
                                "cds_ejected": [], "afterwards": None}
    for e in journal.read(store, run_id, journal.VM_STOP, mac=mac):
        rows[e["uuid"]] = {"uuid": e["uuid"], "name": e["name"], "action": e["action"], "done": None,
                           "cds_ejected": [], "afterwards": None}
    for e in journal.read(store, run_id, journal.VM_STOPPED, mac=mac):
        rows[e["uuid"]].update(done=e["how"], cds_ejected=[c["iso"] for c in e["cds"]])
    for e in journal.read(store, run_id, journal.VM_EJECT, mac=mac):
        if e["uuid"] in rows and e["iso"] not in rows[e["uuid"]]["cds_ejected"]:
            rows[e["uuid"]]["cds_ejected"].append(e["iso"])
    for e in journal.read(store, run_id, journal.VM_RESTORED, mac=mac):
        if e["uuid"] in rows:
            rows[e["uuid"]]["afterwards"] = e["how"] if e["ok"] else f"not {e['how']}: {e.get('error')}"
    return list(rows.values())


def not_restored(store: Store, run_id: str) -> list[dict[str, Any]]:
    """VMs the run stopped that no journal entry says are running again (with the host's MAC)."""
    ok = {e["uuid"] for e in journal.read(store, run_id, journal.VM_RESTORED) if e["ok"]}
    return [{"uuid": e["uuid"], "name": e["name"], "how": e["how"], "mac": e["mac"]}
            for e in journal.read(store, run_id, journal.VM_STOPPED) if e["uuid"] not in ok]
