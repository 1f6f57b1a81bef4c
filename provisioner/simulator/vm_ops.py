"""VM operations of the simulated XAPI: allowed operations, boot checks, evacuation plans, migrate, evacuate,
power-state changes, and halting a host's VMs when it goes down (docs/xapi.md "Host lifecycle calls",
"VM and VBD calls", "Mixed versions: rolling_upgrade_in_progress")."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from . import states as st
from .db import NULL_REF
from .devices import pinned_error
from .errors import XapiError

if TYPE_CHECKING:
    from .hosts import SimHost, SimPool
    from .world import World

# xapi_globs.ml:483-516 rpu_allowed_vm_operations: anything else is NOT_SUPPORTED_DURING_UPGRADE (2.9).
RPU_ALLOWED_VM_OPS = frozenset({
    "assert_operation_valid", "changing_memory_live", "changing_shadow_memory_live", "changing_VCPUs_live",
    "clean_reboot", "clean_shutdown", "clone", "copy", "csvm", "destroy", "export", "get_boot_record",
    "hard_reboot", "hard_shutdown", "import", "make_into_template", "migrate_send", "pause", "pool_migrate",
    "power_state_reset", "provision", "resume", "resume_on", "send_sysrq", "send_trigger", "start",
    "start_on", "suspend", "unpause", "update_allowed_operations"})

# xapi_vm_lifecycle.ml:32-92: the power states in which each operation is allowed.
OPS_BY_POWER_STATE = {
    "Running": ["clean_shutdown", "hard_shutdown", "clean_reboot", "hard_reboot", "pool_migrate", "suspend",
                "snapshot", "checkpoint", "pause"],
    "Halted": ["start", "start_on", "snapshot", "clone", "copy", "export", "destroy"],
    "Suspended": ["resume", "resume_on", "hard_shutdown", "snapshot"],
    "Paused": ["unpause", "hard_shutdown", "hard_reboot", "pool_migrate"],
}


def is_real_vm(rec: dict) -> bool:
    """Not a template, snapshot or control domain (XenCenter IsRealVm, Host.cs:916-924)."""
    return not (rec["is_a_template"] or rec["is_a_snapshot"] or rec["is_control_domain"])


def allowed_operations(world: "World", pool: "SimPool", rec: dict, ref: str = NULL_REF) -> list[str]:
    if rec["is_control_domain"] or rec["is_a_template"]:
        return []
    ops = list(OPS_BY_POWER_STATE.get(rec["power_state"], []))
    if rec["power_state"] == "Running" and not _has_pv(pool, rec):
        ops.remove("suspend")
    if ref != NULL_REF and pinned_error(pool, ref):
        # a host-bound device: no pool_migrate / suspend / checkpoint (xapi_vm_lifecycle.ml:653-672)
        ops = [op for op in ops if op not in ("pool_migrate", "suspend", "checkpoint")]
    if world.rpu_in_progress(pool):  # xapi_vm_lifecycle.ml:726-735: RPU recomputes allowed ops
        ops = [op for op in ops if op in RPU_ALLOWED_VM_OPS]
    return ops


def _has_pv(pool: "SimPool", rec: dict) -> bool:
    gm = rec["guest_metrics"]
    return gm != NULL_REF and pool.db.exists("VM_guest_metrics", gm) and \
        pool.db.get("VM_guest_metrics", gm)["PV_drivers_detected"]


def assert_power_state(vm: str, rec: dict, *expected: str) -> None:
    """VM_BAD_POWER_STATE [vm, "expected1, expected2" lower case, actual lower case] (xapi_vm_lifecycle.ml:287-295)."""
    if rec["power_state"] not in expected:
        raise XapiError("VM_BAD_POWER_STATE", vm, ", ".join(e.lower() for e in expected),
                        rec["power_state"].lower())


def assert_rpu_allowed(world: "World", pool: "SimPool", op: str) -> None:
    if world.rpu_in_progress(pool) and op not in RPU_ALLOWED_VM_OPS:
        raise XapiError("NOT_SUPPORTED_DURING_UPGRADE")  # xapi_vm_lifecycle.ml:800-808


def host_version(pool: "SimPool", host_ref: str) -> tuple:
    return st.version_key(pool.db.get("host", host_ref)["software_version"])


def assert_highest_version(world: "World", pool: "SimPool", host_ref: str) -> None:
    """During RPU, start_on/resume_on need a host with the highest version (message_forwarding.ml:2049-2052,2556-2559)."""
    if world.rpu_in_progress(pool):
        top = max(host_version(pool, r) for r in pool.db.all("host"))
        if host_version(pool, host_ref) < top:
            raise XapiError("NOT_SUPPORTED_DURING_UPGRADE")


def free_memory(pool: "SimPool", host_ref: str) -> int:
    """What the memory check sees free (memory_check.ml:134-200 host_compute_free_memory_with_maximum_compression):
    memory_total - the host's memory_overhead - every VM resident_on OR scheduled_to_be_resident_on it (dom0
    included), never the reported host_metrics.memory_free. A migration in flight has reserved its memory on the
    destination (message_forwarding.ml:1555-1580 allocate_vm_to_host), so two concurrent migrations cannot both
    take the same room."""
    db = pool.db
    with db.lock:
        host = db.get("host", host_ref)
        total = int(db.get("host_metrics", host["metrics"])["memory_total"]) - int(host["memory_overhead"] or 0)
        vms = set(db.find("VM", resident_on=host_ref)) | set(db.find("VM", scheduled_to_be_resident_on=host_ref))
        return max(0, total - sum(int(db.get("VM", v)["memory_target"]) for v in vms))


def assert_can_boot_here(world: "World", pool: "SimPool", vm: str, host_ref: str) -> None:
    """assert_can_boot_here (xapi_vm_helpers.ml:380-395,682-705): live, enabled, SRs visible, memory."""
    db = pool.db
    host = db.get("host", host_ref)
    if not db.get("host_metrics", host["metrics"])["live"]:
        raise XapiError("HOST_NOT_LIVE")
    if not host["enabled"]:
        raise XapiError("HOST_DISABLED", host_ref)
    sr = missing_sr(pool, vm, host_ref)
    if sr:
        raise XapiError("VM_REQUIRES_SR", vm, sr)
    need, free = int(db.get("VM", vm)["memory_target"]), free_memory(pool, host_ref)
    if need > free:
        raise XapiError("HOST_NOT_ENOUGH_FREE_MEMORY", str(need), str(free))


def missing_sr(pool: "SimPool", vm: str, host_ref: str) -> str | None:
    """An SR a non-empty VBD of the VM needs that has no attached PBD on `host_ref` (VM_REQUIRES_SR)."""
    db = pool.db
    for vbd in db.find("VBD", VM=vm):
        b = db.get("VBD", vbd)
        if b["empty"] or b["VDI"] == NULL_REF or not db.exists("VDI", b["VDI"]):
            continue
        sr = db.get("VDI", b["VDI"])["SR"]
        if not db.find("PBD", SR=sr, host=host_ref, currently_attached=True):
            return sr
    return None


def evacuation_plan(world: "World", pool: "SimPool", host_ref: str) -> tuple[dict, dict]:
    """(targets {vm: host}, errors {vm: [code, params]}) for the real VMs resident on the host.

    xapi_host.ml:285-424: candidate targets are enabled (live) hosts other than this one whose versions
    are not lower; none -> NO_HOSTS_AVAILABLE [vm]; memory is reserved as the plan goes, and a VM that
    fits nowhere gets HOST_NOT_ENOUGH_FREE_MEMORY [vm] (the VM ref, not needed/available)."""
    db = pool.db
    mine = host_version(pool, host_ref)
    candidates = [r for r in db.all("host") if r != host_ref and db.get("host", r)["enabled"]
                  and db.get("host_metrics", db.get("host", r)["metrics"])["live"]
                  and host_version(pool, r) >= mine]
    free = {r: free_memory(pool, r) for r in candidates}
    targets, errors = {}, {}
    for vm in db.find("VM", resident_on=host_ref):
        rec = db.get("VM", vm)
        if not is_real_vm(rec) or rec["power_state"] not in ("Running", "Paused"):
            continue
        code = world.evacuation_blocks.get(vm)
        if code:
            errors[vm] = _injected_plan_error(pool, vm, host_ref, code)
            continue
        if not candidates:
            errors[vm] = ["NO_HOSTS_AVAILABLE", vm]
            continue
        pinned = pinned_error(pool, vm)  # xapi_host.ml:377-389, after :327-335 (no targets)
        if pinned:
            errors[vm] = pinned
            continue
        need = int(rec["memory_target"])
        fits = [r for r in candidates if free[r] >= need and not missing_sr(pool, vm, r)]
        if not fits:
            sr = next((missing_sr(pool, vm, r) for r in candidates if missing_sr(pool, vm, r)), None)
            errors[vm] = ["VM_REQUIRES_SR", vm, sr] if sr and all(missing_sr(pool, vm, r) for r in candidates) \
                else ["HOST_NOT_ENOUGH_FREE_MEMORY", vm]
            continue
        target = max(fits, key=lambda r: free[r])
        free[target] -= need
        targets[vm] = target
    return targets, errors


def _injected_plan_error(pool: "SimPool", vm: str, host_ref: str, code: str) -> list[str]:
    if code == "VM_REQUIRES_SR":  # the host's local SR, as a VM with a local disk or local ISO would need
        local = [p for p in pool.db.find("PBD", host=host_ref)
                 if not pool.db.get("SR", pool.db.get("PBD", p)["SR"])["shared"]]
        return [code, vm, pool.db.get("PBD", local[0])["SR"] if local else NULL_REF]
    if code == "VM_REQUIRES_NETWORK":
        return [code, vm, NULL_REF]
    return [code, vm]


def migrate(world: "World", pool: "SimPool", vm: str, dest: str) -> None:
    """VM.pool_migrate (message_forwarding.ml:2602-2636; docs/xapi.md "VM and VBD calls"): checks first, then the move
    takes time; an injected failure ends it midway with the VM still on the source."""
    db = pool.db
    with db.lock:
        rec = db.get("VM", vm)
        db.get("host", dest)
        assert_power_state(vm, rec, "Running", "Paused")
        src = rec["resident_on"]
        if src == dest:
            return
        if world.rpu_in_progress(pool) and host_version(pool, dest) < host_version(pool, src):
            raise XapiError("NOT_SUPPORTED_DURING_UPGRADE")  # no migration to a lower version during RPU (2.9)
        pinned = pinned_error(pool, vm)
        if pinned:
            raise XapiError(*pinned)
        assert_can_boot_here(world, pool, vm, dest)
        # message_forwarding.ml:2602-2636 pool_migrate -> reserve_memory_for_vm: checked and reserved under the
        # same lock, the reservation cleared when the call ends, whatever its outcome
        db.update("VM", vm, scheduled_to_be_resident_on=dest)
    try:
        world.sleep(world.delays["migrate"] / 2)
        code = world.migration_failures.get(vm)
        if code:
            if code == "VM_MIGRATE_FAILED":
                raise XapiError(code, vm, src, dest, "injected failure: migration aborted")
            raise XapiError(code, vm)
        world.sleep(world.delays["migrate"] / 2)
        with db.lock:
            if db.get("VM", vm)["power_state"] not in ("Running", "Paused"):
                raise XapiError("VM_BAD_POWER_STATE", vm, "running, paused", db.get("VM", vm)["power_state"].lower())
            db.update("VM", vm, resident_on=dest, scheduled_to_be_resident_on=NULL_REF)
    finally:
        if db.exists("VM", vm) and db.get("VM", vm)["scheduled_to_be_resident_on"] != NULL_REF:
            db.update("VM", vm, scheduled_to_be_resident_on=NULL_REF)
    world.update_memory(pool)


EVACUATION_BATCH = 10
"""xapi's evacuation_batch_size default (xapi_globs.ml:1025): how many VMs host.evacuate migrates at once."""


