"""The VM and PBD calls of XenApiDriver (what EVACUATE, RESTORE, STORAGE and PREPARE read and do), over its `call`
and `task`. No XenAPI here: every call goes through XenApiDriver's funnel of errors (XapiError, XapiUnreachable).
"""

from __future__ import annotations

from provisioner.xapi_model import CdInfo, PbdInfo, VmInfo

NULL_REF = "OpaqueRef:NULL"


class VmCalls:
    """VMs with their CDs and guest tools, PBDs, and the VM operations (Async tasks)."""

    def vms(self) -> list[VmInfo]:
        """Every real VM with its CDs, auto_poweron and guest tools state (five get_all_records calls)."""
        vbds, vdis = self.call("VBD.get_all_records"), self.call("VDI.get_all_records")
        srs, metrics = self.call("SR.get_all_records"), self.call("VM_guest_metrics.get_all_records")
        found = []
        for ref, rec in self.call("VM.get_all_records").items():
            if rec.get("is_a_template") or rec.get("is_a_snapshot") or rec.get("is_control_domain"):
                continue
            cds = []
            for vbd_ref in rec.get("VBDs", []):
                vbd = vbds.get(vbd_ref, {})
                if vbd.get("type") != "CD" or vbd.get("empty") or vbd.get("VDI", NULL_REF) == NULL_REF:
                    continue
                vdi = vdis.get(vbd["VDI"], {})
                sr = srs.get(vdi.get("SR", NULL_REF), {})
                cds.append(CdInfo(vbd_ref, vbd.get("uuid", ""), vdi.get("name_label", vbd["VDI"]),
                                  bool(sr.get("is_tools_sr"))))
            gm = metrics.get(rec.get("guest_metrics", NULL_REF))
            pv = (gm or {}).get("PV_drivers_version", {})
            version = ".".join(str(pv.get(k, "0")) for k in ("major", "minor", "micro")) if pv.get("major") else None
            found.append(VmInfo(ref, rec["uuid"], rec["name_label"], rec["power_state"],
                                rec.get("resident_on", NULL_REF), tuple(rec.get("allowed_operations", [])),
                                rec.get("other_config", {}).get("auto_poweron") == "true", tuple(cds), version,
                                bool(gm and gm.get("PV_drivers_detected")),
                                bool(gm and gm.get("PV_drivers_up_to_date")),
                                int(rec.get("memory_target") or 0) + int(rec.get("memory_overhead") or 0)))
        return sorted(found, key=lambda v: (v.name, v.uuid))

    def pbds(self) -> list[PbdInfo]:
        srs = self.call("SR.get_all_records")
        return [PbdInfo(ref, rec["host"], srs.get(rec["SR"], {}).get("name_label", rec["SR"]),
                        bool(rec.get("currently_attached"))) for ref, rec in self.call("PBD.get_all_records").items()]

    def eject_cd(self, vbd_ref: str) -> None:
        self.task("VBD.eject", vbd_ref)

    def suspend_vm(self, vm_ref: str) -> None:
        self.task("VM.suspend", vm_ref)

    def clean_shutdown_vm(self, vm_ref: str) -> None:
        self.task("VM.clean_shutdown", vm_ref)

    def hard_shutdown_vm(self, vm_ref: str) -> None:
        self.task("VM.hard_shutdown", vm_ref)

    def resume_vm_on(self, vm_ref: str, host_ref: str) -> None:
        self.task("VM.resume_on", vm_ref, host_ref, False, False)

    def start_vm_on(self, vm_ref: str, host_ref: str, paused: bool = False) -> None:
        self.task("VM.start_on", vm_ref, host_ref, bool(paused), False)

    def migrate_vm(self, vm_ref: str, host_ref: str) -> None:
        self.task("VM.pool_migrate", vm_ref, host_ref, {"live": "true"})

    def assert_can_boot_here(self, vm_ref: str, host_ref: str) -> None:
        """XAPI's own check that the VM could run there now (memory with the reservations of migrations in flight,
        enabled, SRs): XapiError HOST_NOT_ENOUGH_FREE_MEMORY / HOST_DISABLED / VM_REQUIRES_SR ... (docs/waves.md)."""
        self.call("VM.assert_can_boot_here", vm_ref, host_ref)

    def set_auto_poweron(self, vm_ref: str, on: bool) -> None:
        """other_config:auto_poweron, as XenCenter's AutoStartEnabled fix and its unwind set it (docs/xapi.md
        "XenCenter's prechecks and their unwind")."""
        self.call("VM.remove_from_other_config", vm_ref, "auto_poweron")
        self.call("VM.add_to_other_config", vm_ref, "auto_poweron", "true" if on else "false")
