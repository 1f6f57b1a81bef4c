"""Supplemental packs and driver disks a media carries: read and check a pack repository, import it, scope it.

A pack is what the installer takes as an extra `<source>` (a supplemental pack) or a `<driver-source>` (a driver
disk): a yum repository with `update.xml` and `repodata/` (docs/packs.md "What the installer accepts"). We check
here what the installer will check on the host, so a bad pack is refused at import instead of failing an upgrade:
update.xml's root `<update>` with its `name-label` and `control`, the repodata's primary list holding the control
package, a driver disk's comps `drivers` group, and the product version the control package requires.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable

from provisioner.config import Config
from provisioner.media import MediaError, extract_iso
from provisioner.model import Media, Pack, ValidationError, normalize_mac, version_tuple
from provisioner.paths import real_path_under
from provisioner.store import ConflictError, Store
from provisioner.staging import removed_on_error, staged_tree

log = logging.getLogger(__name__)

UPDATE_XML = "update.xml"
REPOMD = "repodata/repomd.xml"
DRIVERS_GROUP = "drivers"  # the comps group DriverUpdateYumRepository.isRepo looks for (docs/packs.md)
PACKS_DIR = "packs"        # data_dir/packs/<media>/<pack>; also the URL part /media/<media>/packs/<pack>/
_XML_MAX = 8 << 20         # update.xml, repomd.xml, comps; primary.xml (unpacked) may be larger
_PRIMARY_MAX = 256 << 20
_REPO_NS = "{http://linux.duke.edu/metadata/repo}"
_COMMON_NS = "{http://linux.duke.edu/metadata/common}"
_RPM_NS = "{http://linux.duke.edu/metadata/rpm}"
_RELEASE = re.compile(r"[a-z0-9-]+-release")  # xenserver-release, xcp-ng-release: the product's own package
_FLAGS = {"EQ": "=", "GE": ">=", "GT": ">", "LE": "<=", "LT": "<"}


class PackError(MediaError):
    """The pack cannot be used (not a repository the installer accepts, wrong product, unknown host); says why."""


# --- reading a pack tree ---


def _inside(tree: Path, rel: str) -> Path | None:
    real = real_path_under(str(tree), rel)
    return Path(real) if real is not None and os.path.isfile(real) else None


def _xml(tree: Path, rel: str, why: str, *, limit: int = _XML_MAX) -> ET.Element:
    path = _inside(tree, rel)
    if path is None:
        raise PackError(f"{tree} has no {rel}: {why}")
    data = path.read_bytes()[: limit + 1]
    if rel.endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as unpacked:
                data = unpacked.read(limit + 1)
        except (OSError, EOFError) as exc:
            raise PackError(f"{path} is not a readable gzip file ({exc}): {why}") from None
    if len(data) > limit:
        raise PackError(f"{path} is larger than {limit} bytes: not pack metadata")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise PackError(f"{path} declares a DOCTYPE/entities: refused (pack metadata has none)")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise PackError(f"{path} is not well-formed XML ({exc}): {why}") from None


def _repodata(tree: Path, repomd: ET.Element) -> dict[str, str]:
    """type -> location href of each repomd <data> (primary, group, ...)."""
    found = {}
    for data in repomd.iter(f"{_REPO_NS}data"):
        location = data.find(f"{_REPO_NS}location")
        if location is not None and location.get("href"):
            found.setdefault(data.get("type", ""), location.get("href"))
    return found


def _drivers_group(tree: Path, data: dict[str, str]) -> tuple[str, ...] | None:
    """The package names of the comps group 'drivers' (None: no such group, so not a driver disk)."""
    href = data.get("group") or data.get("group_gz")
    if not href:
        return None
    comps = _xml(tree, href, "repomd.xml names it as the group (comps) file")
    for group in comps.iter("group"):
        if (group.findtext("id") or "").strip() == DRIVERS_GROUP:
            return tuple((req.text or "").strip() for req in group.iter("packagereq") if (req.text or "").strip())
    return None


def _control_requires(tree: Path, primary_href: str, control: str) -> list[dict[str, str]]:
    """The control package's rpm requirements (name, flags, ver); PackError if the package is not listed."""
    primary = _xml(tree, primary_href, "the installer lists the packages from it", limit=_PRIMARY_MAX)
    for package in primary.iter(f"{_COMMON_NS}package"):
        if (package.findtext(f"{_COMMON_NS}name") or "").strip() != control:
            continue
        return [{"name": e.get("name", ""), "flags": e.get("flags", ""), "ver": e.get("ver", "")}
                for requires in package.iter(f"{_RPM_NS}requires") for e in requires.iter(f"{_RPM_NS}entry")]
    raise PackError(f"{tree}: update.xml names control package {control!r}, which {primary_href} does not list: "
                    "the installer installs that package and would fail on the host")


