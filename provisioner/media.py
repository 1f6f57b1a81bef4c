"""Import XenServer installation media (an extracted ISO tree or an .iso file) and resolve files inside it.

The tree is served unchanged over HTTP as the installer's `<source type="url">` and its boot files over
TFTP/HTTP, so we check here what the installer itself will check (`.treeinfo` + `repodata/repomd.xml`,
docs/installer.md "Installation source") instead of finding out on a host mid-upgrade. The only module importing
pycdlib.
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import logging
import os
import posixpath
import re
from pathlib import Path

import pycdlib

from provisioner import sites
from provisioner.config import Config
from provisioner.paths import real_path_under
from provisioner.model import Media
from provisioner.store import ConflictError, Store
from provisioner.staging import removed_on_error, staged_tree

log = logging.getLogger(__name__)

TREEINFO = ".treeinfo"
REPOMD = "repodata/repomd.xml"
# Boot files a network boot may need; recorded so the boot policy can tell what a tree can boot.
BOOT_FILES = ("boot/xen.gz", "boot/vmlinuz", "install.img", "boot/xen.efi")
EFI_DIR = "EFI/xenserver"
_TREEINFO_MAX = 1 << 20
_COPY_BLOCK = 1 << 20
_JOLIET_VERSION = re.compile(r";[0-9]+$")


class MediaError(ValueError):
    """The media cannot be used (missing or bad installer metadata, unreadable ISO); the message says why."""


def import_media(store: Store, config: Config, name: str, path: str | Path) -> Media:
    """Record an installation tree as media NAME: a directory is used in place, an .iso is extracted first.

    Raises ValidationError (bad name), ConflictError (name taken) or MediaError (not a usable tree).
    """
    name = Media.check_name(name)
    if store.get_media(name) is not None:
        raise ConflictError(f"media {name!r} already exists")
    source = Path(path).expanduser()
    if source.is_dir():
        found = _read_tree(name, source.resolve())
        media = _record(store, config, store.add_media(found), manifest(source.resolve()))
        log.info("media %s: using tree %s in place (%s %s)", name, media.path, media.product_name,
                 media.product_version)
        return media
    if not source.is_file():
        raise MediaError(f"{source} does not exist: expected an extracted XenServer ISO tree or an .iso file")

    media_root = Path(config.data_dir).expanduser() / "media"
    media_root.mkdir(parents=True, exist_ok=True)
    target = media_root.resolve() / name
    if target.exists() or target.is_symlink():
        raise MediaError(f"{target} already exists (left over from an earlier import?); remove it or pick another name")
    # Extract next to the target and rename at the end: a failed or interrupted import never leaves a
    # half-written tree under the media name (a crash leaves only a dot-named temp directory).
    with staged_tree(media_root.resolve(), name, target) as work:
        _extract_iso(source, work)
        media = dataclasses.replace(_read_tree(name, work), path=str(target))
    files = manifest(target)
    with removed_on_error(target):
        media = store.add_media(media)
    _record(store, config, media, files)
    log.info("media %s: extracted %s into %s (%s %s)", name, source, target, media.product_name,
             media.product_version)
    return media


def media_generation(media: Media) -> str:
    """Boot-config family: 'xs8' (8.x: BIOS mboot.c32 or UEFI multiboot2) or 'xs9' (UEFI only, xen_hypervisor)."""
    return "xs8" if media.version_key < (9,) else "xs9"


def resolve_media_file(media: Media, relpath: str) -> Path | None:
    """The real path of regular file RELPATH inside the media tree, or None if absent or outside the tree.

    Refuses absolute paths, `..` parts and symlinks (anywhere on the way) that lead out of the tree, so a
    client-chosen TFTP/HTTP path can never read other files. Dotfiles are allowed: the installer needs `.treeinfo`.
    """
    if not isinstance(relpath, str) or not relpath or "\x00" in relpath or relpath.startswith("/"):
        return None
    parts = [part for part in relpath.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    real = real_path_under(media.path, "/".join(parts))
    if real is None or not os.path.isfile(real):  # the tree's root itself is a directory: not served
        return None
    return Path(real)


# --- reading and checking a tree ---


def manifest(tree: Path) -> list[tuple[str, int, str]]:
    """(relpath, size, sha256) of every regular file in `tree`, sorted; a symlink counts when it stays in the tree
    (what resolve_media_file would serve), one leading out of it does not."""
    found = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(tree).as_posix()
            real = real_path_under(str(tree), rel)
            if real is None or not os.path.isfile(real):
                continue
            digest, size = hashlib.sha256(), 0
            with open(real, "rb") as handle:
                while chunk := handle.read(_COPY_BLOCK):
                    digest.update(chunk)
                    size += len(chunk)
            found.append((rel, size, digest.hexdigest()))
    return found


def _record(store: Store, config: Config, media: Media, files: list[tuple[str, int, str]]) -> Media:
    """An imported tree's manifest and this server's ready copy of it (what other sites sync from: mediasync.py;
    if this fails after the media row is written, the next serve start records both: mediasync.reconcile)."""
    store.set_media_manifest(media.name, files)
    store.set_media_copy(media.name, sites.server_id(config), config.site, "ready", media.path)
    return media


def tree_problems(media: Media) -> list[str]:
    """What is missing or broken in an imported tree now (empty: complete): the checks of the import, again,
    and every boot file recorded at import time (for `provisioner doctor`)."""
    tree = Path(media.path)
    if not tree.is_dir():
        return [f"the tree {tree} is gone"]
    try:
        _read_tree(media.name, tree)
    except MediaError as exc:
        return [str(exc)]
    return [f"{rel} is missing" for rel in media.boot_files if not _inside_file(tree, tree / rel)]


def _read_tree(name: str, tree: Path) -> Media:
    """Build the Media record for a tree after the checks the installer makes on a main repository."""
    info = _parse_treeinfo(tree)
    repomd = tree / REPOMD
    if not _inside_file(tree, repomd):
        raise MediaError(
            f"{tree} has no {REPOMD}: the installer only accepts a yum repository (.treeinfo + {REPOMD}) "
            "as its installation source; point at the root of an extracted XenServer ISO"
        )
    return Media(name=name, path=str(tree), boot_files=_boot_files(tree), **info)


def _parse_treeinfo(tree: Path) -> dict[str, str | None]:
    path = tree / TREEINFO
    why = "the installer reads the product and platform versions from it and refuses a source without it"
    if not _inside_file(tree, path):
        raise MediaError(f"{tree} has no {TREEINFO} file: {why}; point at the root of an extracted XenServer ISO")
    if path.stat().st_size > _TREEINFO_MAX:
        raise MediaError(f"{path} is larger than {_TREEINFO_MAX} bytes: not a XenServer .treeinfo")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise MediaError(f"{path} cannot be parsed as INI ({exc}): {why}") from None

    def get(section: str, option: str) -> str | None:
        value = parser.get(section, option, fallback="").strip()
        return value or None

    # The installer reads [system-v1] when present, else [platform]/[branding] (repository.py _getVersion).
    if parser.has_section("system-v1"):
        product_version = get("system-v1", "product_version")
        platform_version = get("system-v1", "platform_version")
        product_name = get("system-v1", "product_name") or get("system-v1", "product_brand")
    else:
        product_version = get("branding", "version")
        platform_version = get("platform", "version")
        product_name = get("branding", "name")
    build = get("build", "number") or get("system-v1", "build_number")
    for key, section, value in (("product_version", "branding", product_version),
                                ("platform_version", "platform", platform_version)):
        if value is None or not value[0].isdigit():
            raise MediaError(f"{path} has no valid {key} ([system-v1] {key}, or [{section}] version; "
                             f"got {value!r}): {why}")
    return {"product_name": product_name or "", "product_version": product_version,
            "platform_version": platform_version, "build": build}


def _inside_file(tree: Path, path: Path) -> bool:
    real = Path(os.path.realpath(path))
    return real.is_file() and Path(os.path.realpath(tree)) in real.parents


def _boot_files(tree: Path) -> tuple[str, ...]:
    found = [rel for rel in BOOT_FILES if _inside_file(tree, tree / rel)]
    efi = tree / EFI_DIR
    if efi.is_dir() and not efi.is_symlink():
        for dirpath, dirnames, filenames in os.walk(efi):
            dirnames.sort()
            for filename in sorted(filenames):
                full = Path(dirpath) / filename
                if _inside_file(tree, full):
                    found.append(full.relative_to(tree).as_posix())
    return tuple(found)


# --- ISO extraction ---


def extract_iso(iso_path: Path, dest: Path) -> None:
    """Copy every file of the ISO at ISO_PATH into the existing directory DEST (packs.py imports pack ISOs with it);
    MediaError if it is not a complete, readable ISO."""
    _extract_iso(iso_path, dest)


def _extract_iso(iso_path: Path, dest: Path) -> None:
    """Copy every file of the ISO into DEST using its Rock Ridge (else Joliet) names."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(iso_path))
    except Exception as exc:  # pycdlib raises assorted errors (not only PyCdlibException) on non-ISO input
        raise MediaError(f"{iso_path} is not a readable ISO 9660 image: {exc}") from None
    try:
        # pycdlib reads a truncated image (an interrupted download) without complaint and returns empty or
        # short files; the installer would then die on a host mid-upgrade. The volume size says how long it is.
        volume_bytes = iso.pvd.space_size * iso.pvd.logical_block_size()
        if iso_path.stat().st_size < volume_bytes:
            raise MediaError(f"{iso_path} is truncated: {iso_path.stat().st_size} bytes, but its volume "
                             f"descriptor says {volume_bytes}; download it again")
        # Plain ISO 9660 names are upper-case 8.3 with ';1' and cannot start with a dot, so `.treeinfo`
        # only survives in the Rock Ridge or Joliet names (XenServer ISOs carry both).
        if iso.has_rock_ridge():
            kind = "rr_path"
        elif iso.has_joliet():
            kind = "joliet_path"
        else:
            raise MediaError(f"{iso_path} has neither Rock Ridge nor Joliet names, so its .treeinfo cannot be found")
        for dirpath, _dirs, files in iso.walk(**{kind: "/"}):
            rel_dir = [_safe_name(iso_path, part) for part in dirpath.split("/") if part]
            out_dir = dest.joinpath(*rel_dir)
            out_dir.mkdir(exist_ok=True)  # walk() is top-down: the parent already exists
            for filename in files:
                iso_file = posixpath.join(dirpath, filename)
                if kind == "joliet_path":
                    # mkisofs-style Joliet names keep the ISO 9660 version suffix (".treeinfo;1"); the
                    # Linux kernel strips it when mounting, and so do we.
                    filename = _JOLIET_VERSION.sub("", filename)
                _safe_name(iso_path, filename)
                if kind == "rr_path" and iso.get_record(rr_path=iso_file).is_symlink():
                    _extract_symlink(iso, iso_file, rel_dir, out_dir / filename)
                    continue
                iso.get_file_from_iso(str(out_dir / filename), blocksize=_COPY_BLOCK, **{kind: iso_file})
    except MediaError:
        raise
    except OSError as exc:
        raise MediaError(f"extracting {iso_path} failed: {exc}") from None
    except Exception as exc:  # pycdlib raises assorted errors on damaged images; report them, do not crash
        raise MediaError(f"{iso_path} could not be read as an ISO image: {type(exc).__name__}: {exc}") from None
    finally:
        iso.close()


def _safe_name(iso_path: Path, name: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise MediaError(f"{iso_path} contains an unsafe file name {name!r}; refusing to extract it")
    return name


def _extract_symlink(iso: pycdlib.PyCdlib, iso_file: str, rel_dir: list[str], out: Path) -> None:
    """Recreate a Rock Ridge symlink only if it stays inside the tree (we serve the tree to the network)."""
    target = iso.get_record(rr_path=iso_file).rock_ridge.symlink_path().decode("utf-8", "replace")
    joined = posixpath.normpath(posixpath.join("/".join(rel_dir), target))
    if target.startswith("/") or joined == ".." or joined.startswith("../") or "\x00" in target:
        log.warning("media: skipping symlink %s -> %s: it points outside the installation tree", iso_file, target)
        return
    os.symlink(target, out)
