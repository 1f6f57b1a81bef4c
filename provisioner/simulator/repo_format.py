"""The simulator's own reader of update repositories: bundle tars, yum repo metadata, updateinfo, signatures.

Written from xapi's readers, not the product's (docs/xapi.md "Update repositories"): ocaml/xapi/tar_ext.ml
(unpack_tar_file: plain tar, path and size checks, its error strings), updateinfo.ml (RepoMetaData.of_xml_file,
UpdateInfo.of_xml), and what `dnf reposync` with `repo_gpgcheck=1` checks before xapi reads anything (the
detached signature repodata/repomd.xml.asc against the configured key, every metadata file and package against
its sha256). The repository is a dict path -> bytes: a bundle's content, or what a mirror sync fetched.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

MAX_BUNDLE_SIZE = 1024 ** 3  # xapi_globs.ml:1028 bundle_max_size_limit (1 GiB)
GUIDANCE_KINDS = ("mandatory", "recommended", "full")  # updateinfo.ml:33-41 (livepatch not simulated)
GUIDANCES = ("RebootHost", "RestartToolstack", "EvacuateHost", "RestartDeviceModel", "RestartVM")  # :20-57


class UnpackError(Exception):
    """Tar_ext.unpack_error: the message is unpack_error_to_string's (tar_ext.ml:42-64)."""


