"""The simulated XAPI database: one field table per class, refs, a generation counter for event.from."""

from __future__ import annotations

import copy
import threading
import uuid as uuidlib
import xmlrpc.client

from .errors import XapiError

NULL_REF = "OpaqueRef:NULL"  # wire-protocol.md:494-517: the null reference


def new_ref() -> str:
    return f"OpaqueRef:{uuidlib.uuid4()}"


def xapi_datetime(ts: float) -> xmlrpc.client.DateTime:
    """XAPI sends datetimes as dateTime.iso8601 in UTC, e.g. 20260101T00:00:00Z (docs/xapi.md "Wire format")."""
    import time
    return xmlrpc.client.DateTime(time.strftime("%Y%m%dT%H:%M:%SZ", time.gmtime(ts)))


EPOCH = xmlrpc.client.DateTime("19700101T00:00:00Z")

# One field table per class: wire field name -> default. int64 fields are decimal strings, as
# ocaml-rpc encodes them (docs/xapi.md "Wire format"); the generic getters and event snapshots are built from here.
FIELDS: dict[str, dict] = {
    "pool": {"uuid": "", "name_label": "", "name_description": "", "master": NULL_REF, "default_SR": NULL_REF,
             "ha_enabled": False, "wlb_enabled": False, "other_config": {}, "ha_host_failures_to_tolerate": "0",
             "ha_statefiles": [],
             "vswitch_controller": "",  # datamodel_pool.ml (deprecated; XenCenter's VSwitchControllerCheck)
             # update repositories (datamodel_pool.ml; simulator/updates.py)
             "repositories": [], "last_update_sync": EPOCH, "update_sync_enabled": False},
    "host": {"uuid": "", "name_label": "", "name_description": "", "hostname": "", "address": "",
             "enabled": True, "software_version": {}, "API_version_major": "2", "API_version_minor": "15",
             "API_version_vendor": "XenSource", "metrics": NULL_REF, "resident_VMs": [], "PIFs": [], "PBDs": [],
             "other_config": {}, "power_on_mode": "", "power_on_config": {}, "allowed_operations": [],
             "current_operations": {}, "control_domain": NULL_REF, "memory_overhead": "0",
             "edition": "", "license_params": {}, "updates": [],  # updates: Pool_update refs (xapi_pool.ml:346)
             "ssl_legacy": False, "secure_boot": False, "tags": [],  # docs/prechecks.md LEGACY_SSL, SECURE_BOOT
             # repository updates (datamodel_host.ml; simulator/updates.py)
             "pending_guidances": [], "pending_guidances_recommended": [], "pending_guidances_full": [],
             "last_software_update": EPOCH, "latest_synced_updates_applied": "unknown", "last_update_hash": ""},
    "host_metrics": {"uuid": "", "live": False, "memory_total": "0", "memory_free": "0",
                     "last_updated": EPOCH, "other_config": {}},
    "PIF": {"uuid": "", "device": "eth0", "MAC": "", "host": NULL_REF, "network": NULL_REF, "management": False,
            "physical": True, "IP": "", "netmask": "", "gateway": "", "DNS": "", "ip_configuration_mode": "None",
            "VLAN": "-1", "currently_attached": True, "other_config": {},
            "sriov_physical_PIF_of": [], "sriov_logical_PIF_of": []},  # network_sriov refs (devices.py)
    "network": {"uuid": "", "name_label": "", "bridge": "", "PIFs": [], "other_config": {}},
    "VM": {"uuid": "", "name_label": "", "name_description": "", "power_state": "Halted",
           "resident_on": NULL_REF, "scheduled_to_be_resident_on": NULL_REF, "affinity": NULL_REF, "is_a_template": False, "is_a_snapshot": False,
           "snapshot_of": NULL_REF, "is_control_domain": False, "VBDs": [], "guest_metrics": NULL_REF,
           "memory_static_max": "0", "memory_dynamic_max": "0", "memory_target": "0", "VCPUs_max": "1",
           "other_config": {}, "allowed_operations": [], "current_operations": {}, "domid": "-1",
           "ha_restart_priority": "", "suspend_VDI": NULL_REF, "snapshots": [],
           # an HVM guest; a PV one has HVM_boot_policy "" (XenCenter VM.IsHVM) and domain_type "pv"
           "HVM_boot_policy": "BIOS order", "domain_type": "hvm",
           "attached_PCIs": [], "VGPUs": [], "VIFs": []},  # VGPUs, VIFs derived (registry.DERIVED)
    # datamodel.ml:7732 PV_drivers_detected defaults to false; PV_drivers_up_to_date follows it (xapi_xenops.ml:2426)
    "VM_guest_metrics": {"uuid": "", "PV_drivers_version": {}, "PV_drivers_up_to_date": False,
                         "PV_drivers_detected": False, "os_version": {}, "other": {}, "live": True},
    "VBD": {"uuid": "", "VM": NULL_REF, "VDI": NULL_REF, "type": "Disk", "empty": False, "userdevice": "0",
            "mode": "RW", "bootable": False, "currently_attached": True, "allowed_operations": [],
            "other_config": {}},
    "VDI": {"uuid": "", "name_label": "", "SR": NULL_REF, "VBDs": [], "virtual_size": "0", "type": "user",
            "read_only": False, "is_tools_iso": False, "other_config": {}},
    "SR": {"uuid": "", "name_label": "", "type": "lvm", "content_type": "user", "shared": False,
           "is_tools_sr": False, "PBDs": [], "VDIs": [], "physical_size": "0", "other_config": {}},
    "PBD": {"uuid": "", "host": NULL_REF, "SR": NULL_REF, "currently_attached": True, "device_config": {},
            "other_config": {}},
    # host-bound devices (devices.py, docs/xapi.md "Pinned VMs, running tasks, slow PBD.plug")
    "PCI": {"uuid": "", "class_name": "", "vendor_name": "", "device_name": "", "host": NULL_REF, "pci_id": "",
            "other_config": {}},
    "VGPU": {"uuid": "", "VM": NULL_REF, "GPU_group": NULL_REF, "type": NULL_REF, "device": "0",
             "currently_attached": False, "resident_on": NULL_REF, "other_config": {}},
    "VIF": {"uuid": "", "VM": NULL_REF, "network": NULL_REF, "device": "0", "MAC": "", "currently_attached": True,
            "other_config": {}},
    "network_sriov": {"uuid": "", "physical_PIF": NULL_REF, "logical_PIF": NULL_REF, "requires_reboot": False,
                      "configuration_mode": "unknown"},
    "pool_update": {"uuid": "", "name_label": "", "name_description": "", "version": "",
                    "enforce_homogeneity": True, "other_config": {}},  # datamodel_pool_update.ml
    # datamodel_repository.ml:190-260 (origin: remote | bundle | remote_pool)
    "Repository": {"uuid": "", "name_label": "", "name_description": "", "binary_url": "", "source_url": "",
                   "update": False, "hash": "", "gpgkey_path": "", "origin": "remote", "certificate": ""},
    "task": {"uuid": "", "name_label": "", "name_description": "", "status": "pending", "progress": 0.0,
             "result": "", "error_info": [], "created": EPOCH, "finished": EPOCH, "resident_on": NULL_REF,
             "type": "", "other_config": {}, "allowed_operations": []},
}

