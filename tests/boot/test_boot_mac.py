"""A host that network-boots from another NIC than its management MAC (boot_mac) is recognised by that MAC,
over real TFTP; a multipath (boot-from-SAN) host's installer line carries device_mapper_multipath=enabled
(docs/installer.md "Boot parameters")."""

import dataclasses
import io

import pytest
import tftpy
from helpers import make_media_tree

from provisioner import media, registry, states
from provisioner.boot import attempts, configs, policy
from provisioner.boot.configs import GRUB, IPXE, PXELINUX
from provisioner.config import load_config
from provisioner.model import Attempt, Host, Media
from provisioner.runtime import Runtime

MGMT, BOOT, OTHER = "52:54:00:00:00:01", "52:54:00:00:00:b1", "52:54:00:00:00:02"
TOKEN = "Zm9vYmFyLWJhei1xdXV4LTAxMjM0NTY3"


def dashed(mac):
    return mac.replace(":", "-")


@pytest.fixture
def running(config, store, tmp_path):
    root = tmp_path / "tftp_root"
    root.mkdir()
    cfg = config.replace(tftp_root=root)
    media.import_media(store, cfg, "xs84", make_media_tree(tmp_path / "tree"))
    registry.add_host(store, {"mac": MGMT, "name": "h1", "pool": "p", "disk": "/dev/disk/by-id/d-h1",
                              "boot_mac": BOOT, "multipath": True})
    registry.add_host(store, {"mac": OTHER, "name": "h2", "pool": "p", "disk": "/dev/disk/by-id/d-h2"})
    rt = Runtime(cfg, store).start()
    yield rt, cfg
    rt.stop()


def tftp_get(rt, name):
    ip, port = rt.tftp.address
    out = io.BytesIO()
    tftpy.TftpClient(ip, port).download(name, out, timeout=2)
    return out.getvalue()


def test_an_armed_host_asking_with_its_boot_mac_gets_the_installer_over_tftp(running):
    rt, cfg = running
    assert b"localboot 0" in tftp_get(rt, f"pxelinux.cfg/01-{dashed(BOOT)}")  # known by its boot MAC, not armed
    attempt = attempts.arm(rt.store, cfg, MGMT, "xs84")
    body = tftp_get(rt, f"pxelinux.cfg/01-{dashed(BOOT)}")
    assert b"answerfile=" in body
    assert f"network_device={BOOT}".encode() in body  # the NIC that booted brings the installer up
    assert b" device_mapper_multipath=enabled " in body
    grub = tftp_get(rt, f"grub/grub.cfg-01-{dashed(BOOT)}")
    assert b"answerfile=" in grub and b"device_mapper_multipath=enabled" in grub
    # the fetch is on the host's attempt (events under the management MAC)
    fetched = [e for e in rt.store.events(mac=MGMT) if e["details"].get("attempt") == attempt.id]
    assert fetched
    # another host's MAC is still that other host's (not armed: local boot)
    assert b"localboot 0" in tftp_get(rt, f"pxelinux.cfg/01-{dashed(OTHER)}")


def test_decide_for_the_boot_mac_names_the_host_and_its_attempt(store, config, tmp_path):
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    registry.add_host(store, {"mac": MGMT, "name": "h1", "pool": "p", "disk": "/dev/sda", "boot_mac": BOOT})
    attempt = attempts.arm(store, config, MGMT, "xs84")
    for asked in (BOOT, MGMT):
        decision = attempts.decide_for(store, asked)
        assert decision.installer and decision.mac == MGMT and decision.attempt.id == attempt.id
    assert attempts.decide_for(store, "52:54:00:00:00:99").action == "default"


@pytest.fixture
def cfg(tmp_path):
    return load_config(file=None, environ={}, overrides={"data_dir": tmp_path, "public_url": "http://192.0.2.1:8080"})


# iPXE on BIOS chains to pxelinux.0 (docs/firmware.md "iPXE on BIOS"): its dom0 line is the pxelinux one.
@pytest.mark.parametrize("loader,firmware", [(PXELINUX, "bios"), (GRUB, "uefi")])
def test_the_multipath_flag_puts_the_installer_argument_in_the_dom0_line(cfg, loader, firmware):
    xs8 = Media(name="xs84", path="/srv/xs84", product_name="XenServer", product_version="8.4.0",
                platform_version="3.4.0", build="1")
    host = Host.from_fields({"mac": MGMT, "name": "h1", "pool": "p", "disk": "/dev/sda", "firmware": firmware})
    attempt = Attempt(id=7, mac=MGMT, media="xs84", token=TOKEN, state=states.ARMED)
    plain = configs.config_for(policy.decide(MGMT, host, attempt), loader, cfg, xs8).decode()
    assert "multipath" not in plain and f"network_device={MGMT}" in plain
    san = dataclasses.replace(host, multipath=True)
    body = configs.config_for(policy.decide(MGMT, san, attempt), loader, cfg, xs8).decode()
    dom0 = next(line for line in body.splitlines() if "answerfile=" in line)
    assert configs.MULTIPATH_ARG == "device_mapper_multipath=enabled"
    assert f" {configs.MULTIPATH_ARG} " in dom0
    if loader == PXELINUX:  # in the dom0 (vmlinuz) part, between the two "---"
        assert configs.MULTIPATH_ARG in dom0.split(" --- ")[1]