class RepoError(Exception):
    """The repository cannot be synced or read (reposync fails; invalid repomd / updateinfo)."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    release: str
    epoch: str = "0"
    arch: str = "x86_64"

    @property
    def evr(self) -> tuple:
        return (_num(self.epoch), _verkey(self.version), _verkey(self.release))


@dataclass(frozen=True)
class Update:
    """One <update> of updateinfo.xml (updateinfo.ml:590-700): id, guidance per kind, its packages."""

    id: str
    summary: str = ""
    type: str = "bugfix"
    guidance: dict = field(default_factory=dict, compare=False, hash=False)  # kind -> tuple of guidance names
    packages: tuple[Package, ...] = ()


@dataclass
class Repo:
    """A synced repository: the updateinfo checksum (xapi's Repository.hash), its updates, its files."""

    checksum: str
    updates: dict[str, Update]
    files: dict[str, bytes]
    api_version: str | None = None


# ---- tar (tar_ext.ml) -------------------------------------------------------------------------------------
def unpack_tar(data: bytes, max_size: int = MAX_BUNDLE_SIZE) -> dict[str, bytes]:
    """tar_ext.ml:77-170 unpack_tar_file: regular files and directories only, no absolute or dotted paths,
    a running size limit (+4096 per inode), a short file is File_incomplete, a bad header checksum
    File_corrupted."""
    files: dict[str, bytes] = {}
    pos, acc = 0, 0
    while True:
        header = data[pos:pos + 512]
        if len(header) < 512:
            raise UnpackError("File incomplete")
        if header == b"\0" * 512:
            return files  # End_of_stream
        stored = header[148:156].split(b"\0")[0].strip()
        check = sum(header[:148]) + 8 * 32 + sum(header[156:])
        try:
            if int(stored or b"0", 8) != check:
                raise UnpackError("File corrupted")
            size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
        except ValueError:
            raise UnpackError("File corrupted") from None
        name = header[0:100].split(b"\0")[0].decode()
        prefix = header[345:500].split(b"\0")[0].decode() if header[257:262] == b"ustar" else ""
        name = f"{prefix}/{name}" if prefix else name
        kind = header[156:157]
        parts = name.rstrip("/").split("/")
        if name.startswith("/") or "." in parts or ".." in parts:
            raise UnpackError(f"Illegal file path: {name}")
        pos += 512
        if kind in (b"0", b"\0"):
            acc += size + 4096
            if acc > max_size:
                raise UnpackError(f"Stop unpacking, otherwise unpacked files exceed max size limit: {max_size}")
            body = data[pos:pos + size]
            if len(body) < size:
                raise UnpackError("File incomplete")
            files[name] = body
            pos += (size + 511) // 512 * 512
        elif kind == b"5":
            acc += 4096 + 4096
            if acc > max_size:
                raise UnpackError(f"Stop unpacking, otherwise unpacked files exceed max size limit: {max_size}")
        else:
            names = {b"1": "Hard", b"2": "Symbolic", b"3": "Character", b"4": "Block", b"6": "FIFO",
                     b"g": "GlobalExtendedHeader", b"x": "PerFileExtendedHeader", b"L": "LongLink"}
            raise UnpackError(f"Unsupported file type: {names.get(kind, kind.decode(errors='replace'))}")


# ---- repo metadata (updateinfo.ml RepoMetaData, UpdateInfo) ----------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node, name: str) -> list:
    return [c for c in node if _local(c.tag) == name]


def _text(node, name: str) -> str:
    found = _children(node, name)
    return (found[0].text or "").strip() if found else ""


def repomd_entries(repomd: bytes) -> dict[str, dict]:
    """type -> {checksum, location} of each <data> of repomd.xml (updateinfo.ml:262-300)."""
    try:
        root = ET.fromstring(repomd)
    except ET.ParseError:
        raise RepoError("invalid repomd.xml") from None
    if _local(root.tag) != "repomd":
        raise RepoError("invalid repomd.xml")
    entries = {}
    for data in _children(root, "data"):
        loc = _children(data, "location")
        sums = _children(data, "checksum")
        entries[data.get("type", "")] = {"checksum": (sums[0].text or "").strip() if sums else "",
                                         "checksum_type": sums[0].get("type", "") if sums else "",
                                         "location": loc[0].get("href", "") if loc else ""}
    return entries


def open_metadata(files: dict[str, bytes], location: str) -> bytes:
    """A metadata file by its repomd location, gunzipped when it is .gz."""
    body = files[location]
    return gzip.decompress(body) if location.endswith(".gz") else body


def _packages(node) -> tuple[Package, ...]:
    return tuple(Package(p.get("name", ""), p.get("version", ""), p.get("release", ""), p.get("epoch") or "0",
                         p.get("arch", "")) for p in node.iter() if _local(p.tag) == "package")


def parse_updateinfo(xml: bytes) -> tuple[str | None, dict[str, Update]]:
    """updateinfo.ml:590-720 UpdateInfo.of_xml: <updates xapi-api-version=..>; each <update> needs id, summary
    and type; guidance values per kind; an unknown guidance falls back to RebootHost (:62-64); duplicate ids
    are invalid."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        raise RepoError("invalid updateinfo.xml") from None
    if _local(root.tag) != "updates":
        raise RepoError("Failed to parse updateinfo.xml: missing <updates>")
    updates: dict[str, Update] = {}
    for u in _children(root, "update"):
        uid, summary, kind = _text(u, "id"), _text(u, "summary"), u.get("type", "")
        if not uid or not summary or not kind:
            raise RepoError("One or more of 'id', 'summary', and 'type' is/are missing")
        if uid in updates:
            raise RepoError("Found updates with same upadte ID")
        guidance: dict[str, tuple[str, ...]] = {}
        for g in _children(u, "guidance"):
            for block in g:
                if _local(block.tag) in GUIDANCE_KINDS:
                    values = [(v.text or "").strip() for v in _children(block, "value")]
                    guidance[_local(block.tag)] = tuple(v if v in GUIDANCES else "RebootHost" for v in values)
        pkgs = _children(u, "pkglist")
        updates[uid] = Update(uid, summary, kind, guidance, _packages(pkgs[0]) if pkgs else ())
    return root.get("xapi-api-version"), updates


def primary_packages(xml: bytes) -> list[tuple[str, str]]:
    """(location, sha256) of every package in primary.xml: what reposync downloads and checks."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        raise RepoError("invalid primary.xml") from None
    found = []
    for p in _children(root, "package"):
        loc, sums = _children(p, "location"), _children(p, "checksum")
        found.append((loc[0].get("href", "") if loc else "", (sums[0].text or "").strip() if sums else ""))
    return found


def verify_signature(repomd: bytes, signature: bytes | None, key: bytes | None) -> None:
    """repo_gpgcheck=1 (repository_helpers.ml write_yum_config, repository.ml:243-246): repomd.xml must carry a
    detached signature made by the configured key; checked with gpgv, as dnf's gpg does."""
    if not signature:
        raise RepoError("repomd.xml.asc missing: repo_gpgcheck failed")
    if not key:
        raise RepoError("no repository GPG key configured: repo_gpgcheck failed")
    with tempfile.TemporaryDirectory(prefix="sim-gpg-") as tmp:
        d = Path(tmp)
        (d / "repomd.xml").write_bytes(repomd)
        (d / "repomd.xml.asc").write_bytes(signature)
        if key.lstrip().startswith(b"-----BEGIN PGP"):  # an armored key file (what gpgkey_path names)
            (d / "key.asc").write_bytes(key)
            dearmor = subprocess.run(["gpg", "--batch", "--homedir", tmp, "--yes", "-o", str(d / "key.gpg"),
                                      "--dearmor", str(d / "key.asc")], capture_output=True, timeout=60)
            if dearmor.returncode != 0:
                raise RepoError("the configured repository GPG key cannot be read")
        else:  # already a binary keyring
            (d / "key.gpg").write_bytes(key)
        check = subprocess.run(["gpgv", "--homedir", tmp, "--keyring", str(d / "key.gpg"),
                                str(d / "repomd.xml.asc"), str(d / "repomd.xml")], capture_output=True, timeout=60)
        if check.returncode != 0:
            raise RepoError("repomd.xml signature check failed: " + check.stderr.decode(errors="replace")[-200:])


def read_repo(files: dict[str, bytes], key: bytes | None, *, gpgcheck: bool = True) -> Repo:
    """What reposync + parse_updateinfo leave: signature first, then every metadata file and package checked
    against its sha256 (a missing or changed file fails the sync), then the updateinfo parsed."""
    files = {(k[2:] if k.startswith("./") else k): v for k, v in files.items()}
    root = _repo_root(files)
    files = {k[len(root):]: v for k, v in files.items() if k.startswith(root)}
    repomd = files.get("repodata/repomd.xml")
    if repomd is None:
        raise RepoError("repodata/repomd.xml missing")
    if gpgcheck:
        verify_signature(repomd, files.get("repodata/repomd.xml.asc"), key)
    entries = repomd_entries(repomd)
    for kind, e in entries.items():
        body = files.get(e["location"])
        if body is None:
            raise RepoError(f"{e['location']} ({kind}) missing")
        if hashlib.sha256(body).hexdigest() != e["checksum"]:
            raise RepoError(f"{e['location']} ({kind}): checksum does not match repomd.xml")
    if "primary" in entries:
        for location, digest in primary_packages(open_metadata(files, entries["primary"]["location"])):
            body = files.get(location)
            if body is None or hashlib.sha256(body).hexdigest() != digest:
                raise RepoError(f"package {location} missing or damaged")
    info = entries.get("updateinfo")
    if info is None or not info["checksum"] or not info["location"]:
        raise RepoError("invalid repomd.xml: no updateinfo")  # RepoMetaData.of_xml_file UpdateInfo
    api, updates = parse_updateinfo(open_metadata(files, info["location"]))
    return Repo(info["checksum"], updates, files, api)


def _repo_root(files: dict[str, bytes]) -> str:
    """The directory holding repodata/ (a bundle may wrap the tree in one top directory)."""
    for name in files:
        if name.endswith("repodata/repomd.xml"):
            return name[: -len("repodata/repomd.xml")]
    return ""


def files_of(path: Path) -> dict[str, bytes]:
    """A bundle file (tar) or a repository directory as path -> bytes."""
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    return unpack_tar(path.read_bytes())


def _num(s: str) -> int:
    return int(s) if str(s).isdigit() else 0


def _verkey(s: str) -> tuple:
    """A simple rpmvercmp: numeric runs compare as numbers, alphabetic runs as strings (numbers rank higher)."""
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in re.findall(r"\d+|[a-zA-Z]+", s))
