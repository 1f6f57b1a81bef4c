"""Host-bound devices, running tasks and slow storage of the simulated XAPI (docs/xapi.md "Pinned VMs, running
tasks, slow PBD.plug"): what makes a VM impossible to migrate, what a backup looks like in the task list, and an
SR whose PBD.plug takes minutes.

A VM is pinned to its host by a passed-through PCI device (VM.attached_PCIs), a vGPU (VM.VGPUs: VGPU.VM) or a VIF on
an SR-IOV network (a network whose PIF is the logical PIF of a network_sriov). xapi refuses pool_migrate / suspend
for the first two in get_operation_error (xapi_vm_lifecycle.ml:653-672, check_vgpu :329-341) and names SR-IOV VIFs
in its agility check (agility.ml:139-146, VM_HAS_SRIOV_VIF [vm]); host.get_vms_which_prevent_evacuation and
host.assert_can_evacuate report them (xapi_host.ml:377-389), the three codes Xen Orchestra treats as pinned
(xo-server xapi/mixins/pool.mjs PINNED_VM_ERROR_CODES). Order as xapi checks them: PCI, vGPU, then SR-IOV.

Imports nothing of vm_ops (vm_ops imports this).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .db import NULL_REF, xapi_datetime

if TYPE_CHECKING:
    from .hosts import SimPool
    from .world import World

PCI, VGPU, SRIOV = "pci", "vgpu", "sriov"


def sriov_network(pool: "SimPool", network: str) -> bool:
    """xapi_network_sriov_helpers.ml:186-193 is_sriov_network: the network's first PIF is (a VLAN on) the logical PIF
    of a network_sriov (PIF.sriov_logical_PIF_of not empty)."""
    db = pool.db
    pifs = db.find("PIF", network=network)
    return bool(pifs) and bool(db.get("PIF", pifs[0])["sriov_logical_PIF_of"])


def pinned_error(pool: "SimPool", vm: str) -> list[str] | None:
    """[code, vm] when the VM cannot leave its host (pool_migrate, and so evacuation), else None."""
    db = pool.db
    rec = db.get("VM", vm)
    if rec["attached_PCIs"]:
        return ["VM_HAS_PCI_ATTACHED", vm]
    if db.find("VGPU", VM=vm):  # check_vgpu: no vGPU type here is suspendable (no NVIDIA migration metadata)
        return ["VM_HAS_VGPU", vm]
    if any(sriov_network(pool, db.get("VIF", vif)["network"]) for vif in db.find("VIF", VM=vm)):
        return ["VM_HAS_SRIOV_VIF", vm]
    return None


def pin_vm(pool: "SimPool", vm: str, kind: str = PCI) -> str:
    """Give the VM a host-bound device on the host it runs on (or the master): a passed-through GPU, a vGPU, or a
    VIF on a new SR-IOV network over the host's eth1. Returns the device's ref (PCI, VGPU or VIF)."""
    db = pool.db
    with db.lock:
        host = db.get("VM", vm)["resident_on"]
        host = host if host != NULL_REF else pool.master.ref
        if kind == PCI:
            pci = db.create("PCI", class_name="VGA compatible controller", vendor_name="NVIDIA Corporation",
                            device_name="GA102GL [A40]", pci_id="0000:3b:00.0", host=host)
            db.update("VM", vm, attached_PCIs=db.get("VM", vm)["attached_PCIs"] + [pci],
                      other_config={**db.get("VM", vm)["other_config"], "pci": "0/0000:3b:00.0"})
            return pci
        if kind == VGPU:
            return db.create("VGPU", VM=vm, device="0", currently_attached=True, resident_on=host)
        if kind == SRIOV:
            physical = db.create("PIF", device="eth1", MAC="02:00:00:00:51:01", host=host,
                                 network=db.create("network", name_label="eth1 physical", bridge="xenbr1"))
            net = db.create("network", name_label="SR-IOV eth1", bridge="")
            logical = db.create("PIF", device="eth1", host=host, network=net, physical=False)
            sriov = db.create("network_sriov", physical_PIF=physical, logical_PIF=logical,
                              configuration_mode="sysfs")
            db.update("PIF", physical, sriov_physical_PIF_of=[sriov])
            db.update("PIF", logical, sriov_logical_PIF_of=[sriov])
            return db.create("VIF", VM=vm, network=net, device="1", MAC="02:00:00:00:51:02")
        raise ValueError(f"unknown device kind {kind!r}")


def start_task(world: "World", pool: "SimPool", name_label: str, *, description: str = "") -> str:
    """A pending task as another client's long operation leaves it in the task list: an export over HTTP is
    `VM.export` (export.ml:937,989 with_context "VM.export"), an Async call `Async.VM.snapshot`, Xen Orchestra's
    own `VM export` (@xen-orchestra/xapi vm.mjs:535) or `Exporting content of VDI ...` (vdi.mjs:241-255)."""
    return pool.db.create("task", name_label=name_label, name_description=description, status="pending",
                          created=xapi_datetime(world.clock.now()), resident_on=pool.master.ref)


def finish_task(world: "World", pool: "SimPool", task: str) -> None:
    pool.db.update("task", task, status="success", progress=1.0, finished=xapi_datetime(world.clock.now()))


def slow_plug(world: "World", sr: str, seconds: float) -> None:
    """Every PBD.plug of this SR takes `seconds` (sim) before it attaches: an iSCSI / FC login and multipath scan."""
    world.pbd_plug_delays[sr] = seconds
