"""Prechecks, the upgrade order and the per-VM plan of one pool (docs/architecture.md "Rolling pool upgrade"); reads
only.

Besides the ordered hosts and the problems that block a run, the plan says what happens to every VM of a host to
upgrade (migrate; or, on a pool of one, suspend after ejecting its CDs, or shut down) and what the run turns off
and back on (HA and WLB when the operator allows it, each VM's auto_poweron), exactly as the run will do it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from provisioner import packs, registry, sites
from provisioner.config import Config
from provisioner.coordinator import carry, converge_plan, hostplugin, prechecks, prechecks_vms, wiring
from provisioner.coordinator.checks import CONSENT, ERROR, WARNING, Check
from provisioner.coordinator.vms import PlannedVm, plan_host
from provisioner.model import Host, Media, normalize_mac, version_tuple
from provisioner.power import hosts as power_hosts
from provisioner.power.base import PowerError
from provisioner.store import Store
from provisioner.xapi import HostInfo, PoolDriver, XapiError, XapiUnreachable

if TYPE_CHECKING:
    from provisioner.xapi_prechecks import PoolFacts

# On a pool of one every running VM gets one of these from get_vms_which_prevent_evacuation (XenCenter's NoHosts,
# CA-63531): the plan suspends or shuts those VMs down instead, so they are not problems there.
_NO_ROOM = ("NO_HOSTS_AVAILABLE", "HOST_NOT_ENOUGH_FREE_MEMORY")


@dataclass(frozen=True)
class PlannedHost:
    mac: str
    name: str
    uuid: str
    ref: str
    role: str  # "master" | "member"
    version: str
    action: str  # "upgrade" | "skip (at target)"
    boot_method: str = "network-first"  # how REBOOT reaches the installer (registry.boot_method_of)
    note: str = ""  # what its boot method means for it (host-plugin: hostplugin.PLAN_NOTE)
    # the media's driver disks and supplemental packs its answer file will name (packs.packs_for; docs/packs.md)
    packs: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "packs": [dict(p) for p in self.packs]}


@dataclass
class Plan:
    """The ordered hosts (master first) and every precheck finding; `ok` when the run may start.

    checks: every finding (checks.py), in the order found; add them with add(). problems: one line per blocking
    finding (Check.line()), plus any free-text problem a caller appends; `ok` is "no problems". consent: the codes
    the operator consented to (`--consent CODE`): a consent-level check with such a code is kept in checks but
    does not block (the run then does what its message says)."""

    pool: str
    media: str
    target: str
    hosts: list[PlannedHost] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    vms: list[PlannedVm] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # turned off by PREPARE, back on by FINALIZE
    left_off: list[dict] = field(default_factory=list)  # what earlier runs left off (carry.py): this run restores it
    carried: list[str] = field(default_factory=list)  # the same, one line per run that left them off
    standalone: bool = False  # a pool of one: VMs are suspended / shut down, not migrated
    migrate_back: bool = False
    power_cycle: bool = False  # members are shut down and powered on through the pool, not rebooted
    checks: list[Check] = field(default_factory=list)
    consent: frozenset[str] = frozenset()
    updates: dict[str, Any] | None = None  # --updates NAME: the repository and the updates per host (converge_plan.py)
    facts: PoolFacts | None = None  # what the prechecks read (prechecks.run), for the waves planned with this plan

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, check: Check) -> Check:
        """Record one finding; a blocking one (error, or consent not given) also becomes a problem line."""
        self.checks.append(check)
        if self.blocks(check):
            self.problems.append(check.line())
        return check

    def blocks(self, check: Check) -> bool:
        return check.level == ERROR or (check.level == CONSENT and check.code not in self.consent)

    def check(self, code: str, message: str, fix: str, host: str = "", level: str = ERROR) -> Check:
        return self.add(Check(code, message, fix, host, level))

    @property
    def to_upgrade(self) -> list[PlannedHost]:
        return [h for h in self.hosts if h.action == "upgrade"]

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "media": self.media, "target": self.target, "ok": self.ok,
                "hosts": [h.as_dict() for h in self.hosts], "problems": list(self.problems),
                "standalone": self.standalone, "migrate_back": self.migrate_back, "power_cycle": self.power_cycle,
                "vms": [v.as_dict() for v in self.vms], "changes": list(self.changes),
                "left_off": list(self.left_off), "carried": list(self.carried),
                "checks": [dict(c.as_dict(), blocking=self.blocks(c)) for c in self.checks],
                "consent": sorted(self.consent), "updates": self.updates}


def at_target(info: HostInfo, media: Media) -> bool:
    """Same product version, and the same build when the media names one."""
    return (version_tuple(info.product_version) == media.version_key
            and (not media.build or info.build_number == media.build))


def make_plan(store: Store, pool: str, media_name: str, driver: PoolDriver, *, disable_ha_wlb: bool = False,
              migrate_back: bool = False, power_cycle: bool = False, config: Config | None = None,
              consent: Iterable[str] = (), stop_pinned_vms: bool = False, updates: str | None = None) -> Plan:
    """Run every precheck against the pool and the registry; never changes anything.

    config: with it, the BMC of every redfish / ipmi host to upgrade is checked (reachable, credentials valid,
    one-time network boot offered: power.hosts.check, read only); the Runner's PRECHECK always passes it, and
    create_run too (a Runner started on its plan decides on it).
    disable_ha_wlb: HA / WLB that are on are turned off for the run (and back on) instead of blocking it.
    migrate_back: the plan says the migrated VMs go back to their host after its upgrade.
    power_cycle: members are shut down and powered on through the pool (each needs a power_on_mode).
    consent: codes of consent-level checks the operator agreed to (docs/prechecks.md).
    stop_pinned_vms: the same as consent PINNED_VM (prechecks_vms.py).
    updates: the update repository CONVERGE brings each upgraded host to; the plan lists what each host gets."""
    media = store.get_media(media_name)
    plan = Plan(pool, media_name, media.product_version if media else "", migrate_back=migrate_back,
                power_cycle=power_cycle, consent=frozenset(c.upper() for c in consent)
                | (frozenset({prechecks_vms.PINNED_VM}) if stop_pinned_vms else frozenset()))
    if media is None:
        plan.check("MEDIA_UNKNOWN", f"no media named {media_name!r}",
                   "`provisioner media list` shows the registered media; `provisioner media add` adds one")
    try:
        info = driver.pool_info()
        hosts = driver.hosts()
        vms = driver.vms()
    except (XapiUnreachable, XapiError) as exc:
        plan.check("POOL_UNREACHABLE", f"pool {pool} not reachable: {exc}",
                   "check the master's address and credentials (`provisioner pools add` again to change them)")
        _left_off(plan, carry.left_off(store, pool))
        return plan
    _left_off(plan, carry.left_off(store, pool, pool_info=info, vms=vms))
    plan.standalone = len(hosts) == 1
    if info["ha_enabled"] and disable_ha_wlb:
        plan.changes.append(f"HA: off during the run, back on in FINALIZE (failures to tolerate "
                            f"{info['ha_host_failures_to_tolerate']}, {len(info['ha_heartbeat_srs'])} heartbeat SR(s))")
    elif info["ha_enabled"]:
        plan.check("HA_ENABLED", "HA is enabled",
                   "disable it first (pool-ha-disable), or let the run turn it off and back on (--disable-ha-wlb)")
    if info["wlb_enabled"] and disable_ha_wlb:
        plan.changes.append("WLB: off during the run, back on in FINALIZE")
    elif info["wlb_enabled"]:
        plan.check("WLB_ENABLED", "WLB is enabled: it would move VMs during the upgrade",
                   "disable it first, or let the run turn it off and back on (--disable-ha-wlb)")
    master = next((h for h in hosts if h.is_master), None)
    if master is None:
        plan.check("NO_MASTER", "XAPI names no master", "check the pool: `xe pool-list params=master`")
        return plan
    registered = {h.mac: h for h in store.list_hosts(pool=pool)}
    evacuation: dict[str, dict[str, list[str]]] = {}  # host ref -> its blockers (prechecks_vms.py)
    for h in hosts:
        role = "master" if h.is_master else "member"
        if not h.live:
            plan.check("HOST_NOT_LIVE", "not live", "bring the host back (or eject it from the pool) first", h.name)
        if not h.enabled:
            plan.check("HOST_DISABLED", "disabled", f"find out why, then `xe host-enable host={h.name}`", h.name)
        mac = normalize_mac(h.mac) if h.mac else None
        reg = registered.get(mac) if mac else None
        method = registry.boot_method_of(store, reg) if reg is not None else "network-first"
        if mac is None:
            plan.check("NO_MANAGEMENT_MAC", "XAPI shows no management PIF MAC",
                       "check the host's management interface (`xe pif-list management=true`)", h.name)
        elif reg is None:
            other = store.get_host(mac)
            where = f" (registered as {other.name} in pool {other.pool})" if other else ""
            plan.check("HOST_NOT_REGISTERED", f"management MAC {mac} is not registered in pool {pool}{where}",
                       f"run `provisioner pools discover {pool}`", h.name)
        elif reg.name != h.name:
            plan.check("HOST_NAME_MISMATCH", f"MAC {mac} is registered under the name {reg.name}",
                       f"`provisioner hosts update {mac} --name {h.name}`", h.name)
        elif not reg.disk and method != hostplugin.METHOD:  # host-plugin: the host names its own PRIMARY_DISK
            plan.check("NO_BOOT_DISK", "no boot disk recorded", f"`provisioner hosts update {mac} --disk ...`", h.name)
        if media is not None and version_tuple(h.product_version) > media.version_key:
            plan.check("HOST_NEWER_THAN_MEDIA", f"at {h.product_version}, newer than the media's "
                       f"{media.product_version}", "use media at least as new as the host (a downgrade is refused)",
                       h.name)
        if power_cycle and not h.is_master and not h.power_on_mode:
            plan.check("NO_POWER_ON_MODE", "no power_on_mode, so the pool cannot power it on after the shutdown",
                       f"`xe host-set-power-on-mode host={h.name} power-on-mode=wake-on-lan` (or IPMI), or upgrade "
                       "without --power-cycle", h.name)
        if not h.is_master and version_tuple(h.product_version) > version_tuple(master.product_version):
            plan.check("MEMBER_NEWER_THAN_MASTER", f"at {h.product_version}, newer than the master "
                       f"({master.product_version})", "bring the master to the members' version first", h.name)
        done = media is not None and at_target(h, media)
        if not done and h.live:
            names = {v.ref: v.name for v in vms}
            try:
                blockers = driver.evacuation_blockers(h.ref)
            except (XapiUnreachable, XapiError) as exc:
                plan.check("EVACUATION_UNCHECKED", f"cannot check evacuation: {exc}",
                           "make the host answer XAPI, then plan again", h.name)
            else:
                evacuation[h.ref] = blockers
                for vm, err in sorted(blockers.items()):
                    if prechecks_vms.is_pinned(err):
                        continue  # a PINNED_VM check of its own (prechecks_vms.pool_checks below)
                    if not (plan.standalone and err and err[0] in _NO_ROOM):
                        plan.check("EVACUATION_BLOCKED", f"VM {names.get(vm, vm)} prevents evacuation: "
                                   f"{' '.join(err)}", "move, shut down or fix the VM (XenCenter's "
                                   "`xe host-get-vms-which-prevent-evacuation` names the reason)", h.name)
            plan.vms += plan_host(h.name, h.ref, vms, standalone=plan.standalone, migrate_back=migrate_back,
                                  pinned=prechecks_vms.stopped_pinned(evacuation.get(h.ref, {}), plan.consent))
        if not done and reg is not None:
            problem = _boot_problem(store, config, reg, method, driver=driver, ref=h.ref, media=media_name)
            if problem:
                plan.check("BOOT_METHOD", problem, f"fix the host's boot method or its BMC (`provisioner hosts "
                           f"boot-method {mac}`, `provisioner hosts bmc {mac}`), then plan again", h.name)
        chosen = packs.packs_for(store, media_name, reg) if reg is not None and media is not None and not done else []
        plan.hosts.append(PlannedHost(mac or "", h.name, h.uuid, h.ref, role, h.product_version,
                                      "skip (at target)" if done else "upgrade", method,
                                      hostplugin.PLAN_NOTE if method == hostplugin.METHOD and not done else "",
                                      tuple({"name": p.name, "kind": p.kind, "label": p.label, "version": p.version}
                                            for p in chosen)))
    for found in prechecks_vms.pool_checks(driver, hosts, vms, evacuation):  # pinned VMs, backups running
        plan.add(found)
    plan.hosts.sort(key=lambda p: (p.role != "master", p.name))  # master first (vendor rule)
    prechecks.run(plan, driver, media, hosts, registered, store)  # pool / host / media prechecks (docs/prechecks.md)
    if updates:
        plan.updates, found = converge_plan.plan_updates(store, driver, media, hosts, updates)
        for check in found:
            plan.add(check)
    order = {h.name: i for i, h in enumerate(plan.hosts)}
    plan.vms.sort(key=lambda v: (order.get(v.host, 0), v.name))
    plan.changes += [f"VM {v.name}: auto_poweron off during the run, back on in FINALIZE"
                     for v in plan.vms if v.auto_poweron]
    behind = [h["host"] for h in (plan.updates or {}).get("hosts", []) if h["to_apply"]]
    if media is not None and not plan.to_upgrade and not behind:
        plan.check("NOTHING_TO_DO", f"every host is already at {media.product_version}"
                   + (" and at the update level" if plan.updates else ""), "nothing to do")
    elif media is not None and not plan.to_upgrade:  # FINALIZE converges them (converge.py)
        plan.changes.append(f"every host is at {media.product_version}: FINALIZE brings {', '.join(behind)} to the "
                            "update level (each disabled, evacuated, updated, enabled, its VMs migrated back)")
    return plan


def _boot_problem(store: Store, config: Config | None, host: Host, method: str, *, driver: PoolDriver, ref: str,
                  media: str) -> str | None:
    """Why `host` could not be brought to the installer by its boot method (None: nothing found). Never names a
    password: PowerError messages name the BMC and the problem only (power/base.py). host-plugin: testUrl of the
    media URL from the host's dom0 (hostplugin.py)."""
    if method == hostplugin.METHOD:
        if config is None:
            return None
        return hostplugin.test(driver, ref, hostplugin.media_url(sites.site_config(store, config, host), media))
    if method not in wiring.BMC_METHODS or config is None:
        return None
    if host.bmc_kind != method:
        return f"boot method {method} but its BMC is {host.bmc_kind or 'not registered'} (`provisioner hosts bmc`)"
    try:
        control = wiring.boot_control(store, config, host)
    except PowerError as exc:
        return f"boot method {method}: {exc}"
    try:
        found = power_hosts.check(control)
    finally:
        power_hosts.close(control)
    return None if found.usable else f"boot method {method}: BMC {found.bmc} is not usable: {found.problem}"


def _left_off(plan: Plan, items: list[carry.LeftOff]) -> None:
    """What ended runs left off and nobody put back: the run takes it over and its FINALIZE restores it."""
    plan.left_off = [i.as_dict() for i in items if i.state != carry.BACK]
    plan.carried = carry.plan_lines(items, plan.pool)
