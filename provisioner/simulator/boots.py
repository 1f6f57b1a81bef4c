"""What a simulated machine records and reports: its boots and fetches, their outcomes, its event kinds, the failures
it can be given (docs/simulator.md "The simulated firmware and installer"). Pure data; machine.py acts on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from provisioner.simulator.firmware import canonical_mac

OnEvent = Callable[[str, str, dict], None]

# installer_fails: fails BEFORE its backup (repository/upgrader/layout checks), reports 1, the old system boots.
# installer_breaks: fails AFTER its backup, while writing the new root: reports 1, and no system boots again.
# no_pxe: the firmware boots without trying the network, whatever its boot order (bootorder.py; the same as a
# disk-first order: docs/firmware.md "A reboot does not reach the network").
# plugin_entry_ignored: the disk boot does not take the host plugin's "upgrade" entry (dom0boot.py): the old
# system boots, the entry stays (docs/host-plugin.md).
FAILURES = ("installer_fails", "installer_breaks", "never_returns", "slow", "bad_answerfile", "no_pxe",
            "plugin_entry_ignored")

# Boot outcomes (Boot.outcome)
LOCAL = "local"  # the config said: boot locally (the firmware goes on to its next device)
NO_CONFIG = "no-config"  # no PXE answer at all: the firmware falls through to its next device
INSTALLED = "installed"  # the installer ran and reported 0
INSTALL_FAILED = "install-failed"  # the installer ran and reported 1 (the disk keeps the old version)
INSTALL_BROKEN = "install-broken"  # installer_breaks: reported 1 after its backup; the disk has no bootable system
DISK_FIRST = "disk-first"  # the firmware booted the disk, no network boot was tried (disk-first order, no_pxe)
CHAINLOADED = "chainloaded"  # our GRUB's local answer started the disk's own EFI loader (docs/firmware.md)
NO_SYSTEM = "no-system"  # a disk boot found no bootable system: the host stays at the firmware
ANSWERFILE_MISSING = "answerfile-missing"  # 404 or unreachable: the installer shows an error and reboots
ANSWERFILE_REJECTED = "answerfile-rejected"  # the installer refused it: error, reboot, no callback
BOOT_ERROR = "boot-error"  # a boot file could not be loaded: the loader falls back / the firmware reboots
HUNG = "hung"  # never_returns: the host stays down until stop()
EXTERNAL = "external"  # handed to external_command

# What XenServer's installer leaves on a UEFI host's EFI system partition (host-installer backend.py
# addEfiBootEntry: EFI/xenserver/shimx64.efi where the release ships shim, else EFI/xenserver/grubx64.efi).
ESP_LOADERS = ("/EFI/xenserver/grubx64.efi",)

# on_event kinds
EV_POWER_ON, EV_FETCH, EV_BOOT, EV_SCRIPT, EV_INSTALLING = "power_on", "fetch", "boot", "script", "installing"
EV_REINSTALL_LOOP, EV_BOOT_LOOP, EV_HANG, EV_EXTERNAL = "reinstall_loop", "boot_loop", "hang", "external"
EV_NO_SYSTEM, EV_FIRMWARE = "no_system", "firmware"
DISK_BOOTS = (LOCAL, NO_CONFIG, DISK_FIRST, CHAINLOADED)  # outcomes that hand the boot to whatever is on the disk


@dataclass
class Fetch:
    protocol: str  # "tftp" or "http"
    what: str  # config, hypervisor, kernel, install.img, answerfile, treeinfo, script, chain, ...
    name: str  # TFTP name or URL
    bytes: int = 0
    status: str = "ok"  # ok, not-found, error


@dataclass
class Boot:
    """One pass through the firmware: what was fetched and how it ended."""

    number: int  # 1-based, within its power cycle
    cycle: int  # 1-based power cycle (one boot-handler call) of this machine
    outcome: str = ""
    detail: str = ""
    version: dict | None = None  # the version an install on this boot put on the disk
    fetches: list[Fetch] = field(default_factory=list)

    def fetched(self, what: str) -> int:
        return sum(1 for f in self.fetches if f.what == what and f.status == "ok")



def failure_for(failures: Mapping[str, Any], mac: str) -> dict:
    """Global failures (keys in FAILURES) overlaid by the MAC's own dict."""
    failures = dict(failures)  # a snapshot: inject() may change it from another thread
    merged = {k: v for k, v in failures.items() if k in FAILURES}
    for key, value in failures.items():
        if key not in FAILURES and isinstance(value, Mapping):
            try:
                if canonical_mac(key) == mac:
                    merged.update(dict(value))
            except ValueError:
                continue
    return {k: v for k, v in merged.items() if v}
