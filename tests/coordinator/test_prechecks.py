"""The pool / host / media prechecks (coordinator/prechecks.py, prechecks_media.py; docs/prechecks.md): each one
tripped by a fact of the simulated pool, shown with its code, message and fix, and refusing the run (or asking
consent) before any host is touched."""

from __future__ import annotations

import pytest
from helpers import FAST
from labs import MEDIA, POOL

from provisioner import media, output, registry, states
from provisioner.coordinator import runner
from provisioner.coordinator.plan import make_plan
from provisioner.demo import synthetic_media_tree
from provisioner.simulator import host_facts, states as sim_states

GiB = 1024 ** 3
TOUCHING = ("host.disable", "host.evacuate", "host.reboot", "Async.host.evacuate", "Async.pool.disable_ha")


def found(plan, code):
    return [c for c in plan.checks if c.code == code]


def sim(lab):
    return lab.world.pools[POOL]


def set_version(lab, version: str, build: str = "", platform: str = "") -> None:
    """Every host at `version` (software_version as the real host has it)."""
    pool = sim(lab)
    for h in pool.hosts:
        sv, _ = sim_states.software_version({"product_version": version, "build_number": build,
                                             "platform_version": platform}, h.name)
        pool.db.update("host", h.ref, software_version=sv)


def refused(lab, code: str, media_name: str = MEDIA, **options) -> str:
    """start + PRECHECK: BLOCKED naming `code`, and no host touched."""
    before = len(lab.world.call_log)
    started = runner.start_run(lab.store, POOL, media_name, lab.driver, **options)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=FAST).run()
    assert final.state == states.RUN_BLOCKED and f"[{code}]" in final.reason, final.reason
    assert not [c for c in lab.world.call_log[before:] if c[1] in TOUCHING
                or (c[1] == "host.call_plugin" and "main" in c[2])]
    return final.reason


# --- the facts that trip each check -------------------------------------------------------------------------

def legacy_layout(lab):
    host_facts.set_facts(sim(lab).hosts[1], partition_layout="legacy-msdos")


def grown_dom0(lab):
    """Three hosts of 12 GiB, dom0 4 GiB and one 4 GiB VM each: every evacuation fits now; with dom0 at 8 GiB on
    the hosts already upgraded the last host's VMs no longer do."""
    pool = sim(lab)
    for h in pool.hosts:
        pool.db.update("host_metrics", pool.db.get("host", h.ref)["metrics"], memory_total=str(12 * GiB))
        host_facts.set_facts(h, dom0_memory_after_upgrade=8 * GiB)
    lab.world.update_memory(pool)


def pv_guest(lab):
    pool = sim(lab)
    vm = next(v for v in pool.db.find("VM", is_control_domain=False)
              if pool.db.get("VM", v)["name_label"].endswith("vm0"))
    pool.db.update("VM", vm, HVM_boot_policy="", domain_type="pv")


def vswitch(lab):
    set_version(lab, "8.1.0", "release/quebec/master/20", "3.1.0")
    sim(lab).db.update("pool", sim(lab).ref, vswitch_controller="10.0.0.99")


def legacy_ssl(lab):
    set_version(lab, "8.1.0", "release/quebec/master/20", "3.1.0")
    sim(lab).db.update("host", sim(lab).hosts[2].ref, ssl_legacy=True)


def fcoe(lab):
    sim(lab).db.create("SR", name_label="FCoE LUN", type="lvmofcoe", shared=True, physical_size=str(GiB))


def too_old(lab):
    set_version(lab, "6.5.0", "90233c", "1.9.0")


def other_build(lab):
    set_version(lab, "8.4.0", "release/nile/master/99", "3.4.0")


def tagged_vlan(lab):
    pool = sim(lab)
    pif = next(p for p in pool.db.find("PIF", host=pool.hosts[1].ref) if pool.db.get("PIF", p)["management"])
    pool.db.update("PIF", pif, VLAN="100")


