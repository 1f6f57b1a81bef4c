"""Will pool.join take a freshly installed host? Checked before the wipe, and the way out when it refused anyway.

pool.join compares the joiner with the master (xapi_pool.ml pre_join_checks, docs/real-world.md
"What pool.join requires"): platform version (POOL_HOSTS_NOT_COMPATIBLE), xapi version and git id
(POOL_HOSTS_NOT_HOMOGENEOUS "Software version differs"), management VLAN, edition (LICENSE_HOST_POOL_MISMATCH), network
backend, API version, DB schema and the updates applied (POOL_HOSTS_NOT_HOMOGENEOUS "Updates ... differ"). What a fresh
ISO install has: the media's version, no updates, the ISO's default edition, an untagged management interface and the
openvswitch backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from provisioner.model import Media
from provisioner.xapi import HostInfo, PoolDriver, XapiError, XapiUnreachable

# XenServer 8 installs in Trial Edition until it is licensed (host.edition "trial", the name v6d reports); the
# default edition of older ISOs is not known here, so it is not compared for them (pool.join still checks it).
ISO_EDITIONS = {(8, 4): "trial"}
ISO_BACKEND = "openvswitch"  # the installer's default network backend since XenServer 7.0
SYNC_UPDATES = ("on the new host, take the pool's coordinator as its update source (XenServer 8: "
                "`Repository.introduce_remote_pool`, `xe repository-introduce-remote-pool`, then "
                "`xe pool-sync-updates` and `xe host-apply-updates`; Citrix Hypervisor 8.2: `xe update-upload` + "
                "`xe update-apply` of each)")
FIX_THEN_RERUN = ("the flow waits at join_refused with the new host standalone: fix it there, then run the same "
                  "reinstall command again to retry pool.join")
# What a pool.join refusal means and the way out, by error code (datamodel_errors.ml; xapi_pool.ml pre_join_checks).
JOIN_HINTS = {
    "POOL_HOSTS_NOT_HOMOGENEOUS": f"the new host differs from the master ({{params}}): if updates differ, "
                                  f"{SYNC_UPDATES}",
    "LICENSE_HOST_POOL_MISMATCH": "editions differ ({params}): apply the pool's edition to the new host "
                                  "(`xe host-apply-edition edition=... license-server-address=...`)",
    "OPERATION_NOT_ALLOWED": "{params}: if the network backends differ, switch the new host to the pool's "
                             "(`xe-switch-network-backend bridge|openvswitch`, then reboot it)",
    "POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH": "management VLANs differ (new host, pool: {params}): "
                                                        "reconfigure the new host's management interface on the "
                                                        "pool's VLAN (`xe host-management-reconfigure`)",
    "POOL_HOSTS_NOT_COMPATIBLE": "the new host and the master must run the same version: upgrade the master",
    "POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION": "API versions differ (new host, master: {params}): same "
                                                    "version on both first",
    "POOL_JOINING_HOST_MUST_HAVE_SAME_DB_SCHEMA": "DB schemas differ (new host, master: {params}): same version on "
                                                  "both first",
}


def join_hint(code: str, params: list[str]) -> str:
    """The way out of a pool.join refusal, with its parameters."""
    hint = JOIN_HINTS.get(code, "{params}")
    return hint.format(params=", ".join(params) or "no details")


CONVERGE_SINCE = (8, 4)
"""XenServer 8 (8.4): updates come from a Repository, and a standalone host can take a pool's coordinator as its
source (Repository.introduce_remote_pool): the reinstall flow converges the new host before it joins."""


def converges(media: Media) -> bool:
    """The reinstall flow brings a fresh install of `media` to the pool's update level before pool.join."""
    return tuple(media.version_key[:2]) >= CONVERGE_SINCE


def _update_level(driver: PoolDriver, master: HostInfo) -> str:
    """The master's last_update_hash ('' when it has none, or its XAPI has no such field: before XenServer 8)."""
    try:
        return driver.update_level(master.ref).last_update_hash
    except (XapiUnreachable, XapiError):
        return ""


def iso_facts(media: Media) -> dict:
    """What a fresh install of `media` has, for the pool.join checks (versions from its .treeinfo)."""
    major_minor = tuple(media.version_key[:2])
    return {"product_version": media.product_version, "platform_version": media.platform_version,
            "build_number": media.build or "", "edition": ISO_EDITIONS.get(major_minor, ""), "updates": [],
            "management_vlan": -1, "network_backend": ISO_BACKEND}


