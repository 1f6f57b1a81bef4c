"""Real boots in QEMU against `provisioner serve`: iPXE, pxelinux/mboot.c32, GRUB, Xen, Linux, the stand-in.

Each boot prints seconds from power-on to the answer-file GET and the bytes moved by TFTP and by HTTP.
"""

from __future__ import annotations

import time

import pytest

import e2e_disks
import e2e_lab

pytestmark = pytest.mark.e2e

BIOS_MAC = "52:54:00:e2:e0:01"
UEFI_MAC = "52:54:00:e2:e0:02"
UNKNOWN_MAC = "52:54:00:e2:e0:03"
UNARMED_MAC = "52:54:00:e2:e0:04"
UEFI_LOCAL_MAC = "52:54:00:e2:e0:06"  # :05 is e2e_lab.IPXE_SCRIPT_MAC
INSTALL_TIMEOUT = 300  # software emulation: ~30-40 s per boot; generous for a loaded CI runner
LOCAL_TIMEOUT = 120
LOCAL_BOOT_DONE = e2e_lab.LOCAL_BOOT_DONE


def _dashes(mac: str) -> str:
    return mac.replace(":", "-")


_fetches = e2e_lab.fetches


def _config_fetched(events, mac: str) -> bool:
    """The loader got this MAC's per-MAC config (pxelinux or GRUB name) over TFTP."""
    names = (f"pxelinux.cfg/01-{_dashes(mac)}", f"grub/grub.cfg-01-{_dashes(mac)}")
    return any(e["kind"] == "tftp.sent" and e["details"].get("file", "").lstrip("/") in names for e in events)


def _report(lab, boot, since: int, label: str) -> dict:
    """Print and return the boot's numbers: seconds to the answer-file GET, TFTP and HTTP bytes."""
    return e2e_lab.boot_numbers(lab.events(since_id=since), boot.mac, boot.started, boot.process.text(), label)


def _wait(lab, boot, since: int, done, timeout: float) -> list[dict]:
    """Poll the events until done(events) or QEMU exits or timeout; returns the events since `since`."""
    deadline = time.time() + timeout
    while True:
        events = lab.events(since_id=since)
        if done(events) or boot.process.proc.poll() is not None or time.time() > deadline:
            return events
        time.sleep(0.5)


def _install_boot(lab, name: str, mac: str, firmware: str) -> dict:
    since = lab.last_event_id()
    boot = lab.boot(name, mac, firmware)
    try:
        code = boot.process.wait(INSTALL_TIMEOUT)
    finally:
        boot.process.stop()
    console = boot.process.text()
    assert code is not None, f"{name}: QEMU still running after {INSTALL_TIMEOUT} s; console:\n{console[-3000:]}"
    numbers = _report(lab, boot, since, name)
    numbers["console"] = console
    return numbers


def _local_boot(lab, name: str, mac: str, firmware: str) -> dict:
    """Boot until the loader fetched its per-MAC config, give it time to act on it, then power off."""
    since = lab.last_event_id()
    boot = lab.boot(name, mac, firmware)
    try:
        events = _wait(lab, boot, since, lambda ev: _config_fetched(ev, mac), LOCAL_TIMEOUT)
        tail = boot.process.text()[-3000:]
        assert _config_fetched(events, mac), f"{name}: no per-MAC config fetched; console:\n{tail}"
        # pxelinux's "localboot 0" hands back to SeaBIOS, which tries the (absent) disks: the local boot.
        deadline = time.time() + LOCAL_TIMEOUT
        while LOCAL_BOOT_DONE not in boot.process.text() and boot.process.proc.poll() is None:
            assert time.time() < deadline, f"{name}: no local boot; console:\n{boot.process.text()[-3000:]}"
            time.sleep(0.5)
    finally:
        boot.process.stop()
    numbers = _report(lab, boot, since, name)
    numbers["console"] = boot.process.text()
    return numbers


