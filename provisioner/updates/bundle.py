"""Import an offline update bundle (.xsbundle) into the data dir: copy, unpack with XAPI's rules, check, rename,
record (docs/updates.md "Import").

Nothing is half-imported: the bundle is copied and unpacked into a dot-named temporary directory next to its
final place, every check runs on that copy (so what is served is exactly what was checked), and only then is the
directory renamed to data_dir/updates/NAME and the record written in one transaction; any error removes the
temporary directory and leaves neither a record nor a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
from pathlib import Path

from provisioner.boot import urls
from provisioner.config import Config
from provisioner.store import ConflictError, Store, UpdateRepo
from provisioner.updates import checks, repo
from provisioner.staging import removed_on_error, staged_tree

log = logging.getLogger(__name__)

BUNDLE_FILE = urls.UPDATES_BUNDLE_FILE  # the served names (boot/urls.py)
REPO_DIR = urls.UPDATES_REPO_DIR
# XAPI's accounting of unpacked size (tar_ext.ml): each entry costs its size plus an inode, a directory 4096 more
_INODE, _DIR = 4096, 4096
_BLOCK = 1 << 20


class BundleError(ValueError):
    """The file is not a usable update bundle; the message says why and what to do."""


def updates_root(config: Config) -> Path:
    return Path(config.data_dir).expanduser() / "updates"


def import_bundle(store: Store, config: Config, name: str, source: Path, *, product_version: str | None,
                  allow_unsigned: bool) -> UpdateRepo:
    """Check the bundle at `source` and record it as update repository NAME (see the module docstring)."""
    if not source.is_file():
        raise BundleError(f"{source} does not exist or is not a file: expected an .xsbundle (or a mirror URL)")
    size = source.stat().st_size
    if size > config.updates_max_bytes:
        raise BundleError(f"{source} is {size} bytes, over updates_max_bytes ({config.updates_max_bytes}; XAPI "
                          "itself refuses bundles that unpack to more than 1 GiB)")
    root = updates_root(config)
    root.mkdir(parents=True, exist_ok=True)
    target = root.resolve() / name
    if target.exists() or target.is_symlink():
        raise BundleError(f"{target} already exists (left over from an earlier import?); remove it or pick another "
                          "name")
    with staged_tree(root.resolve(), name, target) as work:
        sha256 = _copy(source, work / BUNDLE_FILE)
        unpack(work / BUNDLE_FILE, work / REPO_DIR, config.updates_max_bytes, label=str(source))
        try:
            found = repo.read_tree(work / REPO_DIR)
        except repo.RepoError as exc:
            raise BundleError(f"{source} is not a usable update bundle: {exc}") from None
        checks.check_product(store, found, product_version)
        signed, signer = checks.check_signature(config, _read(work / REPO_DIR / repo.SIGNATURE),
                                                (work / REPO_DIR / repo.REPOMD).read_bytes(),
                                                allow_unsigned=allow_unsigned, what=str(source))
        record = UpdateRepo(name=name, kind="bundle", source=str(source), path=str(target), bundle_file=BUNDLE_FILE,
                            sha256=sha256, size=size, product_version=found.product_version, signed=signed,
                            unsigned=not signed, details={**found.as_details(), "signer": signer})
    with removed_on_error(target):
        added = store.add_update_repo(record)
    log.info("updates %s: imported %s (%s, %d updates, level %s, %s)", name, source, found.product_version,
             len(found.updates), found.update_level or "-", "signed" if signed else "UNSIGNED (--allow-unsigned)")
    return added


def remove_files(config: Config, record: UpdateRepo) -> None:
    """Delete an imported bundle's directory (after its record is gone), only if it is ours: under updates/."""
    if record.kind != "bundle" or not record.path:
        return
    path = Path(record.path)
    if path.parent.resolve() == updates_root(config).resolve() and path.name == record.name:
        shutil.rmtree(path, ignore_errors=True)


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _copy(source: Path, dest: Path) -> str:
    h = hashlib.sha256()
    with open(source, "rb") as src, open(dest, "xb") as out:
        while block := src.read(_BLOCK):
            h.update(block)
            out.write(block)
    os.chmod(dest, 0o644)
    return h.hexdigest()


