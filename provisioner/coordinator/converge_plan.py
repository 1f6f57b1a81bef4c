"""The run's update repository (`--updates NAME`, store/updates.py) and what `upgrade plan` says about it: its checks
and the updates per host.

Reads only. Per host it compares the host's update level as XAPI shows it (host.last_update_hash) with the hash
the pool already synced from this repository (its Repository record, when an earlier run introduced it): equal =>
nothing to apply; otherwise every update of the repository (an ISO upgrade lands on the ISO's base level, so an
upgraded host takes them all; docs/converge.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner import updates as update_repos
from provisioner.coordinator.checks import Check
from provisioner.model import Media, version_tuple
from provisioner.store import Store
from provisioner.xapi import HostInfo, PoolDriver, XapiError, XapiUnreachable

REPO_PREFIX = "provisioner-"  # the name_label of the repository a run introduces: provisioner-<NAME>


@dataclass(frozen=True)
class Source:
    """An update repository of the store (store/updates.py UpdateRepo), as CONVERGE uses it."""

    name: str
    kind: str  # bundle | mirror
    bundle_file: str  # bundle: the .xsbundle file's full path in the data dir
    url: str  # mirror: its binary_url
    product_version: str
    updates: tuple[str, ...]  # the update ids it carries
    level: str  # its update level as its metadata says it (details.update_level)

    @property
    def label(self) -> str:
        return f"{REPO_PREFIX}{self.name}"


def source(store: Store, name: str) -> Source:
    """The store's update repository NAME; ValueError naming the fix when there is none."""
    found = store.get_update_repo(name)
    if found is None:
        raise ValueError(f"no update repository named {name!r}: add it with `provisioner updates add {name} "
                         "PATH|URL` (`provisioner updates list` shows those known)")
    bundle = update_repos.bundle_file(found)
    return Source(name=found.name, kind=found.kind, bundle_file=str(bundle) if bundle else "", url=found.url or "",
                  product_version=found.product_version or "", updates=tuple(found.update_ids),
                  level=found.update_level)


UPDATES_UNKNOWN = "UPDATES_UNKNOWN"
UPDATES_WRONG_PRODUCT = "UPDATES_WRONG_PRODUCT"
UPDATES_UNCHECKED = "UPDATES_UNCHECKED"


def plan_updates(store: Store, driver: PoolDriver, media: Media | None, hosts: list[HostInfo],
                 name: str) -> tuple[dict[str, Any] | None, list[Check]]:
    """(what the plan shows under "updates", the findings); None when NAME is not a repository of the store."""
    try:
        src = source(store, name)
    except ValueError as exc:
        return None, [Check(UPDATES_UNKNOWN, str(exc), f"`provisioner updates add {name} PATH|URL`, or run "
                                                         "without --updates")]
    found: list[Check] = []
    if media is not None and src.product_version and \
            version_tuple(src.product_version)[:2] != tuple(media.version_key[:2]):
        found.append(Check(UPDATES_WRONG_PRODUCT, f"update repository {name} is for {src.product_version}, the media "
                           f"{media.name} installs {media.product_version}",
                           "choose the updates for the media's version (`provisioner updates list`)"))
    elif not src.product_version:
        found.append(Check(UPDATES_UNCHECKED, f"update repository {name} names no product version (a mirror "
                           "registered with --no-check): XAPI checks it when it syncs", "nothing, or re-add it checked",
                           level="warning"))
    synced = ""
    try:
        synced = next((r.hash for r in driver.repositories() if r.name == src.label), "")
    except (XapiError, XapiUnreachable):
        pass  # a pool before XenServer 8 has no Repository class: every host takes every update
    rows = []
    for h in hosts:
        try:
            level = driver.update_level(h.ref)
            current = level.last_update_hash
        except (XapiError, XapiUnreachable):
            current = ""
        at_level = bool(synced) and current == synced
        rows.append({"host": h.name, "last_update_hash": current, "at_level": at_level,
                     "to_apply": [] if at_level else list(src.updates)})
    return {"name": src.name, "kind": src.kind, "product_version": src.product_version, "level": src.level,
            "updates": list(src.updates), "synced_hash": synced, "hosts": rows}, found
