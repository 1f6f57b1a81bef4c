"""Plan-level prechecks about VMs and what runs on the pool (docs/prechecks.md "Pinned VMs", "Backups running"):
VMs pinned to their host, and backup / export / snapshot tasks running. Reads only.

PINNED_VM: a VM with a passed-through PCI device, a vGPU or an SR-IOV VIF cannot leave its host; XAPI's evacuation
plan names it with VM_HAS_PCI_ATTACHED / VM_HAS_VGPU / VM_HAS_SRIOV_VIF (xapi_checks.PINNED_CODES, the codes Xen
Orchestra's rolling update treats as pinned, PR #10125). Consent level: with consent (`--consent PINNED_VM`) the run
shuts each one down right before its host's evacuation and starts it again on the same host after the upgrade
(pinned.py). BACKUP_RUNNING: an export, snapshot or backup in progress would be cut by a reboot or refused during
the rolling upgrade (VM.snapshot is not in rpu_allowed_vm_operations); Xen Orchestra refuses a rolling update while
a backup job runs on the pool (xo-server api/_backupGuard.mjs). Error level: wait for it to end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from provisioner.coordinator.checks import CONSENT, ERROR, Check
from provisioner.xapi import HostInfo, VmInfo, XapiError, XapiUnreachable
from provisioner.xapi_checks import PINNED_CODES, TaskInfo

PINNED_VM = "PINNED_VM"
BACKUP_RUNNING = "BACKUP_RUNNING"
TASKS_UNCHECKED = "TASKS_UNCHECKED"

_WHY = {"VM_HAS_PCI_ATTACHED": "a passed-through PCI device", "VM_HAS_VGPU": "a vGPU",
        "VM_HAS_SRIOV_VIF": "a VIF on an SR-IOV network"}

# Task name_labels of exports, snapshots and backups (docs/prechecks.md "Backups running"): xapi names a task after
# its call (Async.VM.snapshot; an HTTP export is VM.export / VM.export_metadata, export.ml:815,937,989; a raw VDI
# export "Exporting raw VDI", export_raw_vdi.ml:25); Xen Orchestra labels its own ("VM export", vm.mjs:535;
# "Exporting content of VDI ...", vdi.mjs:241-255; "Export pool metadata"); XenCenter's export is "Export of VM ...".
BACKUP_CALLS = frozenset({"VM.export", "VM.export_metadata", "VM.snapshot", "VM.snapshot_with_quiesce",
                          "VM.checkpoint", "VM.copy", "VDI.snapshot", "VDI.copy", "VDI.export", "VM.export_vdi"})
BACKUP_PREFIXES = ("vm export", "export of vm", "exporting", "export pool metadata", "[xo] backup", "backup")


def is_pinned(error: Sequence[str]) -> bool:
    """An evacuation blocker that means the VM cannot leave its host at all."""
    return bool(error) and error[0] in PINNED_CODES


def is_backup(task: TaskInfo) -> bool:
    name = task.name.strip()
    call = name[len("Async."):] if name.startswith("Async.") else name
    return call in BACKUP_CALLS or name.lower().startswith(BACKUP_PREFIXES)


def pinned_vms(blockers: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, dict[str, str]]:
    """host ref -> {VM ref: the pinning error code}, from each host's get_vms_which_prevent_evacuation."""
    return {host: {vm: err[0] for vm, err in found.items() if is_pinned(err)} for host, found in blockers.items()}


def stopped_pinned(blockers: Mapping[str, Sequence[str]], consent: Iterable[str]) -> frozenset[str]:
    """The refs of a host's pinned VMs the run shuts down (consent PINNED_VM given), for the VM plan."""
    return frozenset(vm for vm, err in blockers.items() if is_pinned(err)) if PINNED_VM in set(consent) \
        else frozenset()


def pinned_checks(hosts: Iterable[HostInfo], vms: Iterable[VmInfo], blockers: Mapping[str, Mapping[str, Sequence[str]]],
                  devices: Mapping[str, Sequence[str]]) -> list[Check]:
    """One PINNED_VM (consent) per pinned VM of a host to upgrade; `devices` (VM ref -> what pins it,
    XenApiDriver.pinning_devices) names the device."""
    names = {v.ref: v for v in vms}
    found = []
    for host in hosts:
        for vm_ref, code in sorted(pinned_vms({host.ref: blockers.get(host.ref, {})})[host.ref].items(),
                                   key=lambda item: names[item[0]].name if item[0] in names else item[0]):
            vm = names.get(vm_ref)
            name = vm.name if vm else vm_ref
            what = ", ".join(devices.get(vm_ref, ())) or _WHY.get(code, code)
            found.append(Check(
                PINNED_VM, f"VM {name} is pinned to this host by {what} ({code}): it cannot migrate, so the host "
                f"cannot be evacuated",
                f"shut it down before the run, or consent (`upgrade start --consent {PINNED_VM}`, REST consent: "
                f"[\"{PINNED_VM}\"]): the run shuts it down right before this host's evacuation and starts it again on "
                "this host after its upgrade", host.name, CONSENT))
    return found


def backup_checks(tasks: Iterable[TaskInfo]) -> list[Check]:
    """BACKUP_RUNNING (error) naming every export / snapshot / backup task still pending on the pool."""
    running = [t for t in tasks if is_backup(t)]
    if not running:
        return []
    named = "; ".join(f"{t.name}" + (f" ({t.description})" if t.description else "")
                      + f" [{t.progress * 100:.0f}%, since {t.created}]" for t in running)
    return [Check(BACKUP_RUNNING, f"{len(running)} export / snapshot / backup task(s) running on the pool: {named}",
                  "let them finish (or cancel them: `xe task-cancel uuid=...`), pause backup schedules (Xen "
                  "Orchestra, XenCenter) for the upgrade, then plan again", "", ERROR)]


def pool_checks(driver, hosts: Sequence[HostInfo], vms: Sequence[VmInfo],
                blockers: Mapping[str, Mapping[str, Sequence[str]]]) -> list[Check]:
    """Both checks for the plan: reads the running tasks and (when a VM is pinned) what pins it."""
    found = []
    try:
        found += backup_checks(driver.running_tasks())
    except (XapiError, XapiUnreachable) as exc:
        found.append(Check(TASKS_UNCHECKED, f"cannot list the pool's running tasks: {exc}",
                           "make the master answer XAPI, then plan again"))
    if any(pinned_vms(blockers).values()):
        try:
            devices = driver.pinning_devices()
        except (XapiError, XapiUnreachable):
            devices = {}  # the codes alone still say why
        found += pinned_checks(hosts, vms, blockers, devices)
    return found
