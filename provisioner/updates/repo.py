"""Read and check a XenServer 8 update repository's yum metadata (docs/updates.md "What is checked").

Pure functions over bytes and a local tree; nothing here downloads, unpacks or stores. repomd.xml names every
metadata file with its checksum; primary lists the packages (the version of `xenserver-release` is the product
version the repository is for); updateinfo lists the updates with their guidances, parsed with XAPI's own rules
(updateinfo.ml) so that a repository XAPI would refuse is refused here first.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import lzma
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

REPOMD = "repodata/repomd.xml"
SIGNATURE = "repodata/repomd.xml.asc"
RELEASE_PACKAGE = "xenserver-release"
METADATA_MAX = 256 << 20  # a decompressed primary/updateinfo above this is not a XenServer repository
REPOMD_MAX = 1 << 20
GUIDANCE_KINDS = ("mandatory", "recommended", "full", "livepatch")
# XAPI's guidance names (updateinfo.ml Guidance.of_string); any other value XAPI treats as RebootHost
GUIDANCES = ("RebootHost", "RestartToolstack", "EvacuateHost", "RestartDeviceModel", "RestartVM")
_HASHES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256", "sha384": "sha384",
           "sha512": "sha512"}


class RepoError(ValueError):
    """The repository is unusable (missing, truncated or malformed metadata, a file failing its checksum)."""


@dataclasses.dataclass(frozen=True)
class MetaFile:
    """One <data> of repomd.xml."""

    kind: str
    href: str
    checksum_type: str
    checksum: str


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    version: str
    release: str
    arch: str
    href: str
    checksum_type: str
    checksum: str
    size: int | None


@dataclasses.dataclass(frozen=True)
class RepoContent:
    """What the repository says: the product version it is for, its updates and the level they reach."""

    product_version: str
    release: str
    api_version: str | None
    updates: tuple[dict[str, Any], ...]  # {id, type, title, issued, severity, guidance: {kind: [names]}}

    @property
    def update_level(self) -> str:
        """The newest `issued` date of its updates ('' for none): the level a host reaches by applying them all."""
        return max((u["issued"] for u in self.updates), default="")

    def as_details(self) -> dict[str, Any]:
        return {"release": self.release, "api_version": self.api_version, "updates": list(self.updates),
                "update_level": self.update_level}


def _xml(data: bytes, what: str) -> ET.Element:
    # No DTDs at all: repository metadata never has one, and it is the door to entity-expansion bombs.
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise RepoError(f"{what} carries a DOCTYPE/ENTITY declaration: repository metadata never does")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise RepoError(f"{what} is not well-formed XML ({exc})") from None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(elem: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in elem if _local(child.tag) == name]


def _text(elem: ET.Element, name: str) -> str:
    found = _children(elem, name)
    return (found[0].text or "").strip() if found else ""


def safe_href(href: str, what: str) -> str:
    """A location inside the repository: relative, no '..', no NUL or backslash (else RepoError)."""
    parts = href.split("/")
    if not href or href.startswith("/") or ".." in parts or "\0" in href or "\\" in href or "://" in href:
        raise RepoError(f"{what} names the location {href!r}, which is not a path inside the repository")
    return "/".join(p for p in parts if p not in ("", "."))


def parse_repomd(data: bytes) -> dict[str, MetaFile]:
    """repomd.xml -> {type: MetaFile}; RepoError unless primary and updateinfo are both named, each once
    (XAPI: invalid_repomd_xml, "Missing or multiple '<type>' node(s)", updateinfo.ml RepoMetaData)."""
    if len(data) > REPOMD_MAX:
        raise RepoError(f"{REPOMD} is larger than {REPOMD_MAX} bytes")
    root = _xml(data, REPOMD)
    if _local(root.tag) != "repomd":
        raise RepoError(f"{REPOMD} has no <repomd> root element")
    found: dict[str, MetaFile] = {}
    for node in _children(root, "data"):
        kind = node.get("type", "")
        checksum = _children(node, "checksum")
        location = _children(node, "location")
        if not checksum or not location or not (checksum[0].text or "").strip() or not location[0].get("href"):
            raise RepoError(f"{REPOMD}: <data type={kind!r}> has no checksum or location")
        if kind in found:
            raise RepoError(f"{REPOMD} names {kind!r} twice")
        ctype = checksum[0].get("type", "sha256")
        if ctype not in _HASHES:
            raise RepoError(f"{REPOMD}: checksum type {ctype!r} of {kind!r} is not one yum uses (sha1/sha256/sha512)")
        found[kind] = MetaFile(kind, safe_href(location[0].get("href", ""), f"{REPOMD} <data type={kind!r}>"),
                               ctype, checksum[0].text.strip().lower())
    for kind in ("primary", "updateinfo"):
        if kind not in found:
            raise RepoError(f"{REPOMD} names no {kind!r} metadata: not an update repository (XAPI refuses it: "
                            "invalid_repomd_xml)")
    return found


def digest(checksum_type: str, data: bytes) -> str:
    return hashlib.new(_HASHES[checksum_type], data).hexdigest()


def file_digest(checksum_type: str, path: Path) -> tuple[str, int]:
    """(hex digest, size) of a file, read in blocks."""
    h, size = hashlib.new(_HASHES[checksum_type]), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def decompress(href: str, data: bytes) -> bytes:
    """The XML inside a metadata file (.gz, .xz, .bz2 or plain), bounded by METADATA_MAX."""
    opener: Callable[..., Any] | None = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}.get(
        os.path.splitext(href)[1])
    if opener is None:
        out = data
    else:
        try:
            with opener(io.BytesIO(data), "rb") as f:
                out = f.read(METADATA_MAX + 1)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise RepoError(f"{href} cannot be decompressed ({exc}): truncated or corrupt") from None
    if len(out) > METADATA_MAX:
        raise RepoError(f"{href} decompresses to more than {METADATA_MAX} bytes")
    return out


def parse_primary(xml: bytes, href: str) -> list[Package]:
    root = _xml(xml, href)
    packages = []
    for node in _children(root, "package"):
        version = _children(node, "version")
        checksum = _children(node, "checksum")
        location = _children(node, "location")
        size = _children(node, "size")
        if not version or not checksum or not location:
            raise RepoError(f"{href}: package {_text(node, 'name')!r} has no version, checksum or location")
        ctype = checksum[0].get("type", "sha256")
        if ctype not in _HASHES:
            raise RepoError(f"{href}: package {_text(node, 'name')!r} has checksum type {ctype!r}")
        packages.append(Package(
            name=_text(node, "name"), version=version[0].get("ver", ""), release=version[0].get("rel", ""),
            arch=_text(node, "arch"), href=safe_href(location[0].get("href", ""), f"{href} package"),
            checksum_type=ctype, checksum=(checksum[0].text or "").strip().lower(),
            size=int(size[0].get("package")) if size and (size[0].get("package") or "").isdigit() else None))
    return packages


def _issued(node: ET.Element) -> str:
    found = _children(node, "issued")
    return (found[0].get("date") or "").strip() if found else ""


def parse_updateinfo(xml: bytes, href: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(xapi-api-version, updates) with XAPI's rules (updateinfo.ml UpdateInfo.of_xml): id, summary and type are
    required, ids are unique, severity is High or None, an <updates> with an api version must list updates."""
    root = _xml(xml, href)
    if _local(root.tag) != "updates":
        raise RepoError(f"{href} has no <updates> root element (XAPI refuses it: invalid_updateinfo_xml)")
    api_version = root.get("xapi-api-version")
    updates: list[dict[str, Any]] = []
    for node in _children(root, "update"):
        uid, summary, utype = _text(node, "id"), _text(node, "summary"), node.get("type", "")
        if not uid or not summary or not utype:
            raise RepoError(f"{href}: an update lacks its id, summary or type ({uid or '?'}; XAPI refuses it: "
                            "invalid_updateinfo_xml)")
        severity = _text(node, "severity") or "None"
        if severity not in ("High", "None"):
            raise RepoError(f"{href}: update {uid} has severity {severity!r} (XAPI knows High and None)")
        guidance: dict[str, list[str]] = {kind: [] for kind in GUIDANCE_KINDS}
        for block in _children(node, "guidance"):
            for kind_node in block:
                kind = _local(kind_node.tag)
                if kind in guidance:
                    # XAPI maps an unknown guidance value to RebootHost (the safe side); so do we
                    guidance[kind] = [v if v in GUIDANCES else "RebootHost"
                                      for v in ((c.text or "").strip() for c in _children(kind_node, "value"))]
        updates.append({"id": uid, "type": utype, "title": _text(node, "title"), "issued": _issued(node),
                        "severity": severity, "guidance": guidance})
    ids = [u["id"] for u in updates]
    if len(set(ids)) != len(ids):
        raise RepoError(f"{href} lists an update id twice (XAPI refuses it: invalid_updateinfo_xml)")
    if api_version is not None and not updates:
        raise RepoError(f"{href} has xapi-api-version {api_version} but no update (XAPI refuses it: "
                        "invalid_updateinfo_xml)")
    return api_version, sorted(updates, key=lambda u: (u["issued"], u["id"]))