def xs9_media(lab, tmp_path):
    media.import_media(lab.store, lab.config, "xs90", synthetic_media_tree(tmp_path / "tree9", version="9.0.0"))
    return "xs90"


# --- each check: message and fix ----------------------------------------------------------------------------

def test_a_healthy_pool_only_warns_about_the_trial_licence(lab):
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert plan.ok, plan.problems
    assert {c.code for c in plan.checks} == {"LICENCE"}  # the simulated hosts run the ISO's trial edition
    assert len(found(plan, "LICENCE")) == 3 and not any(c.blocking for c in plan.checks)
    assert "trial edition" in found(plan, "LICENCE")[0].message


@pytest.mark.parametrize("layout, why", [
    ("legacy-msdos", "legacy (DOS) partition table"),
    ("utility", "vendor utility partition"),
    ("legacy", "holds virtual disks"),  # safe2upgrade(): the old layout with VDIs on the local SR
])
def test_safe_to_upgrade(lab, layout, why):
    pool = sim(lab)
    host_facts.set_facts(pool.hosts[1], partition_layout=layout)
    if layout == "legacy":
        local = next(s for s in pool.db.find("SR", shared=False) if pool.db.get("SR", s)["content_type"] == "user"
                     and any(pool.db.get("PBD", p)["host"] == pool.hosts[1].ref for p in pool.db.find("PBD", SR=s)))
        pool.db.create("VDI", name_label="old disk", SR=local, virtual_size=str(GiB))
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    [check] = found(plan, "SAFE_TO_UPGRADE")
    assert check.host == pool.hosts[1].name and check.level == "error" and why in check.message
    assert "reinstall the host" in check.fix and not plan.ok


def test_safe_to_upgrade_old_layout_small_local_sr(lab):
    pool = sim(lab)
    host_facts.set_facts(pool.hosts[2], partition_layout="legacy")
    for s in pool.db.find("SR", shared=False):
        pool.db.update("SR", s, physical_size=str(30 * GiB))
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert [(c.host, "38 GiB" in c.message) for c in found(plan, "SAFE_TO_UPGRADE")] == [(pool.hosts[2].name, True)]


