"""tftp-root preparation from the installed Debian packages (pxelinux, syslinux-common, grub-efi-amd64-bin)."""

from __future__ import annotations

import filecmp
import os
import struct
from pathlib import Path

import pytest

from provisioner.boot.loaders import (
    GRUB_EFI_DIR, GRUB_IMAGE, GRUB_MODULES, INSTALL_HINT, PXELINUX_DIR, SYSLINUX_BIOS_DIR, BootloaderError,
    describe_stray, prepare_tftp_root, stray_config_files, stray_per_mac_files,
)

SYSLINUX_FILES = {
    "pxelinux.0": PXELINUX_DIR / "pxelinux.0",
    "lpxelinux.0": PXELINUX_DIR / "lpxelinux.0",
    "ldlinux.c32": SYSLINUX_BIOS_DIR / "ldlinux.c32",
    "mboot.c32": SYSLINUX_BIOS_DIR / "mboot.c32",
    "libcom32.c32": SYSLINUX_BIOS_DIR / "libcom32.c32",
    "libutil.c32": SYSLINUX_BIOS_DIR / "libutil.c32",
}
ALL_FILES = sorted([*SYSLINUX_FILES, GRUB_IMAGE])


@pytest.fixture
def tftp_config(config, tmp_path):
    return config.replace(tftp_root=tmp_path / "tftp")


def statuses(report: list[str]) -> dict[str, str]:
    return {line.split(":")[0]: line.split(":")[1].split()[0] for line in report if not line.startswith("warning")}


def test_prepare_copies_real_files_and_builds_grub(tftp_config):
    report = prepare_tftp_root(tftp_config)
    root = tftp_config.tftp_root
    assert statuses(report) == {name: "created" for name in ALL_FILES}
    assert sorted(os.listdir(root)) == ALL_FILES  # no temp files left, nothing per-MAC
    for name, source in SYSLINUX_FILES.items():
        assert filecmp.cmp(root / name, source, shallow=False), name
        assert (root / name).stat().st_mode & 0o777 == 0o644
    image = (root / GRUB_IMAGE).read_bytes()
    assert image[:2] == b"MZ"
    pe_offset = struct.unpack_from("<I", image, 0x3C)[0]
    assert image[pe_offset:pe_offset + 4] == b"PE\0\0"
    assert struct.unpack_from("<H", image, pe_offset + 4)[0] == 0x8664  # x86_64 machine type
    assert b"multiboot2" in image and b"efinet" in image  # the modules Xen needs are embedded


def test_prepare_is_idempotent_and_repairs_changed_files(tftp_config):
    prepare_tftp_root(tftp_config)
    root = tftp_config.tftp_root
    before = {name: (root / name).stat().st_ino for name in ALL_FILES}
    assert statuses(prepare_tftp_root(tftp_config)) == {name: "unchanged" for name in ALL_FILES}
    assert {name: (root / name).stat().st_ino for name in ALL_FILES} == before  # not even rewritten

    (root / "mboot.c32").write_bytes(b"corrupted")
    (root / GRUB_IMAGE).unlink()
    result = statuses(prepare_tftp_root(tftp_config))
    assert (result["mboot.c32"], result[GRUB_IMAGE], result["pxelinux.0"]) == ("updated", "created", "unchanged")
    assert filecmp.cmp(root / "mboot.c32", SYSLINUX_FILES["mboot.c32"], shallow=False)


def test_missing_packages_are_named_and_nothing_is_written(tftp_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BootloaderError) as err:
        prepare_tftp_root(tftp_config, pxelinux_dir=empty, syslinux_dir=empty, grub_dir=empty)
    message = str(err.value)
    assert "apt-get install pxelinux syslinux-common grub-efi-amd64-bin" in message
    assert INSTALL_HINT in message
    for piece in (f"{empty}/pxelinux.0 (package pxelinux)", f"{empty}/mboot.c32 (package syslinux-common)",
                  f"{empty}/multiboot2.mod (package grub-efi-amd64-bin)"):
        assert piece in message
    assert not tftp_config.tftp_root.exists()


def test_missing_grub_mkimage_is_named(tftp_config):
    with pytest.raises(BootloaderError, match=r"grub-mkimage-absent \(package grub-common.*apt-get install"):
        prepare_tftp_root(tftp_config, grub_mkimage="grub-mkimage-absent")
    assert not tftp_config.tftp_root.exists()


def test_grub_mkimage_failure_is_reported_and_leaves_no_partial_image(tftp_config, tmp_path):
    broken = tmp_path / "broken-grub"
    broken.mkdir()
    for module in GRUB_MODULES:  # modules "present", but no moddep.lst/kernel.img: grub-mkimage fails
        (broken / f"{module}.mod").write_bytes(b"not a module")
    with pytest.raises(BootloaderError, match=r"grub-mkimage.*failed \(exit 1\).*moddep\.lst"):
        prepare_tftp_root(tftp_config, grub_dir=broken)
    assert not tftp_config.tftp_root.exists()  # the image is built before anything is written


def test_stray_per_mac_configs_are_reported(tftp_config):
    root: Path = tftp_config.tftp_root
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "pxelinux.cfg" / "01-52-54-00-12-34-56").write_text("default local\n")
    (root / "grub").mkdir()
    (root / "grub" / "grub.cfg").write_text("")
    (root / "EFI" / "xenserver").mkdir(parents=True)
    (root / "EFI" / "xenserver" / "grub.cfg").write_text("")
    (root / "README.md").write_text("static only\n")
    expected = ["EFI/xenserver/grub.cfg", "grub/grub.cfg", "pxelinux.cfg/01-52-54-00-12-34-56"]
    assert stray_config_files(root) == expected
    warnings = [line for line in prepare_tftp_root(tftp_config) if line.startswith("warning")]
    assert [w.split()[1] for w in warnings] == expected
    assert (root / "pxelinux.cfg" / "01-52-54-00-12-34-56").exists()  # reported, never deleted by us


def test_debian_grub_has_every_module_we_embed():
    assert [m for m in GRUB_MODULES if not (GRUB_EFI_DIR / f"{m}.mod").is_file()] == []


def test_missing_loaders(tmp_path):
    from provisioner.boot.loaders import missing_loaders

    assert "pxelinux.0" in missing_loaders(tmp_path) and "grubx64.efi" in missing_loaders(tmp_path)
    for name in missing_loaders(tmp_path):
        (tmp_path / name).write_bytes(b"x")
    assert missing_loaders(tmp_path) == []


def test_stray_per_mac_files(tmp_path):
    root = tmp_path
    for name in ("pxelinux.0", "ldlinux.c32", "grubx64.efi", "boot/grub/fonts/unicode.pf2", "ok/readme"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    assert stray_per_mac_files(root) == []
    for name in ("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff",
                 "EFI/xenserver/grub.cfg", "ipxe/AABBCCDDEEFF.ipxe", "hosts/aa:bb:cc:dd:ee:01/x"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    assert stray_per_mac_files(root) == [
        "EFI/xenserver/grub.cfg", "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff", "hosts/aa:bb:cc:dd:ee:01/",
        "ipxe/AABBCCDDEEFF.ipxe", "pxelinux.cfg/"]
    message = describe_stray(stray_per_mac_files(root), root)
    assert "pxelinux.cfg/" in message and str(root) in message and "Remove them" in message
