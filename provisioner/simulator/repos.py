"""How the simulated installer reads the extra repositories of an answer file: driver disks and supplemental packs.

The installer's own behaviour (docs/packs.md, from xenserver/host-installer): every `<driver-source>` is read
before the disks are looked at (install.py 171-187: processAnswerfileSetup, then repositoriesFromDefinition(...,
drivers=True) and installPackages of its 'drivers' group), and only then the answer file's mode and disk
(processAnswerfile). A driver repository is update.xml + repodata/repomd.xml whose comps has the group 'drivers'
(repository.py DriverUpdateYumRepository.isRepo); anything else is silently not a driver repository (no error, no
driver). After the main repository, every extra `<source>` and every driver source that is an update repository
(update.xml + repomd.xml) is installed too (backend.py 395-425). Written from those rules, sharing nothing with
provisioner/packs.py: a product bug makes the two disagree.

Which disk controller driver a package provides is the simulator's convention: a package named DRIVER or
DRIVER-<anything> (megaraid_sas-module) provides DRIVER.
"""

from __future__ import annotations

import gzip
import xml.dom.minidom
from dataclasses import dataclass
from typing import Callable
from xml.parsers.expat import ExpatError

Fetch = Callable[[str, str], bytes]  # (what, url) -> body; raises on 404 / errors (machine._get)

UPDATE_XML = "update.xml"
REPOMD = "repodata/repomd.xml"


@dataclass(frozen=True)
class Repo:
    """An update repository as the installer sees it: its update.xml identity and its comps group ids."""

    url: str
    label: str
    version: str
    groups: dict[str, tuple[str, ...]]  # comps group id -> package names

    @property
    def drivers(self) -> tuple[str, ...]:
        return self.groups.get("drivers", ())


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel.lstrip("/")


def _parse(data: bytes):
    try:
        return xml.dom.minidom.parseString(data).documentElement
    except (ExpatError, ValueError):
        return None


def read_update_repo(fetch: Fetch, url: str) -> Repo | None:
    """The update repository at `url`, or None when it is not one (a missing update.xml or repomd.xml: isRepo)."""
    try:
        update = _parse(fetch("repo", _join(url, UPDATE_XML)))
        repomd = _parse(fetch("repo", _join(url, REPOMD)))
    except Exception:  # noqa: BLE001 - Accessor.access(): any failure to open means "not there"
        return None
    if update is None or repomd is None or update.tagName != "update":
        return None
    groups: dict[str, tuple[str, ...]] = {}
    for data in repomd.getElementsByTagName("data"):
        if data.getAttribute("type") not in ("group", "group_gz"):
            continue
        for location in data.getElementsByTagName("location")[:1]:
            try:
                body = fetch("repo", _join(url, location.getAttribute("href")))
                comps = _parse(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
            except Exception:  # noqa: BLE001 - dnf finds no groups in a repository whose comps it cannot read
                comps = None
            for group in comps.getElementsByTagName("group") if comps is not None else ():
                ids = group.getElementsByTagName("id")
                gid = "".join(n.data for n in ids[0].childNodes if n.nodeType == n.TEXT_NODE).strip() if ids else ""
                names = tuple("".join(n.data for n in req.childNodes if n.nodeType == n.TEXT_NODE).strip()
                              for req in group.getElementsByTagName("packagereq"))
                groups.setdefault(gid, names)
    return Repo(url, update.getAttribute("name-label"), update.getAttribute("version"), groups)


def load_drivers(fetch: Fetch, driver_sources: tuple[str, ...]) -> tuple[list[Repo], set[str]]:
    """The driver repositories found among `driver_sources` and the package names their 'drivers' groups load."""
    found, loaded = [], set()
    for url in driver_sources:
        repo = read_update_repo(fetch, url)
        if repo is not None and "drivers" in repo.groups:  # DriverUpdateYumRepository.isRepo
            found.append(repo)
            loaded.update(repo.drivers)
    return found, loaded


def provides(loaded: set[str], driver: str) -> bool:
    """Whether the loaded driver packages include the disk controller's `driver` (the simulator's convention)."""
    return any(name == driver or name.startswith(driver + "-") for name in loaded)


def installed_packs(fetch: Fetch, extra_sources: tuple[str, ...], drivers: list[Repo]) -> dict[str, str]:
    """name-label -> version of every update repository installed after the main one: extra <source>s, then
    the driver repositories (backend.py: answers['extra-repos'] are installed like update repositories)."""
    packs: dict[str, str] = {}
    for url in extra_sources:
        repo = read_update_repo(fetch, url)
        if repo is not None:
            packs.setdefault(repo.label, repo.version)
    for repo in drivers:
        packs.setdefault(repo.label, repo.version)
    return packs