def product_requirement(requires: Iterable[dict[str, str]]) -> dict[str, str] | None:
    """The control package's requirement on the product's release package (xenserver-release etc.), if any."""
    for entry in requires:
        if _RELEASE.fullmatch(entry.get("name", "")) and entry.get("flags") in _FLAGS and entry.get("ver"):
            return {"name": entry["name"], "op": _FLAGS[entry["flags"]], "version": entry["ver"]}
    return None


def requirement_problem(requirement: dict[str, str] | None, media: Media) -> str | None:
    """Why `media`'s product version does not satisfy the pack's requirement (None: it does, or none is given).
    The version is compared on the requirement's own length: '= 8.4.0' accepts 8.4.0, '>= 8.2' accepts 8.4.0."""
    if requirement is None:
        return None
    want = version_tuple(requirement["version"])
    have = version_tuple(media.product_version)[: len(want)]
    have = have + (0,) * (len(want) - len(have))
    ok = {"=": have == want, ">=": have >= want, ">": have > want, "<=": have <= want, "<": have < want}
    if ok[requirement["op"]]:
        return None
    return (f"it requires {requirement['name']} {requirement['op']} {requirement['version']}, but media "
            f"{media.name!r} is {media.product_name or 'XenServer'} {media.product_version}")


def read_pack_tree(tree: Path) -> dict[str, Any]:
    """What the installer reads from a pack repository, checked: label, version, kind, control, requirement."""
    why = "a supplemental pack or driver disk is a yum repository with update.xml (the installer's " \
          "UpdateYumRepository); point at the root of the extracted pack ISO"
    update = _xml(tree, UPDATE_XML, why)
    if update.tag != "update":
        raise PackError(f"{tree}/{UPDATE_XML}: root element <{update.tag}> is not <update> (the installer asserts it)")
    label, control = (update.get("name-label") or "").strip(), (update.get("control") or "").strip()
    for key, value in (("name-label", label), ("control", control)):
        if not value:
            raise PackError(f"{tree}/{UPDATE_XML} has no {key} attribute: the installer installs the packages "
                            "'<control>' and 'update-<name-label>' from it")
    repomd = _xml(tree, REPOMD, "the installer reads the package list from it (YumRepository._parse_repodata)")
    data = _repodata(tree, repomd)
    if not data.get("primary"):
        raise PackError(f"{tree}/{REPOMD} names no primary package list: the installer fails reading the repository")
    requires = _control_requires(tree, data["primary"], control)
    drivers = _drivers_group(tree, data)
    description = (update.findtext("name-description") or "").strip()
    return {"label": label, "version": (update.get("version") or "").strip() or None,
            "kind": "driver" if drivers is not None else "pack",
            "details": {"uuid": update.get("uuid") or None, "control": control, "description": description,
                        "requires": product_requirement(requires), "drivers": list(drivers or ())}}


# --- import ---


