"""Media import (tree and ISO), .treeinfo checks, safe path resolution and boot generation."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pycdlib
import pytest

from helpers import make_media_tree
from provisioner.media import MediaError, import_media, media_generation, resolve_media_file
from provisioner.model import Media, ValidationError
from provisioner.store import ConflictError

XS8_BOOT_FILES = ("boot/xen.gz", "boot/vmlinuz", "install.img", "EFI/xenserver/grub.cfg", "EFI/xenserver/grubx64.efi")


def build_iso(tree: Path, iso_path: Path, *, rock_ridge: bool = True, joliet: bool = True,
              symlinks: dict[str, str] | None = None, joliet_file_suffix: str = "") -> Path:
    """Write TREE into an ISO with pycdlib (ISO 9660 names are generated; RR/Joliet carry the real ones)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="XS_TEST", rock_ridge="1.09" if rock_ridge else None,
            joliet=3 if joliet else None)
    counter = iter(range(1, 10_000))
    iso_dirs = {tree: ""}

    def names(real: Path, suffix: str = "") -> dict[str, str]:
        kwargs = {}
        if rock_ridge:
            kwargs["rr_name"] = real.name
        if joliet:
            kwargs["joliet_path"] = "/" + real.relative_to(tree).as_posix() + suffix
        return kwargs

    for dirpath, dirnames, filenames in os.walk(tree):
        base = Path(dirpath)
        for dirname in sorted(dirnames):
            iso_dir = f"{iso_dirs[base]}/D{next(counter):04d}"
            iso_dirs[base / dirname] = iso_dir
            iso.add_directory(iso_dir, **names(base / dirname))
        for filename in sorted(filenames):
            data = (base / filename).read_bytes()
            iso.add_fp(io.BytesIO(data), len(data), f"{iso_dirs[base]}/F{next(counter):04d}.;1",
                       **names(base / filename, joliet_file_suffix))
    for link, target in (symlinks or {}).items():
        iso.add_symlink(symlink_path=f"/L{next(counter):04d}.;1", rr_symlink_name=link, rr_path=target)
    iso.write(str(iso_path))
    iso.close()
    return iso_path


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def media_dir_entries(config) -> list[str]:
    media_root = config.data_dir / "media"
    return sorted(os.listdir(media_root)) if media_root.exists() else []


# --- directory trees ---


def test_good_tree_is_recorded_in_place(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "xs84")
    media = import_media(store, config, "xs84", tree)
    assert (media.name, media.product_name, media.product_version, media.platform_version, media.build) == (
        "xs84", "XenServer", "8.4.0", "3.4.0", "12345")
    assert media.path == str(tree.resolve())
    assert media.boot_files == XS8_BOOT_FILES
    assert media.added_at
    assert store.get_media("xs84") == media
    assert [e["details"]["name"] for e in store.events(kind="media.added")] == ["xs84"]
    assert media_dir_entries(config) == []  # a tree is served where it is, never copied


def test_xs9_tree_records_xen_efi_and_generation(store, config, tmp_path):
    media = import_media(store, config, "xs9", make_media_tree(tmp_path / "xs9", version="9.0.0", build="9"))
    assert "boot/xen.efi" in media.boot_files
    assert media_generation(media) == "xs9"


def test_relative_directory_path_is_recorded_absolute(store, config, tmp_path, monkeypatch):
    make_media_tree(tmp_path / "trees" / "xs84")
    monkeypatch.chdir(tmp_path / "trees")
    media = import_media(store, config, "xs84", "xs84")
    assert media.path == str((tmp_path / "trees" / "xs84").resolve())


def test_legacy_platform_and_branding_sections(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "xcp")
    (tree / ".treeinfo").write_text(
        "[platform]\nname = XCP\nversion = 3.2.1\n\n[branding]\nname = XCP-ng\nversion = 8.2.1\n")
    media = import_media(store, config, "xcp", tree)
    assert (media.product_name, media.product_version, media.platform_version, media.build) == (
        "XCP-ng", "8.2.1", "3.2.1", None)


def test_tree_without_treeinfo_is_refused(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "t")
    (tree / ".treeinfo").unlink()
    with pytest.raises(MediaError, match=r"no \.treeinfo.*installer"):
        import_media(store, config, "t", tree)
    assert store.list_media() == []


