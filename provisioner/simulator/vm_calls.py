"""Handlers for VM calls of the simulated XAPI: migrate, suspend, resume, start, shutdown, snapshot
(docs/xapi.md "VM and VBD calls", "Mixed versions: rolling_upgrade_in_progress"); the operations themselves are
vm_ops.py."""

from __future__ import annotations

from . import vm_ops as vr
from .db import NULL_REF
from .errors import XapiError
from .reconnect import forward
from .registry import Call, api


def _vm(c: Call, ref: str) -> dict:
    return c.db.get("VM", ref)


def _forward_to_resident(c: Call, vm: str) -> None:
    """A VM operation runs on the VM's host (message_forwarding.ml VM.* forward_vm_op): the wait / errors of a
    member that has not reconnected (reconnect.py); before the DB lock, as it may wait."""
    resident = _vm(c, vm)["resident_on"]
    if resident != NULL_REF:
        forward(c, resident)


def _pick_host(c: Call, vm: str) -> str:
    """VM.start without a host: the most free memory among hosts where it can boot; during RPU the highest version."""
    db = c.db
    hosts = db.all("host")
    if c.world.rpu_in_progress(c.pool):
        top = max(vr.host_version(c.pool, h) for h in hosts)
        hosts = [h for h in hosts if vr.host_version(c.pool, h) == top]
    last = None
    for h in sorted(hosts, key=lambda r: -vr.free_memory(c.pool, r)):
        try:
            vr.assert_can_boot_here(c.world, c.pool, vm, h)
            return h
        except XapiError as exc:
            last = exc
    raise last or XapiError("NO_HOSTS_AVAILABLE")


@api("VM.pool_migrate", 4)
def vm_pool_migrate(c: Call, vm, host, options):
    vr.assert_rpu_allowed(c.world, c.pool, "pool_migrate")
    if _vm(c, vm)["resident_on"] != NULL_REF:  # forwarded to the host it leaves (reconnect.py)
        forward(c, _vm(c, vm)["resident_on"])
    vr.migrate(c.world, c.pool, vm, host)
    return ""


@api("VM.assert_can_boot_here", 3)
def vm_assert_can_boot_here(c: Call, vm, host):
    """xapi_vm.ml assert_can_boot_here -> xapi_vm_helpers.ml:682-705 with the memory check: what a migration or a
    start onto `host` would meet first (HOST_NOT_ENOUGH_FREE_MEMORY, HOST_DISABLED, VM_REQUIRES_SR, ...)."""
    with c.db.lock:
        _vm(c, vm)
        c.db.get("host", host)
        vr.assert_can_boot_here(c.world, c.pool, vm, host)
    return ""


@api("VM.suspend", 2)
def vm_suspend(c: Call, vm):
    """datamodel_vm.ml:1342-1356: Running, and PV drivers are needed (VM_MISSING_PV_DRIVERS [vm])."""
    _forward_to_resident(c, vm)
    with c.db.lock:
        rec = _vm(c, vm)
        vr.assert_power_state(vm, rec, "Running")
        if not vr._has_pv(c.pool, rec):
            raise XapiError("VM_MISSING_PV_DRIVERS", vm)
        vr.set_power(c.world, c.pool, vm, "Suspended")
    return ""


def _target_host(c: Call, vm: str, host: str | None) -> str:
    """The host a resume/start lands on: picked by xapi when not given; a given one must exist, be of the highest
    version during RPU and able to boot the VM (shared by resume_on and start_on)."""
    if host is None:
        return _pick_host(c, vm)
    c.db.get("host", host)
    vr.assert_highest_version(c.world, c.pool, host)
    vr.assert_can_boot_here(c.world, c.pool, vm, host)
    return host


def _resume(c: Call, vm: str, host: str | None) -> str:
    """datamodel_vm.ml:1377-1440; during RPU resume_on needs the highest version (message_forwarding.ml:2556-2559)."""
    with c.db.lock:
        vr.assert_power_state(vm, _vm(c, vm), "Suspended")
        host = _target_host(c, vm, host)
        vr.set_power(c.world, c.pool, vm, "Running", host)
    return ""


@api("VM.resume", 4)
def vm_resume(c: Call, vm, start_paused, force):
    return _resume(c, vm, None)


@api("VM.resume_on", 5)
def vm_resume_on(c: Call, vm, host, start_paused, force):
    c.db.get("host", host)
    forward(c, host)  # runs on that host (reconnect.py)
    return _resume(c, vm, host)


def _start(c: Call, vm: str, host: str | None, paused) -> str:
    """datamodel_vm.ml:624-660,1079-1105: Halted; start_on needs the host enabled (HOST_DISABLED [host]) and,
    during RPU, the highest version (message_forwarding.ml:2049-2052)."""
    with c.db.lock:
        vr.assert_power_state(vm, _vm(c, vm), "Halted")
        host = _target_host(c, vm, host)
        vr.set_power(c.world, c.pool, vm, "Paused" if paused in (True, "true") else "Running", host)
    return ""


@api("VM.start", 4)
def vm_start(c: Call, vm, start_paused, force):
    return _start(c, vm, None, start_paused)


@api("VM.start_on", 5)
def vm_start_on(c: Call, vm, host, start_paused, force):
    c.db.get("host", host)
    forward(c, host)  # runs on that host (reconnect.py)
    return _start(c, vm, host, start_paused)


@api("VM.clean_shutdown", 2)
def vm_clean_shutdown(c: Call, vm):
    _forward_to_resident(c, vm)
    with c.db.lock:
        vr.assert_power_state(vm, _vm(c, vm), "Running")  # xapi_vm_lifecycle.ml:32-92
        vr.set_power(c.world, c.pool, vm, "Halted")
    return ""


@api("VM.hard_shutdown", 2)
def vm_hard_shutdown(c: Call, vm):
    with c.db.lock:
        vr.assert_power_state(vm, _vm(c, vm), "Running", "Paused", "Suspended")
        vr.set_power(c.world, c.pool, vm, "Halted")
    return ""


@api("VM.power_state_reset", 2)
def vm_power_state_reset(c: Call, vm):
    """Forget a VM on a dead host (needed before host.destroy, docs/xapi.md "Host lifecycle calls")."""
    with c.db.lock:
        vr.set_power(c.world, c.pool, vm, "Halted")
    return ""


@api("VM.snapshot", 3)
def vm_snapshot(c: Call, vm, name):
    """Snapshot is outside rpu_allowed_vm_operations: NOT_SUPPORTED_DURING_UPGRADE [] during RPU (2.9)."""
    vr.assert_rpu_allowed(c.world, c.pool, "snapshot")
    with c.db.lock:
        rec = _vm(c, vm)
        return c.db.create("VM", name_label=name, is_a_snapshot=True, snapshot_of=vm,
                           memory_target=rec["memory_target"], memory_static_max=rec["memory_static_max"])


@api("VM.checkpoint", 3)
def vm_checkpoint(c: Call, vm, name):
    vr.assert_rpu_allowed(c.world, c.pool, "checkpoint")
    return vm_snapshot(c, vm, name)
