"""XenApiDriver's calls for the run-time prechecks (coordinator/prechecks_vms.py, coordinator/pinned.py): the pool's
running tasks, host.assert_can_evacuate, what pins a VM to its host, and PBD.plug as an Async task.

No XenAPI here: the mixin calls through XenApiDriver's `call` and `task` (docs/xapi.md "Pinned VMs, running tasks,
slow PBD.plug").
"""

from __future__ import annotations

from dataclasses import dataclass

PBD_PLUG_TIMEOUT = 300.0
"""Seconds an Async.PBD.plug may run before it is cancelled and reported: an iSCSI / FC attach (login, multipath
scan, LVM activation) takes minutes on a real array, far over the 30 s socket timeout of a synchronous call."""

PINNED_CODES = ("VM_HAS_PCI_ATTACHED", "VM_HAS_VGPU", "VM_HAS_SRIOV_VIF")
"""Evacuation blockers that mean the VM cannot leave its host at all (Xen Orchestra's PINNED_VM_ERROR_CODES)."""

NULL_REF = "OpaqueRef:NULL"


@dataclass(frozen=True)
class TaskInfo:
    """A pending XAPI task (another client's long operation, or ours)."""

    ref: str
    name: str  # name_label: the call ("Async.VM.snapshot", "VM.export") or the client's own label
    description: str
    progress: float
    created: str  # ISO 8601 as XAPI sends it ("20260101T00:00:00Z")


class CheckCalls:
    """Over XenApiDriver's `call` and `task` only."""

    pbd_plug_timeout = PBD_PLUG_TIMEOUT

    def running_tasks(self) -> list[TaskInfo]:
        """Every task still running: pending, or cancelling (it has not stopped yet); task.get_all_records: XAPI
        keeps each client's tasks until it destroys them."""
        found = []
        for ref, rec in self.call("task.get_all_records").items():
            if rec.get("status") not in ("pending", "cancelling"):
                continue
            found.append(TaskInfo(ref, str(rec.get("name_label", "")), str(rec.get("name_description", "")),
                                  float(rec.get("progress") or 0.0), str(rec.get("created", ""))))
        return sorted(found, key=lambda t: (t.created, t.name))

    def assert_can_evacuate(self, host_ref: str) -> None:
        """host.assert_can_evacuate: XapiError CANNOT_EVACUATE_HOST ["code,p1|code,p1"] when a VM would stop
        host.evacuate (xapi_host.ml:427-445), the one call Xen Orchestra makes right before each host (PR #10097)."""
        self.call("host.assert_can_evacuate", host_ref)

    def pinning_devices(self) -> dict[str, list[str]]:
        """VM ref -> what binds it to its host: passed-through PCI devices (VM.attached_PCIs), vGPUs (VM.VGPUs), VIFs
        on an SR-IOV network (its PIF is a network_sriov's logical PIF); VMs with none are left out."""
        pcis, vifs = self.call("PCI.get_all_records"), self.call("VIF.get_all_records")
        pifs, nets = self.call("PIF.get_all_records"), self.call("network.get_all_records")
        sriov = {p.get("network") for p in pifs.values() if p.get("sriov_logical_PIF_of")}
        found: dict[str, list[str]] = {}
        for ref, vm in self.call("VM.get_all_records").items():
            if vm.get("is_a_template") or vm.get("is_a_snapshot") or vm.get("is_control_domain"):
                continue
            what = []
            for pci in vm.get("attached_PCIs", []):
                rec = pcis.get(pci, {})
                what.append(f"PCI {rec.get('pci_id', pci)} ({rec.get('vendor_name', '')} "
                            f"{rec.get('device_name', '')})".replace(" )", ")").replace("( ", "("))
            what += ["vGPU"] * len(vm.get("VGPUs", []))
            for vif in vm.get("VIFs", []):
                net = vifs.get(vif, {}).get("network", NULL_REF)
                if net in sriov:
                    what.append(f"SR-IOV VIF on {nets.get(net, {}).get('name_label', net)}")
            if what:
                found[ref] = what
        return found

    def plug_pbd(self, pbd_ref: str, timeout: float | None = None) -> None:
        """Async.PBD.plug polled to the end (XapiUnreachable after `timeout`, default pbd_plug_timeout, with the
        task cancelled): a slow attach is waited for, not reported unplugged by a socket timeout."""
        self.task("PBD.plug", pbd_ref, timeout=self.pbd_plug_timeout if timeout is None else timeout)