def test_dom0_memory_growth_that_no_longer_fits_is_an_error(lab):
    grown_dom0(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    errors = [c for c in found(plan, "DOM0_MEMORY") if c.level == "error"]
    assert [c.host for c in errors] == [sim(lab).hosts[2].name], plan.checks
    assert "no longer fits on any other host" in errors[0].message and "add memory" in errors[0].fix
    warnings = [c for c in found(plan, "DOM0_MEMORY") if c.level == "warning"]
    assert len(warnings) == 3 and "dom0 grows by 4.0 GiB" in warnings[0].message


def test_dom0_memory_growth_that_fits_is_a_warning(lab):
    for h in sim(lab).hosts:
        host_facts.set_facts(h, dom0_memory_after_upgrade=5 * GiB)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert plan.ok and {c.level for c in found(plan, "DOM0_MEMORY")} == {"warning"}


def test_pv_guest(lab):
    pv_guest(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    [check] = found(plan, "PV_GUEST")
    assert check.host == "" and "vm0" in check.message and "does not run PV guests" in check.message
    assert "convert them to HVM" in check.fix


def test_vswitch_controller_and_legacy_ssl_only_from_before_8_2(lab):
    vswitch(lab)
    sim(lab).db.update("host", sim(lab).hosts[2].ref, ssl_legacy=True)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    [vs] = found(plan, "VSWITCH_CONTROLLER")
    assert "10.0.0.99" in vs.message and "pool-set-vswitch-controller" in vs.fix
    [ssl] = found(plan, "LEGACY_SSL")
    assert sim(lab).hosts[2].name in ssl.message and "pool-disable-ssl-legacy" in ssl.fix
    set_version(lab, "8.2.1", "release/yangtze/master/58", "3.2.1")  # 8.2 and later have neither feature
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert not found(plan, "VSWITCH_CONTROLLER") and not found(plan, "LEGACY_SSL")


def test_fcoe_sr_needs_consent(lab):
    fcoe(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    [check] = found(plan, "DEPRECATED_SR")
    assert check.level == "consent" and "FCoE LUN" in check.message and "--consent DEPRECATED_SR" in check.fix
    assert not plan.ok
    agreed = make_plan(lab.store, POOL, MEDIA, lab.driver, consent=["deprecated_sr"])
    assert agreed.ok and found(agreed, "DEPRECATED_SR")
    assert "consented DEPRECATED_SR: FCoE SR(s) FCoE LUN" in output.plan(agreed)


def test_licence_cvad_and_licensed(lab):
    pool = sim(lab)
    pool.db.update("host", pool.hosts[0].ref, edition="xendesktop")
    for h in pool.hosts[1:]:
        pool.db.update("host", h.ref, edition="premium")
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    [check] = found(plan, "LICENCE")
    assert check.host == pool.hosts[0].name and check.level == "warning" and "CVAD" in check.message
    assert "xe host-apply-edition" in check.fix and plan.ok


def test_media_source_version(lab):
    too_old(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    checks = found(plan, "MEDIA_SOURCE_VERSION")
    assert len(checks) == 3 and "platform version 1.9.0 (6.5.0)" in checks[0].message
    assert "in steps" in checks[0].fix


def test_same_version_other_build_needs_consent(lab):
    other_build(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    checks = found(plan, "SAME_VERSION_OTHER_BUILD")
    assert len(checks) == 3 and all(c.level == "consent" for c in checks) and not plan.ok
    assert "build release/nile/master/99" in checks[0].message and "--consent SAME_VERSION_OTHER_BUILD" in checks[0].fix
    assert make_plan(lab.store, POOL, MEDIA, lab.driver, consent=["SAME_VERSION_OTHER_BUILD"]).ok


def test_management_vlan_refused_for_network_boot_not_for_host_plugin(lab):
    tagged_vlan(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    [check] = found(plan, "MANAGEMENT_VLAN")
    assert check.host == sim(lab).hosts[1].name and "VLAN 100" in check.message and "host-plugin" in check.fix
    registry.set_boot_method(lab.store, lab.mac(1), "host-plugin")
    assert not found(make_plan(lab.store, POOL, MEDIA, lab.driver), "MANAGEMENT_VLAN")


def test_xs9_uefi_only_and_secure_boot(lab, tmp_path):
    name = xs9_media(lab, tmp_path)
    pool = sim(lab)
    for i in (0, 2):
        registry.update_host(lab.store, lab.mac(i), {"firmware": "uefi"})
    pool.db.update("host", pool.hosts[2].ref, secure_boot=True)
    plan = make_plan(lab.store, POOL, name, lab.driver)
    [uefi] = found(plan, "UEFI_ONLY")
    assert uefi.host == pool.hosts[1].name and "refuses legacy BIOS" in uefi.message and "UEFI" in uefi.fix
    [sb] = found(plan, "SECURE_BOOT")
    assert sb.host == pool.hosts[2].name and sb.level == "warning"
    assert not found(make_plan(lab.store, POOL, MEDIA, lab.driver), "UEFI_ONLY")  # XenServer 8 still boots BIOS


def test_plan_json_and_text_carry_code_message_fix(lab):
    pv_guest(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    entry = next(c for c in plan.as_dict()["checks"] if c["code"] == "PV_GUEST")
    assert entry["level"] == "error" and entry["blocking"] and entry["fix"].startswith("convert them")
    text = output.plan(plan)
    assert "error PV_GUEST: PV guest(s)" in text and "  fix: convert them to HVM" in text


# --- each refuses the run before any host is touched ---------------------------------------------------------

@pytest.mark.parametrize("code, trip", [
    ("SAFE_TO_UPGRADE", legacy_layout), ("DOM0_MEMORY", grown_dom0), ("PV_GUEST", pv_guest),
    ("VSWITCH_CONTROLLER", vswitch), ("LEGACY_SSL", legacy_ssl), ("DEPRECATED_SR", fcoe),
    ("MEDIA_SOURCE_VERSION", too_old), ("SAME_VERSION_OTHER_BUILD", other_build), ("MANAGEMENT_VLAN", tagged_vlan),
])
def test_run_refused_before_any_host_is_touched(lab, code, trip):
    trip(lab)
    refused(lab, code)


def test_uefi_only_refuses_the_run(lab, tmp_path):
    refused(lab, "UEFI_ONLY", xs9_media(lab, tmp_path))


def test_consent_is_kept_for_precheck(lab):
    fcoe(lab)
    refused(lab, "DEPRECATED_SR")
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, consent=("deprecated_sr",))
    again = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST)
    assert again.options["consent"] == ("DEPRECATED_SR",)  # journaled: a resumed PRECHECK sees it too
    assert make_plan(lab.store, POOL, MEDIA, lab.driver, config=lab.config,
                     **{k: v for k, v in again.options.items() if k != "stop_on_failure"}).ok


def short_key(lab):
    host_facts.set_facts(sim(lab).hosts[1], server_cert_key_bits=1024)


def test_cert_key_length(lab):
    short_key(lab)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    [check] = found(plan, "CERT_KEY_LENGTH")
    assert check.host == sim(lab).hosts[1].name and "1024-bit RSA key" in check.message
    assert "host-refresh-server-certificate" in check.fix
    refused(lab, "CERT_KEY_LENGTH")


def test_firmware_as_the_boot_server_saw_it(lab, tmp_path):
    """After a run whose hosts network-booted pxelinux (BIOS firmware), a XenServer 9 plan: registered as BIOS ->
    UEFI_ONLY; re-registered as UEFI -> FIRMWARE_MISMATCH (they still boot BIOS) and BOOT_PARTITION_NOT_ESP (their
    installs were made by an installer booted on BIOS)."""
    pool = sim(lab)
    host_facts.set_facts(pool.hosts[1], dom0_memory_after_upgrade=5 * GiB)  # fits: a warning only
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_DONE, final.reason
    dom0 = pool.db.get("VM", pool.db.get("host", pool.hosts[1].ref)["control_domain"])
    assert dom0["memory_static_max"] == str(5 * GiB)  # the new version's dom0, as the plugin announced
    assert host_facts.facts_of(pool.hosts[1]).dom0_memory_after_upgrade is None
    name = xs9_media(lab, tmp_path)
    assert not found(make_plan(lab.store, POOL, MEDIA, lab.driver), "FIRMWARE_MISMATCH")  # registered as seen
    plan = make_plan(lab.store, POOL, name, lab.driver)
    assert len(found(plan, "UEFI_ONLY")) == 3 and len(found(plan, "BOOT_PARTITION_NOT_ESP")) == 3
    registry.update_host(lab.store, lab.mac(1), {"firmware": "uefi"})
    plan = make_plan(lab.store, POOL, name, lab.driver)
    [mismatch] = found(plan, "FIRMWARE_MISMATCH")
    host = sim(lab).hosts[1].name
    assert mismatch.host == host and mismatch.level == "error"
    assert "last booted from us in bios mode" in mismatch.message
    assert "--firmware bios" in mismatch.fix
    [esp] = [c for c in found(plan, "BOOT_PARTITION_NOT_ESP") if c.host == host]
    assert "EFI System Partition" in esp.message and "reinstall" in esp.fix
    refused(lab, "BOOT_PARTITION_NOT_ESP", name)


def test_builder_sets_facts():
    from provisioner.simulator.builder import build_pool, new_world

    world = new_world()
    pool = build_pool(world, "p", hosts=2, facts={1: {"partition_layout": "utility", "ssl_legacy": True,
                                                      "dom0_memory_after_upgrade": 8 * GiB}})
    assert host_facts.facts_of(pool.hosts[1]).partition_layout == "utility"
    assert host_facts.facts_of(pool.hosts[0]) == host_facts.HostFacts()
    legacy = [pool.db.get("host", h.ref)["ssl_legacy"] for h in pool.hosts]
    assert legacy == [False, True]