def _scope(store: Store, hosts: Iterable[str], pools: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    macs = []
    for raw in hosts:
        try:
            mac = normalize_mac(raw)
        except ValidationError as exc:
            raise PackError(f"--host {raw!r}: {exc}") from None
        if store.get_host(mac) is None:
            raise PackError(f"--host {mac}: no such host is registered (add it with `provisioner hosts add`)")
        macs.append(mac)
    known_pools = {p.name for p in store.list_pools()} | {h.pool for h in store.list_hosts()}
    for pool in pools:
        if pool not in known_pools:
            raise PackError(f"--pool {pool!r}: no such pool (known: {', '.join(sorted(known_pools)) or 'none'})")
    return tuple(dict.fromkeys(macs)), tuple(dict.fromkeys(pools))


def import_pack(store: Store, config: Config, media_name: str, path: str | Path, *, name: str | None = None,
                driver: bool = False, hosts: Iterable[str] = (), pools: Iterable[str] = ()) -> Pack:
    """Import the pack ISO or tree at PATH into the data dir as a pack of MEDIA (temp + rename: never half there).

    `driver` asserts it is a driver disk: refused if its metadata does not make it one to the installer.
    """
    media = store.get_media(media_name)
    if media is None:
        known = ", ".join(m.name for m in store.list_media()) or "none"
        raise PackError(f"no media named {media_name!r} (known: {known})")
    source = Path(path).expanduser()
    if not source.exists():
        raise PackError(f"{source} does not exist: expected a supplemental pack / driver disk ISO or its tree")
    try:
        name = Media.check_name(name or source.name.removesuffix(".iso"))
    except ValidationError as exc:
        raise PackError(f"pack name {name or source.name!r}: {exc}; pass --name (letters, digits, . _ -)") from None
    if store.get_pack(media.name, name) is not None:
        raise ConflictError(f"media {media.name!r} already has a pack named {name!r} (remove it first or pass --name)")
    if os.path.lexists(os.path.join(media.path, PACKS_DIR, name)):
        raise PackError(f"media {media.name!r} has its own {PACKS_DIR}/{name} in its tree, which the pack's URL "
                        "would hide; pass another --name")
    macs, pool_names = _scope(store, hosts, pools)
    root = Path(config.data_dir).expanduser().resolve() / PACKS_DIR / media.name
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if target.exists() or target.is_symlink():
        raise PackError(f"{target} already exists (left over from an earlier import?); remove it or pick another name")
    with staged_tree(root, name, target) as work:
        if source.is_dir():
            shutil.rmtree(work)
            shutil.copytree(source, work, symlinks=True)  # symlinks kept as links: resolve_media_file confines them
        else:
            try:
                extract_iso(source, work)
            except PackError:
                raise
            except MediaError as exc:  # the same ISO checks as media: not an ISO, truncated, unsafe names
                raise PackError(str(exc)) from None
        info = read_pack_tree(work)
        if driver and info["kind"] != "driver":
            raise PackError(f"{source}: --driver given, but its repodata has no comps group '{DRIVERS_GROUP}': "
                            "the installer's driver-source would not load it as a driver disk")
        problem = requirement_problem(info["details"]["requires"], media)
        if problem:
            raise PackError(f"{source} cannot go with media {media.name!r}: {problem}")
    pack = Pack(media=media.name, name=name, kind=info["kind"], path=str(target), label=info["label"],
                version=info["version"], hosts=macs, pools=pool_names, details=info["details"])
    with removed_on_error(target):
        pack = store.add_pack(pack)
    log.info("media %s: pack %s (%s %s, %s) imported into %s", media.name, name, pack.label, pack.version, pack.kind,
             target)
    return pack


def remove_pack(store: Store, config: Config, media_name: str, name: str) -> Pack:
    """Forget the pack and delete its imported tree (only ever one we made under data_dir/packs)."""
    pack = store.remove_pack(media_name, name)
    root = (Path(config.data_dir).expanduser().resolve() / PACKS_DIR).resolve()
    target = Path(pack.path)
    if root in target.resolve().parents:
        shutil.rmtree(target, ignore_errors=True)
    return pack


def packs_for(store: Store, media_name: str, host) -> list[Pack]:
    """The packs of `media_name` that apply to `host`, in the order added (the answer files' order)."""
    return [p for p in store.list_packs(media_name) if p.applies_to(host)]


__all__ = ["PackError", "import_pack", "packs_for", "read_pack_tree", "remove_pack"]