def content(packages: list[Package], api_version: str | None, updates: list[dict[str, Any]]) -> RepoContent:
    """The RepoContent of parsed metadata; RepoError when no xenserver-release package says the product version."""
    release = [p for p in packages if p.name == RELEASE_PACKAGE]
    if not release:
        raise RepoError(f"its package list has no {RELEASE_PACKAGE} package, whose version is the product version "
                        "a XenServer repository is for: cannot tell which product it updates")
    newest = max(release, key=lambda p: (_vtuple(p.version), p.release))
    return RepoContent(product_version=newest.version, release=newest.release, api_version=api_version,
                       updates=tuple(updates))


def _vtuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


def read_tree(root: Path) -> RepoContent:
    """Check a local repository completely (every metadata file and package present with its checksum) and read
    it; RepoError naming the first problem."""
    root = Path(root)
    repomd_path = root / REPOMD
    if not repomd_path.is_file():
        raise RepoError(f"it has no {REPOMD}: not a yum repository (an update bundle is a tar of one)")
    meta = parse_repomd(repomd_path.read_bytes())
    raw: dict[str, bytes] = {}
    for entry in meta.values():
        path = root / entry.href
        if not path.is_file():
            raise RepoError(f"{entry.href} (the {entry.kind} metadata {REPOMD} names) is missing: incomplete "
                            "repository or truncated bundle")
        found, _ = file_digest(entry.checksum_type, path)
        if found != entry.checksum:
            raise RepoError(f"{entry.href} fails its {entry.checksum_type} checksum ({found}, {REPOMD} says "
                            f"{entry.checksum}): truncated or altered")
        if entry.kind in ("primary", "updateinfo"):
            raw[entry.kind] = decompress(entry.href, path.read_bytes())
    packages = parse_primary(raw["primary"], meta["primary"].href)
    for pkg in packages:
        path = root / pkg.href
        if not path.is_file():
            raise RepoError(f"{pkg.href} (package {pkg.name}) is missing: incomplete repository or truncated bundle")
        found, size = file_digest(pkg.checksum_type, path)
        if found != pkg.checksum or (pkg.size is not None and size != pkg.size):
            raise RepoError(f"{pkg.href} fails its {pkg.checksum_type} checksum or size ({size} bytes): truncated "
                            "or altered")
    api_version, updates = parse_updateinfo(raw["updateinfo"], meta["updateinfo"].href)
    return content(packages, api_version, updates)