# Class names as clients spell them, lower-cased for event.from subscriptions (xapi_event.ml: lower case).
CLASSES = {name.lower(): name for name in FIELDS}


class Db:
    """Records per class, with `modified` generations so event.from can report add/mod/del (docs/xapi.md
    "Tasks and events")."""

    def __init__(self):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.gen = 0
        self.tables: dict[str, dict[str, dict]] = {cls: {} for cls in FIELDS}
        self.created: dict[str, int] = {}    # ref -> generation of its creation
        self.modified: dict[str, int] = {}   # ref -> generation of its last write
        self.deleted: list[tuple[int, str, str]] = []  # (generation, class, ref)

    def _bump(self) -> int:
        self.gen += 1
        self.cond.notify_all()
        return self.gen

    def create(self, cls: str, ref: str | None = None, **fields) -> str:
        with self.lock:
            unknown = set(fields) - set(FIELDS[cls])
            if unknown:
                raise KeyError(f"{cls} has no fields {sorted(unknown)}")
            rec = copy.deepcopy(FIELDS[cls])
            rec.update(copy.deepcopy(fields))
            rec["uuid"] = rec["uuid"] or str(uuidlib.uuid4())
            ref = ref or new_ref()
            self.tables[cls][ref] = rec
            self.created[ref] = self.modified[ref] = self._bump()
            return ref

    def exists(self, cls: str, ref: str) -> bool:
        return ref in self.tables[cls]

    def get(self, cls: str, ref: str) -> dict:
        """The live record (callers hold db.lock when they mutate it; use set/update to bump generations)."""
        try:
            return self.tables[cls][ref]
        except KeyError:
            raise XapiError("HANDLE_INVALID", cls, ref) from None  # datamodel_errors.ml:115-156

    def record(self, cls: str, ref: str) -> dict:
        with self.lock:
            return copy.deepcopy(self.get(cls, ref))

    def update(self, cls: str, ref: str, **fields) -> None:
        with self.lock:
            rec = self.get(cls, ref)
            rec.update(copy.deepcopy(fields))
            self.modified[ref] = self._bump()

    def touch(self, cls: str, ref: str) -> None:
        with self.lock:
            self.get(cls, ref)
            self.modified[ref] = self._bump()

    def delete(self, cls: str, ref: str) -> None:
        with self.lock:
            self.get(cls, ref)
            del self.tables[cls][ref]
            self.created.pop(ref, None)
            self.modified.pop(ref, None)
            self.deleted.append((self._bump(), cls, ref))

    def all(self, cls: str) -> list[str]:
        with self.lock:
            return list(self.tables[cls])

    def find(self, cls: str, **match) -> list[str]:
        with self.lock:
            return [r for r, rec in self.tables[cls].items() if all(rec.get(k) == v for k, v in match.items())]

    def by_uuid(self, cls: str, uuid: str) -> str:
        with self.lock:
            for ref, rec in self.tables[cls].items():
                if rec["uuid"] == uuid:
                    return ref
        raise XapiError("UUID_INVALID", cls, uuid)

    def token(self) -> str:
        # Tokens look like "%020d,%020d" (DB generation, message generation) and compare lexically (2.8).
        return "%020d,%020d" % (self.gen, 0)

    def changes_since(self, since: int, classes: set[str] | None, refs: set[str], view=None) -> list[dict]:
        """Events after generation `since`; several changes to one object collapse into one (2.8)."""
        events = []
        with self.lock:
            if classes is not None and not classes:  # objects only ("task/<ref>"): look them up, not every table
                named = ((CLASSES[c], r) for c, _, r in (s.partition("/") for s in refs))
                rows = [(cls, ref, self.tables[cls][ref]) for cls, ref in named if ref in self.tables[cls]]
            else:
                rows = [(cls, ref, rec) for cls, table in self.tables.items() for ref, rec in table.items()]
            for cls, ref, rec in rows:
                gen = self.modified[ref]
                if gen <= since or not _wanted(cls, ref, classes, refs):
                    continue
                op = "add" if self.created[ref] > since else "mod"
                events.append({"id": str(gen), "timestamp": "", "class": cls.lower(), "operation": op,
                               "ref": ref, "snapshot": view(cls, ref) if view else copy.deepcopy(rec)})
            for gen, cls, ref in self.deleted:
                if gen > since and _wanted(cls, ref, classes, refs):
                    events.append({"id": str(gen), "timestamp": "", "class": cls.lower(), "operation": "del",
                                   "ref": ref})
        events.sort(key=lambda e: int(e["id"]))
        return events


def _wanted(cls: str, ref: str, classes: set[str] | None, refs: set[str]) -> bool:
    return classes is None or cls.lower() in classes or f"{cls.lower()}/{ref}" in refs