def evacuate(world: "World", pool: "SimPool", host_ref: str) -> None:
    """host.evacuate (xapi_host.ml:623-776): fail with the first plan error before moving anything, migrate
    each VM, ignore VM_BAD_POWER_STATE (the VM stopped meanwhile), re-raise other errors. It does NOT
    disable the host (message_forwarding.ml:3668-3676)."""
    with pool.db.lock:
        targets, errors = evacuation_plan(world, pool, host_ref)
    if errors:
        raise XapiError(*next(iter(errors.values())))
    # xapi_host.ml:749-764: the VMs migrate in parallel batches of evacuation_batch_size (10, xapi_globs.ml:1025)
    failed: list[XapiError] = []

    def move(vm: str, dest: str) -> None:
        try:
            migrate(world, pool, vm, dest)
        except XapiError as exc:
            if exc.code != "VM_BAD_POWER_STATE":
                failed.append(exc)
    moves = list(targets.items())
    for start in range(0, len(moves), EVACUATION_BATCH):
        batch = [threading.Thread(target=move, args=m) for m in moves[start:start + EVACUATION_BATCH]]
        for t in batch:
            t.start()
        for t in batch:
            t.join()
        if failed:
            raise failed[0]
    with pool.db.lock:
        left = [v for v in pool.db.find("VM", resident_on=host_ref) if is_real_vm(pool.db.get("VM", v))
                and pool.db.get("VM", v)["power_state"] in ("Running", "Paused")]
    if left:
        raise XapiError("INTERNAL_ERROR", f"evacuate: {len(left)} VMs are still resident on {host_ref}")


def set_power(world: "World", pool: "SimPool", vm: str, state: str, host: str = NULL_REF) -> None:
    pool.db.update("VM", vm, power_state=state, resident_on=host if state in ("Running", "Paused") else NULL_REF)
    world.update_memory(pool)


def vm_halt_all_on(world: "World", pool: "SimPool", h: "SimHost") -> None:
    """prepare_for_poweroff (xapi_host_helpers.ml:67-102; vm_evacuation.ml): VMs still resident are evacuated
    where the plan allows (moved at once here), the rest shut down. dom0 stays resident_on its host."""
    db = pool.db
    if not db.exists("host", h.ref):
        return
    targets, _ = evacuation_plan(world, pool, h.ref)
    for vm, dest in targets.items():
        if vm not in world.migration_failures:
            db.update("VM", vm, resident_on=dest)
    world.update_memory(pool)
    for vm in db.find("VM", resident_on=h.ref):
        if not db.get("VM", vm)["is_control_domain"]:
            set_power(world, pool, vm, "Halted")
