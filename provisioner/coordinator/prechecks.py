"""The pool and host prechecks XenCenter and Xen Orchestra run before a rolling upgrade, as coded findings
(docs/prechecks.md: each code, its condition, its source, its fix). make_plan calls run() once the hosts are
planned; every read is read only (xapi_prechecks.py), nothing here changes the pool.

Versions (product_version): XenServer 8 is 8.4 ("Cloud" in XenCenter's Helpers.CloudOrGreater), 8.2 is
"Stockholm", XenServer 9 is 9.0.
"""

from __future__ import annotations

from provisioner.coordinator import hostplugin, prechecks_firmware, prechecks_media
from provisioner.coordinator.checks import CONSENT, ERROR, WARNING
from provisioner.model import Host, Media, version_tuple
from provisioner.store import Store
from provisioner.xapi import HostInfo, XapiError, XapiUnreachable

XS8 = (8, 4)
STOCKHOLM = (8, 2)
XS9 = (9,)
GiB = 1024 ** 3
# host.edition values of hosts licensed through Citrix Virtual Apps and Desktops (XenServer 8 needs its own
# licence: docs/prechecks.md LICENCE); "" / "free" / "trial": no licence
CVAD_EDITIONS = ("xendesktop", "desktop", "desktop-plus", "desktop-cloud")
UNLICENSED = ("", "free", "trial", "express")
# testSafe2Upgrade answers (XenCenter SafeToUpgradeCheck.cs HostNotSafeToUpgradeReason) -> what it means
SAFE_REASONS = {
    "not_enough_space": "the local SR on the boot disk is smaller than the new partition layout needs (38 GiB)",
    "vdi_present": "the local SR on the boot disk holds virtual disks the new partition layout would overwrite",
    "utility_part_present": "the boot disk has a vendor utility partition where the new layout goes",
    "legacy_partition_table": "the boot disk has the legacy (DOS) partition table",
}


def run(plan, driver, media: Media | None, hosts: list[HostInfo], registered: dict[str, Host],
        store: Store | None = None) -> None:
    """Every precheck of this module, added to `plan` (plan.check); `store`: the boot server's evidence of each
    host's firmware (prechecks_firmware.py)."""
    if media is None or not plan.to_upgrade:
        return
    if store is not None:
        prechecks_media.at_sites(plan, store, media, registered)
    try:
        facts = plan.facts = driver.precheck_facts()
    except (XapiUnreachable, XapiError) as exc:
        plan.check("PRECHECKS_UNREAD", f"cannot read what the prechecks need: {exc}",
                   "make the master answer XAPI, then plan again")
        return
    target = media.version_key
    upgrading = {h.ref for h in plan.to_upgrade}
    infos = {h.ref: h for h in hosts}
    master = next(h for h in hosts if h.is_master)
    master_version = version_tuple(master.product_version)
    for planned in plan.to_upgrade:
        info, found = infos[planned.ref], facts.hosts.get(planned.ref)
        if found is None:
            continue
        _safe_to_upgrade(plan, driver, info, target)
        _cert_key_length(plan, driver, info, target)
        _licence(plan, found, target, media)
        _management_vlan(plan, found, planned.boot_method)
        _xs9(plan, found, registered.get(planned.mac), target, media)
        if store is not None and planned.mac in registered:
            _firmware_seen(plan, prechecks_firmware.seen(store, planned.mac), registered[planned.mac], found.name,
                           target, media)
    prechecks_media.run(plan, media, facts.hosts, infos)
    _pv_guests(plan, facts, target, media)
    if master_version < STOCKHOLM <= target:  # XenCenter: not run on 8.2 and later (the feature is gone there)
        _vswitch(plan, facts, media)
        _legacy_ssl(plan, facts, media)
    if facts.fcoe_srs and target >= XS8:
        plan.check("DEPRECATED_SR", f"FCoE SR(s) {', '.join(facts.fcoe_srs)}: XenServer 8 has no FCoE support, "
                   "they will not attach after the upgrade and their VMs will not start",
                   "move the VMs' disks to other storage first, or agree to lose access with --consent DEPRECATED_SR",
                   level=CONSENT)
    dom0_memory(plan, driver, facts, upgrading)


def _safe_to_upgrade(plan, driver, info: HostInfo, target: tuple) -> None:
    """XenCenter SafeToUpgradeCheck: not run on hosts already at XenServer 8; an error for XenServer 8 targets,
    a warning below (HostNotSafeToUpgradeProblem / ...Warning)."""
    if version_tuple(info.product_version) >= XS8 or not info.live:
        return
    try:
        answer = driver.safe_to_upgrade(info.ref)
    except (XapiUnreachable, XapiError) as exc:  # XenCenter logs it and passes; we say so
        plan.check("SAFE_TO_UPGRADE", f"could not run testSafe2Upgrade: {hostplugin.describe(exc)}",
                   "install the host-upgrade-plugin (prepare_host_upgrade.py) or check the disk layout by hand",
                   info.name, WARNING)
        return
    if answer.strip().lower() == "true":
        return
    why = SAFE_REASONS.get(answer.strip().lower(), f"the plugin answered {answer!r}")
    plan.check("SAFE_TO_UPGRADE", f"testSafe2Upgrade: not safe to upgrade: {why}",
               "back up and move what is on the local SR, then reinstall the host (a fresh install makes the new "
               "layout) instead of upgrading it", info.name, ERROR if target >= XS8 else WARNING)