def test_bios_install_then_local_boot(lab):
    lab.cli("hosts", "add", BIOS_MAC, "--name", "e2e-bios", "--pool", "e2e", "--disk", "/dev/sda",
            "--firmware", "bios")
    lab.cli("hosts", "arm", BIOS_MAC, "--media", "xs84")

    first = _install_boot(lab, "bios-install", BIOS_MAC, "bios")
    console, events = first["console"], first["events"]
    # The real chain ran: Xen booted a PV dom0 whose kernel ran the stand-in.
    assert "Xen version" in console or "(XEN)" in console, console[-3000:]
    assert "STANDIN: installation-start exit 0" in console, console[-3000:]
    assert "STANDIN: installation-complete exit 0" in console, console[-3000:]
    assert len(_fetches(events, BIOS_MAC, "answerfile")) == 1
    assert first["seconds"] is not None
    # The start-script GET closed the window (armed -> started); the complete script reported 0.
    assert [(e["kind"], e["details"].get("code")) for e in events
            if e["kind"] in ("attempt.started", "attempt.succeeded")] == [
        ("attempt.started", None), ("attempt.succeeded", "0")], events
    served = {e["details"].get("file") for e in events if e["kind"] == "tftp.sent"}
    assert {"pxelinux.0", "mboot.c32", "xenserver/xs84/boot/xen.gz", "xenserver/xs84/boot/vmlinuz",
            "xenserver/xs84/install.img"} <= {f.lstrip("/") for f in served}, served
    attempts = lab.cli("hosts", "attempts", BIOS_MAC)
    print(f"[e2e] attempts after the install boot:\n{attempts}")

    # Same MAC again: the window closed when the installer fetched its start script: a local boot.
    second = _local_boot(lab, "bios-again", BIOS_MAC, "bios")
    assert not _fetches(second["events"], BIOS_MAC, "answerfile")
    decisions = [(e["details"]["decision"], e["details"]["state"])
                 for e in _fetches(second["events"], BIOS_MAC, "config")]
    assert decisions == [("local_boot", "succeeded")], second["events"]
    assert "Booting from Hard Disk" in second["console"]
    assert not any("xen.gz" in str(e["details"].get("file")) for e in second["events"]), second["events"]
    assert "STANDIN" not in second["console"]


def test_uefi_install(lab):
    lab.cli("hosts", "add", UEFI_MAC, "--name", "e2e-uefi", "--pool", "e2e", "--disk", "/dev/sda",
            "--firmware", "uefi")
    lab.cli("hosts", "arm", UEFI_MAC, "--media", "xs84")
    result = _install_boot(lab, "uefi-install", UEFI_MAC, "uefi")
    console, events = result["console"], result["events"]
    assert _config_fetched(events, UEFI_MAC), [e["details"].get("file") for e in events]
    # GRUB's multiboot2 booted Xen under OVMF (the files came over HTTP, the config over TFTP).
    assert "(XEN)" in console, console[-4000:]
    assert {e["details"].get("what") for e in events if e["kind"] == "attempt.fetch"} >= {
        "config", "hypervisor", "kernel", "install.img", "answerfile", "complete-script"}
    assert [e["kind"] for e in events if e["kind"] in ("attempt.started", "attempt.succeeded")] == [
        "attempt.started", "attempt.succeeded"]
    assert "STANDIN: installation-start exit 0" in console, console[-4000:]
    assert "STANDIN: installation-complete exit 0" in console, console[-4000:]
    assert len(_fetches(events, UEFI_MAC, "answerfile")) == 1


def test_uefi_local_boot_starts_the_disks_efi_loader(lab):
    """A network-first UEFI host that is not armed: our GRUB's local answer finds the EFI loader on the disk's ESP and
    starts it (docs/firmware.md "Local boot on UEFI"); GRUB's plain `exit` made OVMF stop at its setup page."""
    lab.cli("hosts", "add", UEFI_LOCAL_MAC, "--name", "e2e-uefi-local", "--pool", "e2e", "--disk", "/dev/sda",
            "--firmware", "uefi")
    disk = e2e_disks.uefi_disk(lab.workdir / "uefi-local.img", lab.workdir)
    since = lab.last_event_id()
    boot = lab.boot("uefi-local", UEFI_LOCAL_MAC, "uefi", disk=disk)
    try:
        events = _wait(lab, boot, since, lambda ev: _config_fetched(ev, UEFI_LOCAL_MAC), LOCAL_TIMEOUT)
        assert _config_fetched(events, UEFI_LOCAL_MAC), f"no per-MAC config fetched:\n{boot.process.text()[-3000:]}"
        deadline = time.time() + LOCAL_TIMEOUT
        while e2e_disks.LOCAL_DISK not in boot.process.text():
            assert time.time() < deadline and boot.process.proc.poll() is None, \
                f"the disk's loader did not run; console:\n{boot.process.text()[-3000:]}"
            time.sleep(0.5)
        print(f"\nuefi-local: config to disk loader {time.time() - boot.started:.1f} s after power-on")
    finally:
        boot.process.stop()
    events = lab.events(since_id=since)
    assert not _fetches(events, UEFI_LOCAL_MAC, "answerfile")
    assert not [e for e in events if e["kind"] == "attempt.fetch"]


