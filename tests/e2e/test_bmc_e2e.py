"""Issue 18 acceptance: libvirt QEMU domains whose disk boots first reach the installer stand-in only through their
BMC: the UEFI one through sushy-tools' Redfish emulator (libvirt driver), the BIOS one through virtualbmc (IPMI),
each driven by the product's `provisioner hosts netboot`; the next power-on boots the disk.

Both emulators keep the product's one-time network boot for ever (docs/lab.md "BMC boots over libvirt"):
sushy-tools' libvirt driver treats every override as Continuous (sushy_tools/emulator/main.py, the NOTE at
set_boot_device), virtualbmc rewrites <os><boot dev='network'/> whatever the persistence bit says
(virtualbmc/vbmc.py set_boot_device). A real BMC clears a one-time override on the boot that used it. So after the
stand-in the test does that part of the BMC's job through the same emulator (Redfish Hdd, IPMI bootdev disk) and
then holds that the power-on boots the disk without touching the network.
"""

from __future__ import annotations

import os
import time

import pytest

import bmc_lab
import e2e_lab

pytestmark = pytest.mark.e2e

UEFI_MAC = "52:54:00:e2:b0:01"
BIOS_MAC = "52:54:00:e2:b0:02"
USER, PASSWORD = "admin", "e2e-bmc-secret"
DISK_TIMEOUT = 120
INSTALL_TIMEOUT = 420


@pytest.fixture(scope="module")
def bmc(lab):
    why = bmc_lab.missing()
    if why and os.environ.get("PROVISIONER_E2E_REQUIRED"):
        pytest.fail(f"PROVISIONER_E2E_REQUIRED is set (make e2e, CI) but {why}")
    if why:
        pytest.skip(why)
    started = bmc_lab.ensure_libvirtd()
    dnsmasq = None
    try:
        bmc_lab.network_up()
        dnsmasq = bmc_lab.start_dnsmasq(lab.workdir)
        (lab.workdir / "bmc.password").write_text(PASSWORD + "\n")
        yield lab
    finally:
        if dnsmasq is not None:
            dnsmasq.stop()
        bmc_lab.network_down()
        bmc_lab.stop_daemons(started)


def _events(lab, since, mac):
    return [e for e in lab.events(since_id=since) if e.get("mac") == mac]


def _boot_cycle(lab, dom: bmc_lab.Domain, label: str, consume_once) -> None:
    """Disk first, then the BMC's one-time network boot to the stand-in, then the disk again."""
    mac = dom.mac
    # 1. An armed host whose disk boots first never reaches us on a plain power-on.
    since, mark, t0 = lab.last_event_id(), dom.mark(), time.time()
    bmc_lab.virsh("start", dom.name)
    assert dom.wait_console(bmc_lab.LOCAL_DISK, mark, DISK_TIMEOUT), \
        f"{label}: the disk did not boot first; console:\n{dom.console(mark)[-3000:]}"
    first_disk = round(time.time() - t0, 1)
    if not dom.wait_off(30):
        bmc_lab.virsh("destroy", dom.name, check=False)
    assert not [e for e in _events(lab, since, mac) if e["kind"].startswith("attempt.")], _events(lab, since, mac)

    # 2. The product's one-time network boot through the BMC.
    check = lab.cli("bmc", "check", mac)
    print(f"\n[e2e] {label}: {check.strip()}")
    since, mark, t0 = lab.last_event_id(), dom.mark(), time.time()
    out = lab.cli("hosts", "netboot", mac, "--yes")
    print(f"[e2e] {label}: {out.strip()}")
    assert dom.wait_off(INSTALL_TIMEOUT), f"{label}: still running after {INSTALL_TIMEOUT} s; " \
                                          f"console:\n{dom.console(mark)[-3000:]}"
    installed = round(time.time() - t0, 1)
    console, events = dom.console(mark), _events(lab, since, mac)
    for marker in e2e_lab.STANDIN_OK:
        assert marker in console, f"{label}: no {marker!r}; console:\n{console[-4000:]}"
    assert len(e2e_lab.fetches(events, mac, "answerfile")) == 1, events
    assert [e["kind"] for e in events if e["kind"] in ("attempt.started", "attempt.succeeded")] == [
        "attempt.started", "attempt.succeeded"], events
    answer = e2e_lab.fetches(events, mac, "answerfile")[0]
    to_answer = round(e2e_lab.event_ts(answer) - t0, 1)

    # 3. The one-time override is spent (what a real BMC does by itself, here through the emulator), then the
    # installer's reboot (here: the power button): the disk boots and the network is not tried.
    boot = consume_once()
    print(f"[e2e] {label}: override after the install, as a real BMC leaves it: {boot}")
    since, mark, t0 = lab.last_event_id(), dom.mark(), time.time()
    bmc_lab.virsh("start", dom.name)
    assert dom.wait_console(bmc_lab.LOCAL_DISK, mark, DISK_TIMEOUT), \
        f"{label}: no local boot after the install; console:\n{dom.console(mark)[-3000:]}"
    local = round(time.time() - t0, 1)
    if not dom.wait_off(30):
        bmc_lab.virsh("destroy", dom.name, check=False)
    assert not _events(lab, since, mac), _events(lab, since, mac)
    assert "STANDIN" not in dom.console(mark)
    print(f"[e2e] {label}: disk boot {first_disk} s; netboot through the BMC to the answer-file GET {to_answer} s, "
          f"stand-in done and powered off {installed} s; next power-on to the disk {local} s")


def test_uefi_redfish_libvirt(bmc):
    lab = bmc
    lab.cli("hosts", "add", UEFI_MAC, "--name", "e2e-bmc-uefi", "--pool", "e2e-bmc", "--disk", "/dev/sda",
            "--firmware", "uefi")
    lab.cli("hosts", "arm", UEFI_MAC, "--media", "xs84")
    dom = bmc_lab.Domain(f"pe2e-uefi-{os.getpid()}", UEFI_MAC, "uefi", lab.workdir)
    emulator = None
    try:
        emulator, url = bmc_lab.start_sushy(lab.workdir, [dom.uuid], USER, PASSWORD)
        lab.cli("hosts", "bmc", UEFI_MAC, "--kind", "redfish", "--address", url, "--username", USER,
                "--password-file", str(lab.workdir / "bmc.password"))
        _boot_cycle(lab, dom, "uefi/redfish",
                    lambda: bmc_lab.redfish_disk_first(url, dom.uuid, USER, PASSWORD))
    finally:
        if emulator is not None:
            emulator.stop()
        dom.remove(lab.workdir)


def test_bios_vbmc_libvirt(bmc):
    lab = bmc
    lab.cli("hosts", "add", BIOS_MAC, "--name", "e2e-bmc-bios", "--pool", "e2e-bmc", "--disk", "/dev/sda",
            "--firmware", "bios")
    lab.cli("hosts", "arm", BIOS_MAC, "--media", "xs84")
    dom = bmc_lab.Domain(f"pe2e-bios-{os.getpid()}", BIOS_MAC, "bios", lab.workdir)
    daemon = None
    try:
        daemon, address, _ = bmc_lab.start_vbmc(lab.workdir, dom.name, USER, PASSWORD)
        lab.cli("hosts", "bmc", BIOS_MAC, "--kind", "ipmi", "--address", address, "--username", USER,
                "--password-file", str(lab.workdir / "bmc.password"))
        _boot_cycle(lab, dom, "bios/ipmi", lambda: bmc_lab.ipmi_disk_first(address, USER, PASSWORD))
    finally:
        if daemon is not None:
            daemon.stop()
        dom.remove(lab.workdir)
