"""The bootloader of a simulated host's installed system, and what XenCenter's host plugin leaves in it
(docs/host-plugin.md "What prepare_host_upgrade.py does"). Pure: no I/O; a lock only, because the plugin writes it
from an XAPI call thread while the machine boots on its own.

The real plugin (prepare_host_upgrade.py `main`, host-upgrade-plugin package) downloads install.img, vmlinuz and
xen.gz to /boot/installer, copies install.img to upgrade.img with two files added at its root (`answerfile` and
`revert-bootloader.py`), appends a menu entry labelled "upgrade" to dom0's own bootloader config and makes it the
default (xcp.bootloader: `config.append("upgrade", e); config.default = "upgrade"; config.commit()`). A second
`main` first removes the old "upgrade" entry (`if 'upgrade' in config.menu_order: config.remove('upgrade')`).
The installer runs revert-bootloader.py as its installation-start script: it sets the default back to what it
was when `main` wrote the script and removes "upgrade" (one-shot). An upgrade then writes a new bootloader
config of its own. GRUB boots the first entry when the default names none (xcp.bootloader writes
`set default='<label>'` for a label it does not find).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

UPGRADE = "upgrade"  # the label the plugin gives its entry
INSTALLED_MENU = ("xe", "xe-serial", "safe", "fallback")  # an installed XenServer's grub menu labels
INSTALLER_DIR = "/boot/installer"
ANSWERFILE, REVERT_SCRIPT = "answerfile", "revert-bootloader.py"  # at the root of upgrade.img
ANSWERFILE_URL = "file:///" + ANSWERFILE  # the entry's kernel args: `install answerfile=file:///answerfile`
PYTHON_SHEBANG = b"#!/usr/bin/env python"


class NoSuchFile(FileNotFoundError):
    """A file:// name the installer's initrd does not hold."""


@dataclass
class Dom0Boot:
    """dom0's bootloader config (menu labels in order, the default) and the plugin's files: what it downloaded
    into /boot/installer (name -> bytes) and the files it added to upgrade.img (name -> text)."""

    menu: list[str] = field(default_factory=lambda: list(INSTALLED_MENU))
    default: str = INSTALLED_MENU[0]
    installer_files: dict[str, int] = field(default_factory=dict)
    initrd: dict[str, str] = field(default_factory=dict)
    kernel_args: str = ""
    downloads: list[dict[str, int]] = field(default_factory=list)  # every main's downloads (kept for tests)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    # --- what the plugin's main does ---

    def stage_upgrade(self, files: dict[str, int], initrd: dict[str, str], kernel_args: str) -> None:
        """/boot/installer written, upgrade.img built, the "upgrade" entry appended and made the default
        (set_boot_config: a previous "upgrade" entry is removed first)."""
        with self._lock:
            self.installer_files, self.initrd, self.kernel_args = dict(files), dict(initrd), kernel_args
            self.downloads.append(dict(files))
            if UPGRADE in self.menu:
                self.menu.remove(UPGRADE)
            self.menu.append(UPGRADE)
            self.default = UPGRADE

    # --- what a boot sees ---

    def boot_label(self) -> str:
        """The entry GRUB boots: the default, or the first entry when the default names none."""
        with self._lock:
            return self.default if self.default in self.menu else self.menu[0]

    def read(self, name: str) -> bytes:
        """A file:// name as the installer booted from upgrade.img reads it (its initrd's root)."""
        path = name[len("file://"):] if name.startswith("file://") else name
        with self._lock:
            text = self.initrd.get(path.lstrip("/"))
        if text is None:
            raise NoSuchFile(f"{name}: no such file in the installer's initrd")
        return text.encode()

    # --- what the installer does ---

    def run_revert_script(self, body: bytes) -> None:
        """The plugin's revert-bootloader.py, run as the installation-start script: `cfg.default = "<label>"`
        and `cfg.remove("upgrade")`, then commit. Raises ValueError for a script that says neither."""
        text = body.decode(errors="replace")
        default = re.search(r'^cfg\.default = "([^"]*)"$', text, re.M)
        removes = re.findall(r'^cfg\.remove\("([^"]*)"\)$', text, re.M)
        if default is None and not removes:
            raise ValueError("not the plugin's revert-bootloader.py")
        with self._lock:
            if default is not None:
                self.default = default.group(1)
            for label in removes:
                if label not in self.menu:  # xcp.bootloader remove(): del self.menu[label] raises KeyError
                    raise ValueError(f"cfg.remove({label!r}): no such entry")
                self.menu.remove(label)

    def installer_wrote_config(self) -> None:
        """A finished install or upgrade writes a new bootloader config (and a new root: /boot/installer is
        gone)."""
        with self._lock:
            self.menu, self.default = list(INSTALLED_MENU), INSTALLED_MENU[0]
            self.installer_files, self.initrd, self.kernel_args = {}, {}, ""

    def describe(self) -> dict:
        with self._lock:
            return {"menu": list(self.menu), "default": self.default, "installer_files": dict(self.installer_files),
                    "initrd": sorted(self.initrd)}
