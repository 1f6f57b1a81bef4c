"""Update levels in the simulator: what each host has applied, its pending guidances, and the xapi.conf settings of
the repository code (docs/simulator.md "Updates"; docs/xapi.md "Update repositories").

A host's installed state is the set of updates applied on top of its ISO base (SimHost.applied_updates, id ->
repo_format.Update): the base itself is not modelled, an ISO install or upgrade empties the set
(`on_xapi_start(..., installed=True)`). What xapi itself reports changes only when xapi restarts: an applied
update carrying the `xapi-core` package gives software_version a new xapi version and git_id (xapi_globs.ml:177-196
reads them from the running binary), which is what pool.join compares (join.py). Pending guidances are the host
fields xapi keeps (repository.ml:840-895, repository_helpers.ml:98-137 reduce_cascaded_list); xapi's start removes
RestartToolstack, a system boot also RebootHost (dbsync_slave.ml:257-270).

Imports no world, power or handler module (power.py calls on_xapi_start from dbsync).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import repo_format as rf
from .db import Db, xapi_datetime
from .errors import XapiError
from .hosts import SimHost, SimPool

World = Any  # the world (world.py imports this module through power.py: no import back)

# Guidance (updateinfo.ml:20-112) -> the host's pending_guidances enum value (datamodel_common.ml:322-350);
# EvacuateHost has none: it is carried out before host.apply_updates (repository.ml:860-864).
PENDING = {"RebootHost": "reboot_host", "RestartToolstack": "restart_toolstack",
           "RestartDeviceModel": "restart_device_model", "RestartVM": "restart_vm"}
FIELDS = {"mandatory": "pending_guidances", "recommended": "pending_guidances_recommended",
          "full": "pending_guidances_full"}
PRECEDENCES = (("RebootHost", {"RestartToolstack", "EvacuateHost", "RestartDeviceModel"}),  # repository_helpers
               ("EvacuateHost", {"RestartDeviceModel"}), ("RestartVM", {"RestartDeviceModel"}))  # .ml:104-110
REBOOT_CLEARS = ("reboot_host", "reboot_host_on_livepatch_failure", "reboot_host_on_kernel_livepatch_failure",
                 "reboot_host_on_xen_livepatch_failure")
XAPI_PACKAGE = "xapi-core"


@dataclass
class UpdateConf:
    """xapi.conf's repository settings (xapi_globs.ml:959-1028, 1715-1725): repository-domain-name-allowlist,
    repository-url-blocklist (regexes), the GPG public key repo_gpgcheck uses (repository-gpgkey-name: the
    vendor's key every ISO ships; armored bytes here), repository-gpgcheck, bundle-max-size-limit."""

    allowlist: list[str] = field(default_factory=list)
    blocklist: list[str] = field(default_factory=list)
    gpg_key: bytes | None = None
    gpgcheck: bool = True
    bundle_max_size: int = rf.MAX_BUNDLE_SIZE


def conf(world: World, pool: SimPool) -> UpdateConf:
    """The pool coordinator's settings: the pool's own if a test gave it some, else the world's (every ISO's)."""
    return pool.update_conf or world.update_conf


# ---- URLs (repository_helpers.ml:161-262) -----------------------------------------------------------------
def assert_url_not_blocked(c: UpdateConf, url: str) -> None:
    """:224-227 BLOCKED_REPO_URL [url] when a blocklist regex matches."""
    for pattern in c.blocklist:
        try:
            if re.search(pattern, url):
                raise XapiError("BLOCKED_REPO_URL", url)
        except re.error:
            continue


def assert_url_valid(c: UpdateConf, url: str) -> None:
    """:161-210 http(s) with a host; a non-empty allowlist must contain the host's domain (or a parent of it);
    an invalid allowlist entry is INVALID_REPOSITORY_DOMAIN_ALLOWLIST [domains]; anything else INVALID_BASE_URL."""
    m = re.match(r"^(https?)://(\[[^\]]+\]|[^/:?#]+)(:\d+)?(/|$)", url)
    if not m:
        raise XapiError("INVALID_BASE_URL", url)
    host = m.group(2).strip("[]").lower().rstrip(".")
    invalid = [d for d in c.allowlist if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?", d)]
    if invalid:
        raise XapiError("INVALID_REPOSITORY_DOMAIN_ALLOWLIST", *invalid)
    if c.allowlist and not any(host == d.lower().rstrip(".") or host.endswith("." + d.lower().rstrip("."))
                               for d in c.allowlist):
        raise XapiError("INVALID_BASE_URL", url)  # internal_error "host is not in allowlist", re-raised :205-210


def remote_pool_address(url: str) -> tuple[str, int | None]:
    """:249-262 https://<coordinator-ip>/repository/enabled, the host an IP address; else INVALID_BASE_URL.
    The simulator also accepts a port (its hosts listen on high ports instead of 443)."""
    m = re.match(r"^https://(\[[0-9A-Fa-f:]+\]|\d+\.\d+\.\d+\.\d+)(?::(\d+))?/repository/enabled$", url)
    if not m:
        raise XapiError("INVALID_BASE_URL", url)
    return m.group(1).strip("[]"), int(m.group(2)) if m.group(2) else None


# ---- a host's level -------------------------------------------------------------------------------------
def installed_packages(h: SimHost) -> dict[str, rf.Package]:
    """The newest version of each package the host's applied updates brought (over the ISO base)."""
    found: dict[str, rf.Package] = {}
    for u in h.applied_updates.values():
        for p in u.packages:
            if p.name not in found or p.evr > found[p.name].evr:
                found[p.name] = p
    return found


def applicable(h: SimHost, repo: rf.Repo) -> list[rf.Update]:
    """The repository's updates the host lacks: not applied and (yum's rule) bringing a package newer than the
    one installed, or no package the host has at all (the ISO base is older than every update)."""
    pkgs = installed_packages(h)
    out = []
    for u in repo.updates.values():
        if u.id in h.applied_updates:
            continue
        if not u.packages or any(p.name not in pkgs or p.evr > pkgs[p.name].evr for p in u.packages):
            out.append(u)
    return sorted(out, key=lambda u: u.id)


def level(h: SimHost) -> list[str]:
    """The ids of the updates applied on the host since its ISO (sorted): its update level."""
    return sorted(h.applied_updates)


def reduce_guidance(updates: Iterable[rf.Update]) -> dict[str, set[str]]:
    """repository_helpers.ml:1296-1305 reduce_guidance: per kind the union of the updates' guidances, each kind
    reduced by the earlier kinds and the precedences (RebootHost covers RestartToolstack, EvacuateHost, ...)."""
    out: dict[str, set[str]] = {}
    acc: set[str] = set()
    for kind in rf.GUIDANCE_KINDS:
        s = {g for u in updates for g in u.guidance.get(kind, ())}
        merged = s | acc
        for higher, lowers in PRECEDENCES:
            if higher in merged:
                merged -= lowers
        out[kind] = merged - acc
        acc |= s
    return out


def record_applied(world: World, pool: SimPool, h: SimHost, updates: list[rf.Update], hash_: str = "") -> None:
    """What host.apply_updates leaves (repository.ml:840-895, xapi_host.ml:3119-3145): the updates installed,
    the pending guidances merged (EvacuateHost dropped), last_software_update, latest_synced_updates_applied,
    last_update_hash."""
    guidance = reduce_guidance(updates)
    for u in updates:
        h.applied_updates[u.id] = u
    db = pool.db
    with db.lock:
        rec = db.get("host", h.ref)
        fields = {}
        for kind, names in guidance.items():
            pending = list(rec[FIELDS[kind]])
            pending += [PENDING[g] for g in sorted(names) if g in PENDING and PENDING[g] not in pending]
            fields[FIELDS[kind]] = pending
        db.update("host", h.ref, last_software_update=xapi_datetime(world.clock.now()),
                  latest_synced_updates_applied="yes", last_update_hash=hash_, **fields)


def apply_now(world: World, pool: SimPool, h: SimHost, updates: Iterable[rf.Update]) -> None:
    """A host already at a level (a builder option, not an API call): installed, xapi running them, nothing
    pending."""
    for u in updates:
        h.applied_updates[u.id] = u
    with pool.db.lock:
        pool.db.update("host", h.ref, **xapi_fields(h, pool.db.get("host", h.ref)["software_version"]))


def updates_from(spec) -> list[rf.Update]:
    """builder option `updates=`: a bundle / repository directory path (all its updates, read with the
    simulator's own reader, no signature check) or Update objects."""
    if isinstance(spec, (str, Path)):
        return list(rf.read_repo(rf.files_of(Path(spec)), None, gpgcheck=False).updates.values())
    return list(spec)


def xapi_fields(h: SimHost, sv: dict) -> dict:
    """software_version as the xapi now starting reports it: an updated xapi-core gives its version
    (xapi = major.minor, xapi_build) and a build id (git_id) of its own (xapi_globs.ml:177-196)."""
    pkg = installed_packages(h).get(XAPI_PACKAGE)
    if pkg is None:
        return {}
    parts = pkg.version.split(".")
    git = hashlib.sha1(f"{pkg.name}-{pkg.version}-{pkg.release}".encode()).hexdigest()[:7]
    return {"software_version": {**sv, "xapi": ".".join(parts[:2]), "xapi_build": pkg.version, "git_id": git}}


def on_xapi_start(db: Db, h: SimHost, *, system_boot: bool, installed: bool) -> None:
    """dbsync at xapi start (dbsync_slave.ml:257-270, 458): RestartToolstack cleared, RebootHost too on a system
    boot; an ISO install or upgrade lands on the ISO's base level (no updates applied, guidances gone,
    latest_synced_updates_applied unknown as on a new host record, dbsync_slave.ml:78). The caller holds db.lock."""
    if installed:
        h.applied_updates.clear()
    rec = db.get("host", h.ref)
    clear = {"restart_toolstack"} | (set(REBOOT_CLEARS) if system_boot else set())
    fields = {f: [g for g in rec[f] if g not in clear] for f in FIELDS.values()}
    if installed:
        fields = {f: [] for f in FIELDS.values()}
        fields["latest_synced_updates_applied"] = "unknown"
    fields.update(xapi_fields(h, rec["software_version"]))
    db.update("host", h.ref, **fields)


def assert_no_pending_mandatory(db: Db, host_ref: str) -> None:
    """repository_helpers.ml:1744-1763: HOST_PENDING_MANDATORY_GUIDANCES_NOT_EMPTY [host]."""
    if db.get("host", host_ref)["pending_guidances"]:
        raise XapiError("HOST_PENDING_MANDATORY_GUIDANCES_NOT_EMPTY", host_ref)
