"""Prechecks and the upgrade order of one pool (DESIGN.md "Rolling pool upgrade"); reads only, no side effect."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioner.model import Media, normalize_mac, version_tuple
from provisioner.store import Store
from provisioner.xapi import Failure, HostInfo, PoolDriver, XapiUnreachable


@dataclass(frozen=True)
class PlannedHost:
    mac: str
    name: str
    uuid: str
    ref: str
    role: str  # "master" | "member"
    version: str
    action: str  # "upgrade" | "skip (at target)"

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Plan:
    """The ordered hosts (master first) and every precheck problem; `ok` when the run may start."""

    pool: str
    media: str
    target: str
    hosts: list[PlannedHost] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def to_upgrade(self) -> list[PlannedHost]:
        return [h for h in self.hosts if h.action == "upgrade"]

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "media": self.media, "target": self.target, "ok": self.ok,
                "hosts": [h.as_dict() for h in self.hosts], "problems": list(self.problems)}


def at_target(info: HostInfo, media: Media) -> bool:
    """Same product version, and the same build when the media names one."""
    return (version_tuple(info.product_version) == media.version_key
            and (not media.build or info.build_number == media.build))


def make_plan(store: Store, pool: str, media_name: str, driver: PoolDriver) -> Plan:
    """Run every precheck against the pool and the registry; never changes anything."""
    media = store.get_media(media_name)
    plan = Plan(pool, media_name, media.product_version if media else "")
    if media is None:
        plan.problems.append(f"no media named {media_name!r} (see `provisioner media list`)")
    try:
        info = driver.pool_info()
        hosts = driver.hosts()
    except (XapiUnreachable, Failure) as exc:
        plan.problems.append(f"pool {pool} not reachable: {exc}")
        return plan
    if info["ha_enabled"]:
        plan.problems.append("HA is enabled: disable it first (pool-ha-disable)")
    if info["wlb_enabled"]:
        plan.problems.append("WLB is enabled: disable it first (it would move VMs during the upgrade)")
    master = next((h for h in hosts if h.is_master), None)
    if master is None:
        plan.problems.append("XAPI names no master")
        return plan
    registered = {h.mac: h for h in store.list_hosts(pool=pool)}
    for h in hosts:
        role = "master" if h.is_master else "member"
        if not h.live:
            plan.problems.append(f"{h.name}: not live")
        if not h.enabled:
            plan.problems.append(f"{h.name}: disabled (enable it, or find out why it is)")
        mac = normalize_mac(h.mac) if h.mac else None
        reg = registered.get(mac) if mac else None
        if mac is None:
            plan.problems.append(f"{h.name}: XAPI shows no management PIF MAC")
        elif reg is None:
            other = store.get_host(mac)
            where = f" (registered as {other.name} in pool {other.pool})" if other else ""
            plan.problems.append(f"{h.name}: management MAC {mac} is not registered in pool {pool}{where}; "
                                 f"run `provisioner pools discover {pool}`")
        elif reg.name != h.name:
            plan.problems.append(f"{h.name}: MAC {mac} is registered under the name {reg.name}")
        elif not reg.disk:
            plan.problems.append(f"{h.name}: no boot disk recorded (`provisioner hosts update {mac} --disk ...`)")
        if media is not None and version_tuple(h.product_version) > media.version_key:
            plan.problems.append(f"{h.name}: at {h.product_version}, newer than the media's {media.product_version}")
        if not h.is_master and version_tuple(h.product_version) > version_tuple(master.product_version):
            plan.problems.append(f"{h.name}: at {h.product_version}, newer than the master ({master.product_version})")
        done = media is not None and at_target(h, media)
        if not done and h.live:
            try:
                blockers = driver.evacuation_blockers(h.ref)
            except (XapiUnreachable, Failure) as exc:
                plan.problems.append(f"{h.name}: cannot check evacuation: {exc}")
            else:
                for vm, err in sorted(blockers.items()):
                    plan.problems.append(f"{h.name}: VM {vm} prevents evacuation: {' '.join(err)}")
        plan.hosts.append(PlannedHost(mac or "", h.name, h.uuid, h.ref, role, h.product_version,
                                      "skip (at target)" if done else "upgrade"))
    plan.hosts.sort(key=lambda p: (p.role != "master", p.name))  # master first (vendor rule)
    if media is not None and not plan.to_upgrade:
        plan.problems.append(f"every host is already at {media.product_version}: nothing to do")
    return plan
