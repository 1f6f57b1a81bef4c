"""The simulator's pinned VMs, running tasks and slow PBD.plug (simulator/devices.py, docs/xapi.md "Pinned VMs,
running tasks, slow PBD.plug"), through the real xenapi package over the wire (the lab's XenApiDriver)."""

from __future__ import annotations

import time

import pytest

from labs import POOL
from provisioner.coordinator import pools
from provisioner.simulator import devices
from provisioner.xapi import XapiError, XapiUnreachable


def user_vm(lab, i: int) -> str:
    db, host = lab.world.pools[POOL].db, lab.world.pools[POOL].hosts[i].ref
    return next(r for r in db.find("VM", resident_on=host) if not db.get("VM", r)["is_control_domain"])


@pytest.mark.parametrize("kind,code", [(devices.PCI, "VM_HAS_PCI_ATTACHED"), (devices.VGPU, "VM_HAS_VGPU"),
                                       (devices.SRIOV, "VM_HAS_SRIOV_VIF")])
def test_a_pinned_vm_blocks_evacuation_and_cannot_migrate(lab, kind, code):
    pool = lab.world.pools[POOL]
    vm, host, other = user_vm(lab, 1), pool.hosts[1].ref, pool.hosts[2].ref
    devices.pin_vm(pool, vm, kind)
    assert lab.driver.evacuation_blockers(host) == {vm: [code, vm]}
    with pytest.raises(XapiError) as exc:
        lab.driver.assert_can_evacuate(host)
    assert exc.value.details == ["CANNOT_EVACUATE_HOST", f"{code},{vm}"]
    with pytest.raises(XapiError) as exc:
        lab.driver.call("VM.pool_migrate", vm, other, {"live": "true"})
    assert exc.value.details == [code, vm]
    record = lab.driver.call("VM.get_record", vm)
    assert "pool_migrate" not in record["allowed_operations"] and "suspend" not in record["allowed_operations"]
    assert "clean_shutdown" in record["allowed_operations"]
    found = lab.driver.pinning_devices()
    assert list(found) == [vm]
    assert {devices.PCI: "PCI 0000:3b:00.0", devices.VGPU: "vGPU", devices.SRIOV: "SR-IOV VIF on SR-IOV eth1"}[kind] \
        in found[vm][0]
    lab.driver.assert_can_evacuate(pool.hosts[2].ref)  # the other hosts are not affected


def test_a_pinned_vm_on_a_pool_of_one_is_no_hosts_available_first(tmp_path):
    """xapi_host.ml:327-335: with no target host every VM gets NO_HOSTS_AVAILABLE before any other check."""
    from labs import make_lab, stop_lab
    lab = make_lab(tmp_path, hosts=1)
    try:
        vm = user_vm(lab, 0)
        devices.pin_vm(lab.world.pools[POOL], vm, devices.PCI)
        assert lab.driver.evacuation_blockers(lab.world.pools[POOL].hosts[0].ref) == {vm: ["NO_HOSTS_AVAILABLE", vm]}
    finally:
        stop_lab(lab)


def test_running_tasks_lists_pending_tasks_only(lab):
    pool = lab.world.pools[POOL]
    export = devices.start_task(lab.world, pool, "VM.export", description="vm1 nightly")
    done = devices.start_task(lab.world, pool, "Async.VM.snapshot")
    devices.finish_task(lab.world, pool, done)
    found = lab.driver.running_tasks()
    assert [(t.ref, t.name, t.description) for t in found] == [(export, "VM.export", "vm1 nightly")]
    assert found[0].created.endswith("Z")


def test_a_slow_pbd_plug_outlives_a_sync_call_and_succeeds_as_a_task(lab):
    pool = lab.world.pools[POOL]
    db = pool.db
    shared = db.find("SR", name_label="NFS storage")[0]
    pbd = db.find("PBD", SR=shared, host=pool.hosts[1].ref)[0]
    devices.slow_plug(lab.world, shared, 1800.0)  # 30 sim minutes: 3 s real at the lab's x600
    db.update("PBD", pbd, currently_attached=False)
    short = pools.connect(lab.store, POOL, timeout=1)
    try:
        with pytest.raises(XapiUnreachable):  # a sync call with a short socket timeout reports nothing useful
            short.call("PBD.plug", pbd)
        db.update("PBD", pbd, currently_attached=False)  # the sync plug went on in xapi: start again
        start = time.monotonic()
        short.plug_pbd(pbd, timeout=60)  # Async.PBD.plug polled: same 1 s socket timeout, waits for the attach
        assert time.monotonic() - start >= 2.5
        assert db.get("PBD", pbd)["currently_attached"]
        assert [m for _, m, _ in lab.world.call_log if m.endswith("PBD.plug")][-1] == "Async.PBD.plug"
    finally:
        short.close()


def test_a_plug_task_over_its_timeout_is_cancelled_and_reported(lab):
    pool = lab.world.pools[POOL]
    shared = pool.db.find("SR", name_label="NFS storage")[0]
    pbd = pool.db.find("PBD", SR=shared, host=pool.hosts[1].ref)[0]
    devices.slow_plug(lab.world, shared, 3000.0)  # 5 s real
    with pytest.raises(XapiUnreachable, match="PBD.plug still running"):
        lab.driver.plug_pbd(pbd, timeout=0.5)