@dataclass
class JoinCheck:
    """What check_join found: the facts compared (None when the master could not be read), problems, notes."""

    join: dict | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_join(pool: str, driver: PoolDriver, master: HostInfo, media: Media, *, fix_before_join: bool) -> JoinCheck:
    """Compare the master's pool.join facts with what the media installs; every mismatch is a problem (before any
    wipe), except those the operator can fix on the new host before it joins when --fix-before-join is given."""
    plan = JoinCheck()
    try:
        facts = driver.join_facts(master.ref)
    except (XapiUnreachable, XapiError) as exc:
        plan.problems.append(f"cannot read what pool.join needs from the master of pool {pool} ({exc})")
        return plan
    iso = iso_facts(media)
    plan.join = {"master": dataclasses.asdict(facts), "media": iso}
    hard: list[str] = []
    fixable: list[str] = []
    if facts.platform_version and media.platform_version and facts.platform_version != media.platform_version:
        hard.append(f"the master's platform version is {facts.platform_version}, the media's {media.platform_version}: "
                    "pool.join would refuse with POOL_HOSTS_NOT_COMPATIBLE; use the media the master runs")
    if facts.management_vlan not in (-1, None):
        hard.append(f"the pool's management interface is on VLAN {facts.management_vlan}, a fresh install's is "
                    "untagged: pool.join would refuse with POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH "
                    f"[-1, {facts.management_vlan}]; this flow installs untagged only: install the host by hand with "
                    f"its management interface on VLAN {facts.management_vlan}, then `xe pool-join`")
    level = _update_level(driver, master)
    if level and converges(media):
        plan.notes.append(f"the pool's master is at update level {level[:12]}, a fresh install of {media.name} at "
                          "its base: the new host will converge before pool.join (it takes the pool's coordinator "
                          "as its update source, Repository.introduce_remote_pool, syncs, applies the updates and "
                          "carries out their guidances until its level is the master's)")
    elif level:
        fixable.append(f"the pool's master is at update level {level[:12]}: pool.join would refuse a fresh install "
                       f"at its base; bring the new host to the pool's level first: {SYNC_UPDATES}")
    if facts.updates:  # legacy Pool_update records (xe update-apply): not brought by a repository
        fixable.append(f"the pool has updates this ISO lacks: {', '.join(facts.updates)}; pool.join would refuse "
                       "with POOL_HOSTS_NOT_HOMOGENEOUS (\"Updates ... differ\"): bring the new host to the pool's "
                       f"update level first: {SYNC_UPDATES}")
    if iso["edition"] and facts.edition and facts.edition != iso["edition"]:
        fixable.append(f"the master runs edition {facts.edition!r}, a fresh install of {media.name} comes up in "
                       f"{iso['edition']!r}: pool.join would refuse with LICENSE_HOST_POOL_MISMATCH; apply the "
                       "pool's edition to the new host first (`xe host-apply-edition edition=... "
                       "license-server-address=...`)")
    elif not iso["edition"]:
        plan.notes.append(f"the default edition of {media.name} is not known here: pool.join compares it with the "
                          f"master's ({facts.edition or '?'})")
    if facts.network_backend != ISO_BACKEND:
        fixable.append(f"the pool uses the {facts.network_backend} network backend, a fresh install {ISO_BACKEND}: "
                       "pool.join would refuse with OPERATION_NOT_ALLOWED \"Network backends differ\"; switch the new "
                       f"host first (`xe-switch-network-backend {facts.network_backend}`)")
    plan.notes.append(f"the master's xapi {facts.xapi or '?'} (git id {facts.git_id or '?'}) is not in the ISO's "
                      ".treeinfo: pool.join compares it (POOL_HOSTS_NOT_HOMOGENEOUS \"Software version differs\"); "
                      "if it refuses, " + FIX_THEN_RERUN)
    plan.problems.extend(hard)
    if fix_before_join:
        plan.notes.extend(f"--fix-before-join: {f}; {FIX_THEN_RERUN}" for f in fixable)
    else:
        plan.problems.extend(f"{f}; or pass --fix-before-join (REST \"fix_before_join\": true) to fix it between the "
                             "install and the join" for f in fixable)
    return plan