def _cert_key_length(plan, driver, info: HostInfo, target: tuple) -> None:
    """XenCenter CertificateKeyLengthCheck: an RSA key under 2048 bits in the host's XAPI certificate is refused
    by XenServer 8 (an error for its targets)."""
    if target < XS8 or not info.live:
        return
    try:
        bits = driver.server_key_bits(info.ref)
    except (XapiUnreachable, XapiError) as exc:
        plan.check("CERT_KEY_LENGTH", f"could not read the host's server certificate: {exc}",
                   "check its key length by hand (`openssl x509 -noout -text -in /etc/xensource/xapi-ssl.pem`)",
                   info.name, WARNING)
        return
    if bits is not None and bits < 2048:
        plan.check("CERT_KEY_LENGTH", f"its XAPI server certificate has a {bits}-bit RSA key: XenServer 8 needs "
                   "at least 2048 bits", "install a new certificate with a 2048-bit key or longer "
                   "(`xe host-refresh-server-certificate`, or `xe host-install-server-certificate`)", info.name)


def _licence(plan, found, target: tuple, media: Media) -> None:
    if target < XS8:
        return
    edition = found.edition.lower()
    if edition in UNLICENSED or edition in CVAD_EDITIONS:
        what = "unlicensed" if edition in UNLICENSED else f"licensed through CVAD (edition {found.edition})"
        plan.check("LICENCE", f"{what}: after the upgrade to {media.product_version} the host runs a trial edition "
                   "(90 days) until it gets a XenServer 8 licence", "apply a XenServer 8 licence (`xe host-apply-"
                   "edition`) before or right after the upgrade", found.name, WARNING)


def _management_vlan(plan, found, method: str) -> None:
    """PXE cannot boot over a tagged VLAN (docs/real-world.md section 4): the host-plugin method boots from disk."""
    if found.management_vlan >= 0 and method != hostplugin.METHOD:
        plan.check("MANAGEMENT_VLAN", f"the management network is on tagged VLAN {found.management_vlan}: a "
                   f"network boot ({method}) cannot reach the installer there",
                   f"`provisioner hosts boot-method MAC {hostplugin.METHOD}` (the host stages the installer itself)",
                   found.name)


def _xs9(plan, found, reg: Host | None, target: tuple, media: Media) -> None:
    """XenServer 9: the installer boots on UEFI only (host-installer install.py go()); Secure Boot reported."""
    if target < XS9:
        return
    if reg is not None and reg.firmware != "uefi":
        plan.check("UEFI_ONLY", f"registered as {reg.firmware}: the XenServer {media.product_version} installer "
                   "refuses legacy BIOS boot, and an install made on BIOS has no EFI System Partition to upgrade",
                   "switch the host to UEFI and reinstall it (`provisioner hosts update MAC --firmware uefi`), "
                   "or keep it on XenServer 8", found.name)
    if found.secure_boot:
        plan.check("SECURE_BOOT", "Secure Boot is on (host.secure_boot): the installer and its network boot "
                   "chain must be the signed ones from the media", "nothing to do if the media is unmodified; "
                   "otherwise turn Secure Boot off for the upgrade", found.name, WARNING)


def _firmware_seen(plan, seen, reg: Host, name: str, target: tuple, media: Media) -> None:
    """What our boot server saw of the host's firmware against its registration (prechecks_firmware.py)."""
    if seen.latest and seen.latest != reg.firmware:
        plan.check("FIRMWARE_MISMATCH", f"registered as {reg.firmware}, but its firmware last booted from us in "
                   f"{seen.latest} mode: the installer must boot in the mode the installation was made in, or it "
                   "does not find it", f"`provisioner hosts update {reg.mac} --firmware {seen.latest}` if the host "
                   "really boots that way, else set its firmware back", name, ERROR if target >= XS9 else WARNING)
    if target >= XS9 and seen.installed == "bios":
        plan.check("BOOT_PARTITION_NOT_ESP", "its installation was made (or last upgraded) by an installer booted "
                   "on BIOS, so its boot partition is a BIOS boot partition: the XenServer "
                   f"{media.product_version} installer upgrades only an install with an EFI System Partition",
                   "back up, switch the host to UEFI and reinstall it (`provisioner reinstall`), or keep it on "
                   "XenServer 8", name)


