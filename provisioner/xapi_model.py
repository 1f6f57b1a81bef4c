"""What the coordinator reads of a pool through XAPI (docs/xapi.md "Fields the coordinator reads"): plain records, no
XenAPI import.

provisioner.xapi builds them (and re-exports them, so `from provisioner.xapi import HostInfo` keeps working).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostInfo:
    """What the coordinator reads of one host (docs/xapi.md "Fields the coordinator reads")."""

    ref: str
    uuid: str
    name: str
    address: str
    mac: str | None  # the management PIF's MAC: what the host network-boots with
    enabled: bool
    live: bool
    product_version: str
    build_number: str
    is_master: bool
    boot_time: str
    power_on_mode: str = ""  # "" (host.power_on refused), "wake-on-lan", "IPMI", or a custom plugin
    memory_free: int = 0  # host_metrics.memory_free, bytes: what XAPI's memory check counts free (docs/waves.md)


@dataclass(frozen=True)
class CdInfo:
    """A CD/DVD drive with a disc in it: eject it before suspending the VM, or it may not resume (docs/xapi.md
    "VM and VBD calls")."""

    vbd: str
    vbd_uuid: str
    iso: str  # the disc's VDI name_label
    tools: bool  # from the tools SR (XenCenter's ToolsCD), else an ISO (LocalCD)


@dataclass(frozen=True)
class VmInfo:
    """A real VM (not a template, snapshot or control domain; XenCenter IsRealVm) as the coordinator plans it."""

    ref: str
    uuid: str
    name: str
    power_state: str  # Running / Paused / Suspended / Halted
    resident_on: str  # host ref, NULL_REF unless Running or Paused
    allowed_operations: tuple[str, ...]
    auto_poweron: bool  # other_config:auto_poweron = "true"
    cds: tuple[CdInfo, ...]
    tools_version: str | None  # VM_guest_metrics PV_drivers_version major.minor.micro; None: no guest metrics
    tools_detected: bool  # VM_guest_metrics PV_drivers_detected; False with no guest metrics
    # PV_drivers_up_to_date: what XenCenter reads (VM.cs GetVirtualizationStatus); deprecated since Dundee and set
    # to PV_drivers_detected by xapi (datamodel.ml:7625-7638, xapi_xenops.ml:2426), never a version comparison
    tools_up_to_date: bool = False
    memory: int = 0  # memory_target + memory_overhead, bytes: what a migration needs on its target (docs/waves.md)


@dataclass(frozen=True)
class PbdInfo:
    ref: str
    host: str
    sr: str  # the SR's name_label
    attached: bool


@dataclass(frozen=True)
class LocalDisk:
    """A VDI on a host's local SR (its PBDs only on that host): what a fresh install of the host wipes.

    host.destroy removes only the host record (xapi_host.ml destroy): this VDI record stays and points at nothing.
    """

    sr: str  # the SR's name_label
    sr_uuid: str
    vdi: str  # the VDI's name_label
    vdi_uuid: str
    size: int  # virtual_size, bytes
    role: str  # "disk", "suspend image", "snapshot disk" or "unattached"
    vm: str = ""  # the VM it belongs to ("" for an unattached VDI); a snapshot's disk names the snapshot VM
    vm_uuid: str = ""
    power_state: str = ""  # the VM's power state (Halted / Suspended; a snapshot is Halted)
    snapshot_of: str = ""  # for a snapshot's disk: the name of the VM it is a snapshot of


@dataclass(frozen=True)
class JoinFacts:
    """What pool.join compares between a joining host and the pool's master (xapi_pool.ml pre_join_checks)."""

    product_version: str
    platform_version: str
    build_number: str
    xapi: str  # software_version xapi (homogeneity, with git_id)
    git_id: str
    api_version: str  # "major.minor"
    db_schema: str
    edition: str  # host.edition (the licence check)
    updates: tuple[str, ...]  # name_labels of the Pool_updates with enforce_homogeneity applied on the host
    management_vlan: int  # the management PIF's VLAN tag, -1 untagged
    network_backend: str  # software_version network_backend, "bridge" when absent (as xapi reads it)
