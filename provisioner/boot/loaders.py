"""Fill tftp_root with the static network boot loaders: syslinux (BIOS) copied, GRUB (UEFI) built with grub-mkimage.

Only fixed file names are written here, never per-MAC configs: tftpy serves a real file in preference to the
dynamic per-MAC answer, so a stray config file under tftp_root would bypass the boot policy for every host.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from provisioner.boot.filenames import GRUB_CFG, MAC_IN_NAME, PXELINUX_DIR as PXELINUX_CFG_DIR
from provisioner.config import Config

PXELINUX_DIR = Path("/usr/lib/PXELINUX")  # Debian package pxelinux
SYSLINUX_BIOS_DIR = Path("/usr/lib/syslinux/modules/bios")  # Debian package syslinux-common
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")  # Debian package grub-efi-amd64-bin
GRUB_MKIMAGE = "grub-mkimage"  # Debian package grub-common (a dependency of grub-efi-amd64-bin)
DEBIAN_PACKAGES = ("pxelinux", "syslinux-common", "grub-efi-amd64-bin")
INSTALL_HINT = "apt-get install " + " ".join(DEBIAN_PACKAGES)

GRUB_IMAGE = "grubx64.efi"
# No device in the prefix: GRUB fills in the server it was loaded from, giving (tftp,<server>)/grub. Seen in a
# QEMU/OVMF boot of this image, it then asks (with a leading slash) for /grub/grub.cfg-01-<mac-with-dashes>,
# /grub/grub.cfg-<IP in hex, one digit shorter each time>, /grub/x86_64-efi/*.lst (absence is harmless) and
# finally /grub/grub.cfg. The TFTP server answers those names in memory.
GRUB_PREFIX = "/grub"
# Everything is embedded: nothing loads modules from the TFTP server at boot. multiboot2 + gzio load the
# 8.x xen.gz; regexp/test/net build per-MAC names; serial/terminal mirror the console the installer uses.
# (XenServer 9's xen_hypervisor/xen_module commands exist only in XenServer's own GRUB, not upstream x86.)
GRUB_MODULES = (
    "tftp", "http", "efinet", "net", "normal", "configfile", "echo", "linux", "multiboot2", "chain",
    "part_gpt", "part_msdos", "fat", "ext2", "search", "regexp", "test", "true", "sleep",
    "gzio", "boot", "serial", "terminal", "all_video", "efi_gop", "reboot", "halt", "minicmd", "ls", "cat",
)


class BootloaderError(RuntimeError):
    """The boot loaders cannot be put in place; the message names the missing files and packages."""


@dataclass(frozen=True)
class _Source:
    name: str  # file name in tftp_root
    path: Path  # where the distribution installs it
    package: str  # Debian package that ships it


def missing_loaders(root: Path) -> list[str]:
    """Boot loader files `prepare_tftp_root` would put in `root` that are not there (for serve's start-up check)."""
    wanted = [source.name for source in syslinux_sources()] + [GRUB_IMAGE]
    return [name for name in wanted if not (Path(root) / name).is_file()]


def syslinux_sources(pxelinux_dir: Path = PXELINUX_DIR, syslinux_dir: Path = SYSLINUX_BIOS_DIR) -> list[_Source]:
    """The BIOS loaders: pxelinux.0 (TFTP only) and lpxelinux.0 (also HTTP), plus the COM32 modules
    they load. mboot.c32 boots Xen (multiboot1); all must come from one syslinux version or they refuse to load."""
    return [
        _Source("pxelinux.0", Path(pxelinux_dir) / "pxelinux.0", "pxelinux"),
        _Source("lpxelinux.0", Path(pxelinux_dir) / "lpxelinux.0", "pxelinux"),
        *(_Source(name, Path(syslinux_dir) / name, "syslinux-common")
          for name in ("ldlinux.c32", "mboot.c32", "libcom32.c32", "libutil.c32")),
    ]


def prepare_tftp_root(config: Config, *, pxelinux_dir: Path = PXELINUX_DIR,
                      syslinux_dir: Path = SYSLINUX_BIOS_DIR, grub_dir: Path = GRUB_EFI_DIR,
                      grub_mkimage: str = GRUB_MKIMAGE) -> list[str]:
    """Copy/build the boot loaders into config.tftp_root; one report line per file (created/updated/unchanged).

    Idempotent and atomic per file (temp name + rename). Everything is checked before anything is written.
    """
    sources = syslinux_sources(pxelinux_dir, syslinux_dir)
    missing = [f"{s.path} (package {s.package})" for s in sources if not s.path.is_file()]
    mkimage = shutil.which(grub_mkimage)
    if mkimage is None:
        missing.append(f"{grub_mkimage} (package grub-common, a dependency of grub-efi-amd64-bin)")
    missing += [f"{Path(grub_dir) / (m + '.mod')} (package grub-efi-amd64-bin)" for m in GRUB_MODULES
                if not (Path(grub_dir) / f"{m}.mod").is_file()]
    if missing:
        raise BootloaderError("boot loader files are missing: " + "; ".join(missing)
                              + f". Install them with: {INSTALL_HINT}")

    image = _build_grub_image(mkimage, Path(grub_dir))  # before writing anything: it is the step that can fail
    root = Path(config.tftp_root)
    root.mkdir(parents=True, exist_ok=True)
    report = [_install(root, s.name, s.path.read_bytes(), f"from {s.path}, package {s.package}") for s in sources]
    report.append(_install(root, GRUB_IMAGE, image, f"built by grub-mkimage -O x86_64-efi -p {GRUB_PREFIX} "
                                                    f"from {grub_dir}, package grub-efi-amd64-bin"))
    report += [f"warning: {path} is a static boot config: the TFTP server would serve it instead of the "
               "per-MAC answer; remove it" for path in stray_config_files(root)]
    return report


def scan_per_mac(root: Path) -> list[tuple[str, str]]:
    """One walk of `root` for per-MAC-looking names: a real file there would be served instead of the per-MAC
    decision. Sorted (entry, file) pairs of relative posix paths: a per-MAC-looking file is its own entry; a
    per-MAC-looking directory (pxelinux.cfg/ or MAC-named, trailing slash) gives (dir/, "") and (dir/, file)
    for each file under it. stray_per_mac_files reports the entries (serve's start-up refuses), and
    stray_config_files the files (install-loaders warns about each).

    Per-MAC-looking: pxelinux.cfg/ (pxelinux's per-MAC directory), grub.cfg* (GRUB's per-MAC names and the ISO
    grubx64.efi's EFI/xenserver/grub.cfg) and anything carrying a MAC address (filenames.MAC_IN_NAME)."""
    found: list[tuple[str, str]] = []
    inside: dict[str, str] = {}  # walked directory -> the per-MAC-looking directory entry holding it
    for dirpath, dirnames, filenames in os.walk(root):
        rel, entry = posixpath.normpath(Path(dirpath).relative_to(root).as_posix()), inside.get(dirpath)
        for name in dirnames:
            if entry is not None:
                inside[os.path.join(dirpath, name)] = entry
            elif name == PXELINUX_CFG_DIR or MAC_IN_NAME.search(name):
                inside[os.path.join(dirpath, name)] = posixpath.normpath(posixpath.join(rel, name)) + "/"
                found.append((inside[os.path.join(dirpath, name)], ""))
        for name in filenames:
            path = posixpath.normpath(posixpath.join(rel, name))
            if entry is not None:
                found.append((entry, path))
            elif name.startswith(GRUB_CFG) or MAC_IN_NAME.search(name):
                found.append((path, path))
    return sorted(found)


def stray_per_mac_files(root: Path) -> list[str]:
    """Files and directories under `root` that look per-MAC (scan_per_mac), one line each for serve's start-up error.

    The TFTP server asks the decision hook first for every name anyway; this check makes the mistake loud at start-up.
    """
    return sorted({entry for entry, _ in scan_per_mac(root)})


def describe_stray(found: Iterable[str], root: Path) -> str:
    names = list(found)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return (f"tftp_root {root} holds per-MAC-looking boot files ({shown}); per-MAC configs are generated "
            "in memory for each request, and a real file there would bypass the per-MAC decision "
            "(reinstall loops). Remove them.")


def stray_config_files(root: Path) -> list[str]:
    """Files under ROOT (relative paths) that would shadow the TFTP server's per-MAC answers: every file of
    scan_per_mac, the scan serve's start-up check makes (it names directories instead)."""
    return sorted(path for _, path in scan_per_mac(root) if path)


def _build_grub_image(mkimage: str, grub_dir: Path) -> bytes:
    """grub-mkimage output is byte-for-byte reproducible for the same GRUB build, so reruns compare equal."""
    with tempfile.TemporaryDirectory(prefix="provisioner-grub-") as tmp:
        out = Path(tmp) / GRUB_IMAGE
        cmd = [mkimage, "-O", "x86_64-efi", "-p", GRUB_PREFIX, "-d", str(grub_dir), "-o", str(out), *GRUB_MODULES]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BootloaderError(f"running {mkimage} failed: {exc}") from None
        if proc.returncode != 0 or not out.is_file():
            raise BootloaderError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()}. "
                                  f"Reinstall the GRUB packages: {INSTALL_HINT}")
        data = out.read_bytes()
    if data[:2] != b"MZ":
        raise BootloaderError(f"{mkimage} produced no EFI (PE) image; check the modules in {grub_dir}")
    return data


def _install(root: Path, name: str, data: bytes, origin: str) -> str:
    """Write DATA to ROOT/NAME via a temp file and rename, unless the same bytes are already there."""
    dest = root / name
    if dest.is_file() and not dest.is_symlink() and dest.read_bytes() == data:
        return f"{name}: unchanged ({origin})"
    status = "updated" if os.path.lexists(dest) else "created"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the TFTP server may run as another user
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return f"{name}: {status} ({origin})"