@pytest.mark.parametrize("mac,registered", [(UNKNOWN_MAC, False), (UNARMED_MAC, True)],
                         ids=["unregistered", "registered-unarmed"])
def test_no_installer_without_armed_attempt(lab, mac, registered):
    if registered:
        lab.cli("hosts", "add", mac, "--name", "e2e-unarmed", "--pool", "e2e", "--disk", "/dev/sda")
    result = _local_boot(lab, f"local-{_dashes(mac)}", mac, "bios")
    events = result["events"]
    assert not _fetches(events, mac, "answerfile")
    assert not [e for e in events if e["kind"] == "attempt.fetch"]
    assert not any("xenserver/" in str(e["details"].get("file")) for e in events if e["kind"] == "tftp.sent")
    assert "STANDIN" not in result["console"]
    assert "Booting from Hard Disk" in result["console"]
    assert [e["details"]["source"] for e in events if e["kind"] == "tftp.sent"
            and e["details"]["file"] == f"pxelinux.cfg/01-{_dashes(mac)}"] == ["dynamic"]



IPXE_MAC = e2e_lab.IPXE_SCRIPT_MAC


def test_bios_ipxe_script_install_then_local_boot(lab):
    """DHCP hands this MAC's iPXE (the SeaBIOS e1000 ROM, Debian's ipxe-qemu) the URL of our iPXE script: on BIOS
    it chains to pxelinux.0 (Debian's iPXE cannot load the gzip xen.gz: docs/firmware.md "iPXE on BIOS"), which
    boots the installer; the same MAC again gets the script's `exit` and SeaBIOS goes on to the (absent) disk."""
    lab.cli("hosts", "add", IPXE_MAC, "--name", "e2e-ipxe-bios", "--pool", "e2e", "--disk", "/dev/sda",
            "--firmware", "bios")
    lab.cli("hosts", "arm", IPXE_MAC, "--media", "xs84")

    first = _install_boot(lab, "ipxe-bios-install", IPXE_MAC, "bios")
    console, events = first["console"], first["events"]
    ipxe = _fetches(events, IPXE_MAC, "ipxe")
    assert [(e["details"]["decision"], e["details"]["loader"]) for e in ipxe] == [("installer", "ipxe")], events
    assert "(XEN)" in console or "Xen version" in console, console[-3000:]
    assert "STANDIN: installation-start exit 0" in console, console[-3000:]
    assert "STANDIN: installation-complete exit 0" in console, console[-3000:]
    assert len(_fetches(events, IPXE_MAC, "answerfile")) == 1
    # The big files came over TFTP through pxelinux (never over HTTP through iPXE).
    served = {e["details"].get("file", "").lstrip("/") for e in events if e["kind"] == "tftp.sent"}
    assert {"pxelinux.0", f"pxelinux.cfg/01-{_dashes(IPXE_MAC)}", "mboot.c32", "xenserver/xs84/boot/xen.gz",
            "xenserver/xs84/boot/vmlinuz", "xenserver/xs84/install.img"} <= served, served
    assert not [e for e in events if e["kind"] == "attempt.fetch" and e["details"].get("what") == "hypervisor"
                and "path" in e["details"]], events
    assert [(e["kind"], e["details"].get("code")) for e in events
            if e["kind"] in ("attempt.started", "attempt.succeeded")] == [
        ("attempt.started", None), ("attempt.succeeded", "0")], events

    # Same MAC again: the window closed; iPXE runs the local script's `exit`, SeaBIOS boots on (no disk here).
    since = lab.last_event_id()
    boot = lab.boot("ipxe-bios-again", IPXE_MAC, "bios")
    try:
        assert e2e_lab.wait_boot(boot, LOCAL_TIMEOUT) == "local", boot.process.text()[-3000:]
    finally:
        boot.process.stop()
    second = _report(lab, boot, since, "ipxe-bios-again")
    decisions = [(e["details"]["decision"], e["details"]["state"]) for e in _fetches(second["events"], IPXE_MAC, "ipxe")]
    assert decisions == [("local_boot", "succeeded")], second["events"]
    assert not [e for e in second["events"] if e["kind"] == "tftp.sent"], second["events"]
    assert "Booting from Hard Disk" in boot.process.text()
    assert "STANDIN" not in boot.process.text()
