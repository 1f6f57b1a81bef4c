"""A simulated PXE machine: what a host's firmware and the XenServer installer do, over real TFTP and HTTP.

The XAPI simulator calls the boot handler each time a host enters FIRMWARE (power-on or reboot; docs/simulator.md
"Host power and boot states"). Each pass through the firmware tries the devices of its boot state (bootorder.py:
BIOS order, UEFI BootOrder/BootNext, a BMC's override; docs/firmware.md "The simulated firmware's boot state") in
order. The network: fetch the per-MAC config and follow it; a local-boot answer (or none) goes on to the next
device. The disk: boots what is on it. The installer GETs the answer file, checks it (an upgrade, or a fresh
install that makes a new host: fresh.py), reads <source>/.treeinfo, runs the installation-start script, "installs"
(on UEFI its boot entry goes first), runs the installation-complete script with 0 or 1, and reboots (atexit=reboot,
docs/installer.md "Boot parameters"): a network-first machine whose server keeps serving the installer shows up
here as a reinstall loop. Failures (FAILURES) model what real hosts do when an upgrade goes wrong (docs/firmware.md
"A reboot does not reach the network", docs/real-world.md "What a failed upgrade leaves behind").
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from typing import Any, Mapping

import requests

from provisioner.simulator.bootorder import DISK, BootOrder
from provisioner.simulator.dom0boot import ANSWERFILE_URL, PYTHON_SHEBANG, UPGRADE, Dom0Boot
from provisioner.simulator.boots import (  # noqa: F401 (re-exported: machine.LOCAL etc. are the public names)
    ANSWERFILE_MISSING, ANSWERFILE_REJECTED, BOOT_ERROR, CHAINLOADED, DISK_BOOTS, DISK_FIRST, ESP_LOADERS, EV_BOOT,
    EV_BOOT_LOOP, EV_EXTERNAL, EV_FETCH, EV_FIRMWARE, EV_HANG, EV_INSTALLING, EV_NO_SYSTEM, EV_POWER_ON,
    EV_REINSTALL_LOOP, EV_SCRIPT, EXTERNAL, FAILURES, HUNG, INSTALL_BROKEN, INSTALL_FAILED, INSTALLED, LOCAL,
    NO_CONFIG, NO_SYSTEM, Boot, Fetch, OnEvent, failure_for)
from provisioner.simulator.external import EXIT_NO_SYSTEM, run_external
from provisioner.simulator.errors import BootFailure, NoBootableSystem
from provisioner.simulator.firmware import canonical_mac, config_names, parse_config, read_treeinfo
from provisioner.simulator.fresh import FRESH, fresh_version
from provisioner.simulator.installer import STAGE_COMPLETE, STAGE_START, AnswerfileRejected, read_answerfile
from provisioner.simulator import repos
from provisioner.tftp import client  # moves bytes only; it checks nothing

LOADERS = ("pxelinux", "grub", "ipxe")
# The URL path our embedded iPXE script chains to, with iPXE's ${net0/mac:hexhyp} (docs/firmware.md, docs/boot-urls.md).
IPXE_SCRIPT_PATH = "/boot/ipxe/"

# A machine built with no boot order (docs/simulator.md "Firmware boot order"); a PXE-first site says
# boot_order="bios-network-first".
DEFAULT_BOOT_ORDER = "bios-disk-first"
WALL_SCALE = 0.001  # without a clock, "install for 600 s" sleeps 0.6 s of wall time
HTTP_TIMEOUT = 10.0


def _wall_sleep(seconds: float) -> None:
    time.sleep(seconds * WALL_SCALE)


class Machine:
    """One simulated host's firmware + installer. power_on() runs one power cycle and returns the version an
    install put on the disk during it (None: unchanged)."""

    def __init__(self, mac: str, tftp_addr: tuple[str, int], *, http_base: str | None = None,
                 loader: str = "pxelinux", firmware: str | None = None, clock: Any = None,
                 install_seconds: float = 600.0, failures: Mapping[str, Any] | None = None, max_boots: int = 5,
                 external_command: str | list[str] | None = None, on_event: OnEvent | None = None,
                 stop_event: threading.Event | None = None, boot_order: str | BootOrder | None = None,
                 needs_driver: str | None = None):
        if loader not in LOADERS:
            raise ValueError(f"unknown loader {loader!r} (one of {', '.join(LOADERS)})")
        if loader == "ipxe" and not http_base and external_command is None:
            raise ValueError("the ipxe loader needs http_base (the server it fetches /boot/ipxe/<mac> from)")
        self.mac = canonical_mac(mac)
        self.tftp_addr = (tftp_addr[0], int(tftp_addr[1]))
        self.http_base = http_base.rstrip("/") if http_base else None
        # The firmware's boot state (bootorder.py); the default is BIOS, disk first: a real host reaches the
        # network only by a site's PXE-first policy or a BMC override (docs/firmware.md "A reboot does not reach
        # the network"). `firmware` is what iPXE reports as ${platform}: an explicit boot order gives it when unset.
        self.bootorder = BootOrder.from_spec(boot_order or DEFAULT_BOOT_ORDER)
        self.loader, self.firmware = loader, firmware or (self.bootorder.mode if boot_order else None)
        self.sleep = clock.sleep if clock is not None else _wall_sleep
        self.install_seconds, self.max_boots = install_seconds, max_boots
        self.failures = failures if failures is not None else {}
        self.external_command, self.on_event = external_command, on_event
        self.stop_event = stop_event or threading.Event()
        self.boots: list[Boot] = []
        self.cycles = 0
        self.disk_broken = False  # installer_breaks happened: no bootable system until a fresh install
        self.dom0 = Dom0Boot()  # the installed system's bootloader; the host plugin stages its entry here
        # The driver its disk controller needs that the installer does not carry (None: none): without a driver
        # disk providing it the installer sees no disk (simulator/repos.py, docs/packs.md).
        self.needs_driver = needs_driver
        self.installed_packs: dict[str, str] = {}  # name-label -> version of the packs the last install put on
        self._cycle = threading.Lock()  # one power cycle at a time (a BMC reset mid-boot waits for the pass to end)

    # --- observation ---

    def _emit(self, kind: str, **details: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, self.mac, details)

    def installs(self, cycle: int | None = None) -> int:
        """How many times the installer ran (start script run) in `cycle` (default: all cycles)."""
        return sum(1 for b in self.boots if b.outcome in (INSTALLED, INSTALL_FAILED, INSTALL_BROKEN, HUNG)
                   and b.fetched("script") and (cycle is None or b.cycle == cycle))

    # --- one power cycle ---

    def power_on(self) -> dict | None:
        with self._cycle:
            return self._power_cycle()

    def _power_cycle(self) -> dict | None:
        self.cycles += 1
        cycle = self.cycles
        failures = failure_for(self.failures, self.mac)
        self._emit(EV_POWER_ON, cycle=cycle, loader=self.loader, failures=sorted(failures),
                   firmware=self.bootorder.describe())
        if self.external_command is not None:
            return self._external(cycle)
        version = None
        for number in range(1, self.max_boots + 1):
            if self.stop_event.is_set():
                return version
            boot = Boot(number, cycle)
            self.boots.append(boot)
            try:
                self._boot(boot, failures)
            except BootFailure as exc:
                boot.outcome = boot.outcome or BOOT_ERROR
                boot.detail = str(exc)
            self._emit(EV_BOOT, cycle=cycle, boot=number, outcome=boot.outcome, detail=boot.detail,
                       version=boot.version and {k: v for k, v in boot.version.items() if k != FRESH})  # no hash
            if boot.outcome == INSTALLED:
                version = boot.version
            if boot.outcome == HUNG:
                return None
            if boot.outcome == NO_SYSTEM:  # the firmware stops at "no bootable device": the host stays down
                self._emit(EV_NO_SYSTEM, cycle=cycle, boot=number)
                raise NoBootableSystem(f"{self.mac}: {boot.detail}")
            if boot.outcome in DISK_BOOTS:
                if failures.get("slow"):  # slow boot: the host takes longer to come back
                    self.sleep(float(failures["slow"]) if failures["slow"] is not True else 60.0)
                return version
        # Every boot of the cap went to the installer again: a server that keeps serving it to a network-first
        # machine (or, with no install at all, a boot that keeps failing: a 404 answer file, a missing boot file).
        installs = self.installs(cycle)
        self._emit(EV_REINSTALL_LOOP if installs else EV_BOOT_LOOP, cycle=cycle, boots=self.max_boots,
                   installs=installs, version=version)
        return version

    def _boot(self, boot: Boot, failures: dict) -> None:
        """One pass through the firmware: the devices of its boot state in turn, until one boots something
        (docs/firmware.md "The simulated firmware's boot state")."""
        devices = self.bootorder.devices_for_next_boot()  # consumes BootNext and a Once override
        if failures.get("no_pxe"):  # never reaches us, whatever the order: no fetch at all
            devices = [d for d in devices if d == DISK]
        self._emit(EV_FIRMWARE, cycle=boot.cycle, boot=boot.number, devices=devices)
        missed: list[str] = []
        for device in devices:
            if device == DISK:
                if not self.disk_broken and self.dom0.boot_label() == UPGRADE and not failures.get(
                        "plugin_entry_ignored"):  # prepare_host_upgrade.py's entry: the installer, from the disk
                    self._install(boot, ANSWERFILE_URL, failures)
                    return
                if not self.disk_broken:
                    if not missed:
                        boot.outcome, boot.detail = DISK_FIRST, "the firmware boots the disk first: no network boot"
                    return  # after a local-boot answer: LOCAL / NO_CONFIG, the disk booted
                missed.append("the disk has no bootable system")
                continue
            self._netboot(boot, failures)  # "network" (PXE) and "http" (UEFI HTTP boot) both end in our loader
            if boot.outcome == CHAINLOADED and self.dom0.boot_label() == UPGRADE and not failures.get(
                    "plugin_entry_ignored"):  # the disk's own GRUB reads dom0's config: the plugin's entry
                self._install(boot, ANSWERFILE_URL, failures)
                return
            if boot.outcome not in (LOCAL, NO_CONFIG):
                return
            missed.append(boot.detail)
        boot.outcome, boot.detail = NO_SYSTEM, "; ".join(missed + ["no bootable device left"])

    def _netboot(self, boot: Boot, failures: dict) -> None:
        text = self._config(boot)
        if text is None:
            boot.outcome, boot.detail = NO_CONFIG, "no PXE answer: the firmware goes on to its next device"
            return
        loader, plan = self.loader, parse_config(self.loader, text)
        if plan["action"] == "chain":  # iPXE chains to GRUB (UEFI) or pxelinux.0 (BIOS), which asks the TFTP
            try:  # server for its per-MAC config (docs/firmware.md)
                self._get(boot, "chain", plan["url"])
            except BootFailure as exc:  # our scripts: `chain ... || goto local` (or `|| exit`): the disk boots
                boot.outcome, boot.detail = LOCAL, f"{exc}; the iPXE script falls back to the local disk"
                return
            loader = plan["loader"]
            text = self._config(boot, loader=loader)
            plan = parse_config(loader, text) if text is not None else {"action": "local"}
        if plan["action"] == "local":
            self._local_answer(boot, loader, plan)
            return
        for what, name in plan["files"]:
            try:
                self._get(boot, what, name)
            except BootFailure as exc:
                if loader == "pxelinux":  # mboot.c32 fails: pxelinux gives up and the firmware reboots
                    raise
                # Our GRUB and iPXE configs end in `exit` (or `|| goto local`): a failed load boots the disk.
                boot.outcome, boot.detail = LOCAL, f"{exc}; the config falls back to the local disk"
                return
        url = next((a.split("=", 1)[1] for a in plan["args"] if a.startswith("answerfile=")), None)
        if url is None:
            raise BootFailure("installer started without answerfile=: it would wait at the interactive UI")
        self._install(boot, url, failures)

    def _local_answer(self, boot: Boot, loader: str, plan: dict) -> None:
        """pxelinux's localboot and iPXE's exit on BIOS hand back to the firmware, which tries its next device. On
        UEFI, GRUB starts the first loader its `search --file` finds on the disk's ESP; an `exit` returns
        EFI_SUCCESS and the boot manager stops at its menu (docs/firmware.md "Local boot on UEFI")."""
        if loader != "grub" and "uefi" not in (self.bootorder.mode, self.firmware):
            boot.outcome, boot.detail = LOCAL, "local boot"
            return
        esp = () if self.disk_broken else ESP_LOADERS
        found = next((path for path in plan.get("chainload", ()) if path in esp), None)
        if found is not None:
            boot.outcome, boot.detail = CHAINLOADED, f"GRUB started {found} from the disk's EFI system partition"
            return
        boot.outcome, boot.detail = NO_SYSTEM, (f"{loader} exit returned EFI_SUCCESS: the UEFI boot manager "
                                                "stopped at its menu, the disk was not tried")

    def _config(self, boot: Boot, loader: str | None = None) -> str | None:
        """The per-MAC config, then the loader's fallback name (what the real firmware tries next)."""
        loader = loader or self.loader
        if loader == "ipxe":
            url = self.http_base + IPXE_SCRIPT_PATH + self.mac.replace(":", "-")
            if self.firmware:
                url += "?platform=" + ("efi" if self.firmware == "uefi" else "pcbios")
            try:
                return self._get(boot, "config", url).decode()
            except BootFailure:
                return None
        for name in config_names(loader, self.mac):
            try:
                body = self._get(boot, "config", name).decode()
            except BootFailure:
                continue
            if loader == "grub" and "$net_default_mac" in body:  # the dispatcher: it chains to our MAC name
                continue
            return body
        return None

    def _get(self, boot: Boot, what: str, name: str) -> bytes:
        """One fetch, TFTP or HTTP by its spelling; recorded and reported; BootFailure when it fails."""
        http, local = name.startswith(("http://", "https://")), name.startswith("file://")
        fetch = Fetch("file" if local else "http" if http else "tftp", what, name)
        boot.fetches.append(fetch)
        try:
            if local:  # the installer booted from the plugin's upgrade.img reads its own initrd
                data = self.dom0.read(name)
            elif http:
                response = requests.get(name, timeout=HTTP_TIMEOUT)
                if response.status_code != 200:
                    fetch.status = "not-found" if response.status_code == 404 else "error"
                    problem = f"GET {name} answered {response.status_code}"
                data = response.content
            else:
                data = client.fetch(*self.tftp_addr, name.lstrip("/"))
        except FileNotFoundError as exc:
            fetch.status, problem = "not-found", str(exc)
        except (client.TftpFetchError, requests.RequestException) as exc:
            fetch.status, problem = "error", f"{name}: {exc}"
        if fetch.status == "ok":
            fetch.bytes = len(data)
        self._emit(EV_FETCH, protocol=fetch.protocol, what=what, name=name, bytes=fetch.bytes, status=fetch.status)
        if fetch.status != "ok":
            raise BootFailure(problem)
        return data

    def _install(self, boot: Boot, url: str, failures: dict) -> None:
        """The installer: answer file (fetched once, no retry), checks, .treeinfo, scripts, reboot."""
        try:
            text = self._get(boot, "answerfile", url).decode("utf-8")
        except BootFailure as exc:
            boot.outcome, boot.detail = ANSWERFILE_MISSING, f"installer error, rebooting: {exc}"
            return
        try:
            if failures.get("bad_answerfile"):
                raise AnswerfileRejected("rejected by failure injection (bad_answerfile)")
            answers = read_answerfile(text)  # no mode: a fresh install, the installer wipes the disk (fresh.py)
        except AnswerfileRejected as exc:
            boot.outcome, boot.detail = ANSWERFILE_REJECTED, f"installer error, rebooting: {exc}"
            return
        # Driver disks are loaded before the installer looks at the disks (docs/packs.md "Driver disks").
        fetch = lambda what, url: self._get(boot, what, url)  # noqa: E731
        driver_repos, loaded = repos.load_drivers(fetch, answers.driver_sources)
        no_disk = self.needs_driver is not None and not repos.provides(loaded, self.needs_driver)
        version = read_treeinfo(self._get(boot, "treeinfo", answers.sources[0].rstrip("/") + "/.treeinfo").decode())
        code = "0"
        try:
            for start in answers.scripts.get(STAGE_START, []):
                self._run_script(boot, STAGE_START, self._get(boot, "script", start))
        except BootFailure as exc:  # a failed GET of the start script aborts the install before any disk write
            code, boot.detail = "1", f"installation aborted: {exc}"
        if code == "0" and no_disk:  # its controller has no driver: the disk is not there (docs/packs.md)
            code, boot.detail = "1", (
                f"{answers.disk} not found: no driver for its disk controller ({self.needs_driver}); "
                + ("Could not locate the installation specified to be reinstalled." if not answers.fresh else
                   "the primary disk does not exist"))
        if code == "0" and self.disk_broken and not answers.fresh:  # "Failed to get existing installation settings"
            code, boot.detail = "1", "no existing installation to upgrade"  # (docs/installer.md "Upgrade answer files")
        if code == "0":
            self._emit(EV_INSTALLING, seconds=self.install_seconds, version=version)
            if failures.get("never_returns"):
                boot.outcome, boot.detail = HUNG, "the installer hangs: the host never comes back"
                self._emit(EV_HANG, boot=boot.number)
                self.stop_event.wait()
                return
            self.sleep(self.install_seconds)
            # after its backup (docs/real-world.md "What a failed upgrade leaves behind")
            if failures.get("installer_breaks"):
                code, self.disk_broken, boot.detail = "1", True, "the installer failed while writing the new root"
            elif failures.get("installer_fails"):  # before its backup: repository/upgrader/layout checks
                code = "1"
        for complete in answers.scripts.get(STAGE_COMPLETE, []):
            try:  # a failed GET of the complete script is ignored by the installer
                self._run_script(boot, STAGE_COMPLETE, self._get(boot, "script", complete), code)
            except BootFailure as exc:
                boot.detail = f"{boot.detail}; complete script not run: {exc}".lstrip("; ")
        if code == "0":
            boot.outcome, boot.version = INSTALLED, fresh_version(answers, version) if answers.fresh else version
            self.bootorder.installer_wrote_boot_entry()  # UEFI: its entry first in BootOrder (writeBootEntries)
            self.dom0.installer_wrote_config()  # and a new bootloader config: no plugin entry any more
            self.disk_broken = False  # only a fresh install gets here on a broken disk: it repartitions it
            # a new root file system holds only the packs this answer file named (upgrades do not carry them)
            self.installed_packs = repos.installed_packs(fetch, answers.sources[1:], driver_repos)
        else:
            boot.outcome = INSTALL_BROKEN if self.disk_broken else INSTALL_FAILED
        boot.detail = boot.detail or f"installer exited {code}; rebooting"

    def _run_script(self, boot: Boot, stage: str, body: bytes, *args: str) -> None:
        if body.startswith(PYTHON_SHEBANG):  # the host plugin's revert-bootloader.py (dom0boot.py)
            try:
                self.dom0.run_revert_script(body)
                code, err = 0, ""
            except ValueError as exc:
                code, err = 1, str(exc)
            self._emit(EV_SCRIPT, stage=stage, args=list(args), exit=code, stderr=err)
            return
        with tempfile.TemporaryDirectory(prefix="sim-installer-") as tmp:
            path = os.path.join(tmp, "script")
            with open(path, "wb") as handle:
                handle.write(body)
            try:
                done = subprocess.run(["/bin/sh", path, *args], capture_output=True, timeout=60, cwd=tmp)
                code, err = done.returncode, done.stderr.decode(errors="replace")[:300]
            except subprocess.TimeoutExpired:
                code, err = None, "killed after 60 s"
        self._emit(EV_SCRIPT, stage=stage, args=list(args), exit=code, stderr=err)

    def _external(self, cycle: int) -> dict | None:
        """Hand the whole power cycle to external_command (external.py); its stdout is a JSON version or empty."""
        boot = Boot(1, cycle, EXTERNAL)
        self.boots.append(boot)
        env = {"MAC": self.mac, "TFTP_HOST": self.tftp_addr[0], "TFTP_PORT": str(self.tftp_addr[1]),
               "TFTP_ADDR": f"{self.tftp_addr[0]}:{self.tftp_addr[1]}", "HTTP_BASE": self.http_base or "",
               "LOADER": self.loader, "FIRMWARE": self.firmware or "", "INSTALL_SECONDS": str(self.install_seconds),
               "FAILURES": json.dumps(failure_for(self.failures, self.mac)), "DISK_BROKEN": "1" * self.disk_broken}
        code, boot.version, boot.detail = run_external(self.external_command, env, self.stop_event)
        self._emit(EV_EXTERNAL, cycle=cycle, exit=code, version=boot.version, detail=boot.detail)
        self.disk_broken = code == EXIT_NO_SYSTEM
        if self.disk_broken:
            raise NoBootableSystem(f"{self.mac}: {boot.detail}")
        return boot.version