def test_treeinfo_symlink_leading_outside_is_refused(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "t")
    outside = tmp_path / "outside.ini"
    outside.write_bytes((tree / ".treeinfo").read_bytes())
    (tree / ".treeinfo").unlink()
    (tree / ".treeinfo").symlink_to(outside)
    with pytest.raises(MediaError, match=r"no \.treeinfo"):
        import_media(store, config, "t", tree)


def test_tree_without_repomd_is_refused(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "t")
    (tree / "repodata" / "repomd.xml").unlink()
    with pytest.raises(MediaError, match=r"no repodata/repomd\.xml.*yum repository"):
        import_media(store, config, "t", tree)
    assert store.list_media() == []


@pytest.mark.parametrize("content, problem", [
    (b"product_version = 8.4.0\n", "cannot be parsed"),  # no section header
    (b"[system-v1]\nproduct_version = 8.4.0\n[system-v1]\nplatform_version = 3.4.0\n", "cannot be parsed"),
    (b"[system-v1]\nplatform_version = 3.4.0\n", "no valid product_version"),
    (b"[system-v1]\nproduct_version = \nplatform_version = 3.4.0\n", "no valid product_version"),
    (b"[system-v1]\nproduct_version = latest\nplatform_version = 3.4.0\n", "no valid product_version"),
    (b"[system-v1]\nproduct_version = 8.4.0\n", "no valid platform_version"),
    (b"[branding]\nname = XenServer\n", "no valid product_version"),
    (b"\xff\xfe[\x00s\x00", "cannot be parsed"),  # not UTF-8 text
])
def test_bad_treeinfo_is_refused(store, config, tmp_path, content, problem):
    tree = make_media_tree(tmp_path / "t")
    (tree / ".treeinfo").write_bytes(content)
    with pytest.raises(MediaError, match=problem) as err:
        import_media(store, config, "t", tree)
    assert ".treeinfo" in str(err.value)
    assert store.list_media() == []