def _pv_guests(plan, facts, target: tuple, media: Media) -> None:
    """XenCenter PVGuestsCheck: PV guests do not run on XenServer 8 (an error for its targets)."""
    pv = [v.name for v in facts.vms if v.pv]
    if pv and target >= XS8:
        plan.check("PV_GUEST", f"PV guest(s) {', '.join(pv)}: XenServer {media.product_version} does not run PV "
                   "guests", "convert them to HVM (or remove them) before the upgrade", "")


def _vswitch(plan, facts, media: Media) -> None:
    """XenCenter VSwitchControllerCheck / Pool.vSwitchController(): a controller set and every host on openvswitch."""
    if facts.vswitch_controller and all(h.network_backend == "openvswitch" for h in facts.hosts.values()):
        plan.check("VSWITCH_CONTROLLER", f"the pool uses the vSwitch Controller at {facts.vswitch_controller}: "
                   f"{media.product_version} has no vSwitch Controller support",
                   "remove the controller (`xe pool-set-vswitch-controller address=`) and move to another SDN "
                   "first")


def _legacy_ssl(plan, facts, media: Media) -> None:
    """XenCenter PoolLegacySslCheck: any host with ssl_legacy."""
    legacy = sorted(h.name for h in facts.hosts.values() if h.ssl_legacy)
    if legacy:
        plan.check("LEGACY_SSL", f"legacy SSL mode is on ({', '.join(legacy)}): {media.product_version} accepts "
                   "only TLS 1.2", "`xe pool-disable-ssl-legacy`, and make sure every client speaks TLS 1.2")


def dom0_memory(plan, driver, facts, upgrading: set[str]) -> None:
    """getDom0DefaultMemory on each host to upgrade; where dom0 grows, replay the run's evacuations in order
    (master first) with the grown dom0 of the hosts already upgraded: a host whose running VMs then no longer
    fit on the others is an error (its evacuation would fail mid-run), a growth that still fits a warning
    (XenCenter HostMemoryPostUpgradeCheck)."""
    growth: dict[str, int] = {}
    for ref in upgrading:
        host = facts.hosts[ref]
        if not host.live:
            continue
        try:
            after = driver.dom0_memory_after_upgrade(ref)
        except (XapiUnreachable, XapiError):
            continue  # XenCenter: logged, no finding
        if after is not None and after > host.dom0_memory:
            growth[ref] = after - host.dom0_memory
    if not growth:
        return
    order = [h.ref for h in plan.to_upgrade]
    stuck = _replay(facts, order, growth, plan.standalone, plan.migrate_back)
    for ref, extra in sorted(growth.items(), key=lambda i: order.index(i[0])):
        name = facts.hosts[ref].name
        plan.check("DOM0_MEMORY", f"dom0 grows by {extra / GiB:.1f} GiB after the upgrade "
                   f"(getDom0DefaultMemory): the pool has that much less room for VMs", "nothing to do if the "
                   "evacuations still fit; otherwise shut down some VMs or add memory", name, WARNING)
    for ref, vm in stuck:
        plan.check("DOM0_MEMORY", f"with the grown dom0 of the hosts upgraded before it, VM {vm} no longer fits on "
                   "any other host when this host is evacuated", "shut down or move VMs out of the pool, add memory, "
                   "or lower dom0 memory after each upgrade", facts.hosts[ref].name)


def _replay(facts, order: list[str], growth: dict[str, int], standalone: bool, back: bool) -> list[tuple[str, str]]:
    """(host ref, VM name) of the VMs that fit nowhere when their host is evacuated with grown dom0s, and did fit
    without the growth (those are evacuation problems of their own, reported by make_plan)."""
    with_growth = _evacuate_all(facts, order, growth, back)
    without = _evacuate_all(facts, order, {}, back)
    return [] if standalone else [s for s in with_growth if s not in without]


def _evacuate_all(facts, order: list[str], growth: dict[str, int], back: bool) -> list[tuple[str, str]]:
    free = {ref: h.memory_free for ref, h in facts.hosts.items() if h.live and h.enabled}
    running = [vm for vm in facts.vms if vm.power_state == "Running" and vm.resident_on in free]
    where = {vm.ref: vm.resident_on for vm in running}
    stuck = []
    for ref in order:
        if ref not in free:
            continue
        moved = []
        for vm in sorted((v for v in running if where[v.ref] == ref), key=lambda v: -v.memory):  # first fit
            target = next((o for o in sorted(free, key=lambda o: -free[o]) if o != ref and free[o] >= vm.memory),
                          None)
            if target is None:
                stuck.append((ref, vm.name))
                continue
            free[target] -= vm.memory
            free[ref] += vm.memory
            where[vm.ref] = target
            moved.append(vm)
        free[ref] -= growth.get(ref, 0)  # the host comes back with its new, bigger dom0
        for vm in moved if back else ():
            if free[ref] >= vm.memory:
                free[ref] -= vm.memory
                free[where[vm.ref]] += vm.memory
                where[vm.ref] = ref
    return stuck