def _legal(name: str) -> bool:
    """XAPI's rule for an entry's path (tar_ext.ml assert_file_path_is_legal): relative, no '.' or '..' part."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and "." not in parts and ".." not in parts and "\0" not in name


def unpack(bundle: Path, dest: Path, max_bytes: int, label: str | None = None) -> None:
    """Unpack a plain tar with XAPI's rules (tar_ext.ml): regular files and directories only, legal paths, the
    unpacked total within max_bytes, every file complete; and the archive must end with its end-of-archive blocks
    (a download cut at a member boundary is truncated too)."""
    dest.mkdir(mode=0o755)
    total = 0
    why = f"{label or bundle}: not an update bundle"
    with open(bundle, "rb") as f:
        magic = f.read(6)
    for prefix, kind in ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ", "xz"), (b"BZh", "bzip2")):
        if magic.startswith(prefix):
            raise BundleError(f"{why}: it is {kind}-compressed, and XAPI takes a plain tar (PUT /bundle reads the "
                              "raw tar stream); decompress it first")
    try:
        with tarfile.open(bundle, mode="r:") as tar:  # plain tar only: XAPI reads the raw tar stream
            if tar.pax_headers:
                raise BundleError(f"{why}: a pax global header (XAPI refuses it: Unsupported_file_type)")
            for member in tar:
                if not _legal(member.name):
                    raise BundleError(f"{why}: illegal path {member.name!r} (absolute, or a '.' or '..' part; XAPI "
                                      "refuses it: Illegal_file_path)")
                if member.pax_headers:
                    raise BundleError(f"{why}: {member.name} has a pax extended header (XAPI refuses it)")
                path = dest / member.name
                if member.type == tarfile.DIRTYPE:
                    total += _DIR + _INODE
                    _limit(total, max_bytes, why)
                    path.mkdir(mode=0o755, parents=True, exist_ok=True)
                elif member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    total += member.size + _INODE
                    _limit(total, max_bytes, why)
                    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    _write(tar, member, path, why)
                else:
                    raise BundleError(f"{why}: {member.name} is a {_kind(member)}; a bundle holds only files and "
                                      "directories (XAPI refuses it: Unsupported_file_type)")
            end = tar.offset
    except (tarfile.ReadError, EOFError) as exc:
        raise BundleError(f"{why}: the tar is truncated or corrupt ({exc}); download it again") from None
    except FileExistsError as exc:
        raise BundleError(f"{why}: {exc.filename} appears twice in the tar") from None
    except (NotADirectoryError, IsADirectoryError) as exc:
        raise BundleError(f"{why}: {exc.filename} is both a file and a directory in the tar") from None
    with open(bundle, "rb") as f:
        f.seek(end)
        tail = f.read(2 * tarfile.BLOCKSIZE)
    if len(tail) < 2 * tarfile.BLOCKSIZE or tail.strip(b"\0"):
        raise BundleError(f"{why}: the tar is truncated (it stops at byte {end} without its end-of-archive "
                          "blocks); download it again")


def _limit(total: int, max_bytes: int, why: str) -> None:
    if total > max_bytes:
        raise BundleError(f"{why}: it unpacks to more than {max_bytes} bytes (updates_max_bytes; XAPI: "
                          "Unpacked_exceeds_max_size_limit)")


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, why: str) -> None:
    src = tar.extractfile(member)
    assert src is not None  # a regular member always has a file object
    written = 0
    with src, open(path, "xb") as out:
        while block := src.read(min(_BLOCK, member.size - written) or 1):
            out.write(block)
            written += len(block)
            if written >= member.size:
                break
    if written != member.size:
        raise BundleError(f"{why}: {member.name} is cut short ({written} of {member.size} bytes): truncated tar; "
                          "download it again")
    os.chmod(path, 0o644)


def _kind(member: tarfile.TarInfo) -> str:
    return ("symbolic link" if member.issym() else "hard link" if member.islnk() else "device" if member.isdev()
            else "FIFO" if member.isfifo() else f"entry of type {member.type!r}")


__all__ = ["BUNDLE_FILE", "REPO_DIR", "BundleError", "ConflictError", "import_bundle", "remove_files", "unpack",
           "updates_root"]