def test_missing_path_is_refused(store, config, tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        import_media(store, config, "t", tmp_path / "nope")


@pytest.mark.parametrize("name", ["", "   ", "../x", "a/b", ".hidden", "-x", "x" * 65, "a b"])
def test_bad_name_is_refused(store, config, tmp_path, name):
    tree = make_media_tree(tmp_path / "t")
    with pytest.raises(ValidationError):
        import_media(store, config, name, tree)
    assert store.list_media() == []


def test_duplicate_name_is_refused(store, config, tmp_path):
    first = import_media(store, config, "xs", make_media_tree(tmp_path / "a"))
    with pytest.raises(ConflictError, match="already exists"):
        import_media(store, config, "xs", make_media_tree(tmp_path / "b", version="8.4.1"))
    iso = build_iso(make_media_tree(tmp_path / "c"), tmp_path / "c.iso")
    with pytest.raises(ConflictError, match="already exists"):
        import_media(store, config, "xs", iso)
    assert store.list_media() == [first]
    assert media_dir_entries(config) == []


# --- ISO files ---


def test_iso_import_extracts_tree(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "src")
    iso = build_iso(tree, tmp_path / "xs84.iso")
    media = import_media(store, config, "xs84", iso)
    target = (config.data_dir / "media" / "xs84").resolve()
    assert media.path == str(target)
    assert tree_files(target) == tree_files(tree)  # names (dotfiles, case) and bytes survive
    assert media.boot_files == XS8_BOOT_FILES
    assert (media.product_version, media.build) == ("8.4.0", "12345")
    assert media_dir_entries(config) == ["xs84"]  # no temp directory left behind
    assert target.stat().st_mode & 0o777 == 0o755
    assert store.get_media("xs84") == media


def test_joliet_only_iso_keeps_names(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "src", version="9.0.1")
    media = import_media(store, config, "xs9", build_iso(tree, tmp_path / "j.iso", rock_ridge=False))
    assert tree_files(Path(media.path)) == tree_files(tree)
    assert media_generation(media) == "xs9"


def test_joliet_version_suffix_is_stripped(store, config, tmp_path):
    """ISOs made by mkisofs keep ';1' on Joliet file names; the kernel's mounted view (and ours) drops it."""
    tree = make_media_tree(tmp_path / "src")
    iso = build_iso(tree, tmp_path / "j1.iso", rock_ridge=False, joliet_file_suffix=";1")
    media = import_media(store, config, "j1", iso)
    assert tree_files(Path(media.path)) == tree_files(tree)


def test_iso_symlinks_inside_kept_outside_skipped(store, config, tmp_path, caplog):
    iso = build_iso(make_media_tree(tmp_path / "src"), tmp_path / "l.iso",
                    symlinks={"xen-link": "boot/xen.gz", "passwd": "/etc/passwd", "up": "../../etc/passwd"})
    media = import_media(store, config, "l", iso)
    root = Path(media.path)
    assert os.readlink(root / "xen-link") == "boot/xen.gz"
    assert resolve_media_file(media, "xen-link") == (root / "boot" / "xen.gz").resolve()
    assert not os.path.lexists(root / "passwd") and not os.path.lexists(root / "up")
    assert "points outside the installation tree" in caplog.text


def test_iso_without_rock_ridge_or_joliet_is_refused(store, config, tmp_path):
    iso = build_iso(make_media_tree(tmp_path / "src"), tmp_path / "p.iso", rock_ridge=False, joliet=False)
    with pytest.raises(MediaError, match="neither Rock Ridge nor Joliet"):
        import_media(store, config, "p", iso)
    assert media_dir_entries(config) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no-repodata"])
def test_failed_iso_import_leaves_nothing_behind(store, config, tmp_path, damage):
    tree = make_media_tree(tmp_path / "src")
    iso = tmp_path / "bad.iso"
    if damage == "garbage":
        iso.write_bytes(os.urandom(64 * 1024))
    elif damage == "truncated":
        build_iso(tree, iso)
        data = iso.read_bytes()
        iso.write_bytes(data[: len(data) - 80 * 1024])  # directory records present, file data cut off
    else:
        (tree / "repodata" / "repomd.xml").unlink()
        build_iso(tree, iso)
    problem = {"garbage": "not a readable ISO", "truncated": "is truncated", "no-repodata": "no repodata"}[damage]
    with pytest.raises(MediaError, match=problem):
        import_media(store, config, "bad", iso)
    assert media_dir_entries(config) == []
    assert store.list_media() == []
    # the name is still free: a good ISO imports under it afterwards
    assert import_media(store, config, "bad", build_iso(make_media_tree(tmp_path / "ok"), tmp_path / "ok.iso"))


def test_leftover_target_directory_is_not_overwritten(store, config, tmp_path):
    leftover = config.data_dir / "media" / "xs"
    leftover.mkdir(parents=True)
    (leftover / "keep").write_text("x")
    iso = build_iso(make_media_tree(tmp_path / "src"), tmp_path / "xs.iso")
    with pytest.raises(MediaError, match="already exists"):
        import_media(store, config, "xs", iso)
    assert (leftover / "keep").read_text() == "x"
    assert media_dir_entries(config) == ["xs"]


# --- resolve_media_file and media_generation ---


@pytest.fixture
def media(store, config, tmp_path):
    tree = make_media_tree(tmp_path / "tree")
    (tmp_path / "secret").write_text("secret")
    (tmp_path / "secretdir").mkdir()
    (tmp_path / "secretdir" / "f").write_text("secret")
    (tree / "inner-link").symlink_to("boot/xen.gz")
    (tree / "outer-link").symlink_to(tmp_path / "secret")
    (tree / "boot" / "up-link").symlink_to("../../secret")
    (tree / "dir-link").symlink_to(tmp_path / "secretdir")
    return import_media(store, config, "m", tree)


@pytest.mark.parametrize("relpath, expected", [
    (".treeinfo", ".treeinfo"),
    ("boot/xen.gz", "boot/xen.gz"),
    ("./boot//vmlinuz", "boot/vmlinuz"),
    ("EFI/xenserver/grubx64.efi", "EFI/xenserver/grubx64.efi"),
    ("inner-link", "boot/xen.gz"),
])
def test_resolve_media_file_inside(media, relpath, expected):
    assert resolve_media_file(media, relpath) == Path(media.path) / expected


@pytest.mark.parametrize("relpath", [
    "", ".", "/", "/etc/passwd", "../secret", "boot/../../secret", "boot/../.treeinfo", "a\x00b",
    "boot", "missing", "outer-link", "boot/up-link", "dir-link/f", "..",
])
def test_resolve_media_file_refuses(media, relpath):
    assert resolve_media_file(media, relpath) is None


@pytest.mark.parametrize("version, generation", [
    ("7.1.2", "xs8"), ("8.2.1", "xs8"), ("8.4.0", "xs8"), ("8.99", "xs8"), ("9.0.0", "xs9"), ("10.1", "xs9"),
])
def test_media_generation(version, generation):
    media = Media(name="m", path="/x", product_name="XenServer", product_version=version,
                  platform_version="3.4.0", build=None)
    assert media_generation(media) == generation
