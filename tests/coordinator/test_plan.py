"""Prechecks and order of a pool upgrade (coordinator.plan) against the XAPI simulator; also pools add/discover."""

from __future__ import annotations

import pytest

from labs import MEDIA, PASSWORD, POOL, make_lab, stop_lab
from provisioner.coordinator import pools
from provisioner.coordinator.plan import make_plan
from provisioner.xapi import XenApiDriver


def test_plan_ok_master_first_no_side_effect(lab):
    before = len(lab.store.events())
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert plan.ok, plan.problems
    assert [h.role for h in plan.hosts] == ["master", "member", "member"]
    assert plan.hosts[0].mac == lab.mac(0)
    assert all(h.action == "upgrade" for h in plan.hosts) and plan.target == "8.4.0"
    assert len(lab.store.events()) == before
    assert not [c for c in lab.world.call_log if c[1] in ("host.disable", "host.evacuate", "host.reboot")]


def test_plan_ha_enabled(lab):
    db = lab.world.pools[POOL].db
    db.update("pool", lab.world.pools[POOL].ref, ha_enabled=True)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert not plan.ok and any("HA is enabled" in p for p in plan.problems)


def test_plan_unregistered_mac(lab):
    lab.store.remove_host(lab.mac(2))
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert not plan.ok and any(lab.mac(2) in p and "not registered" in p for p in plan.problems)


def test_plan_missing_disk_and_unknown_media(lab):
    lab.store.update_host(lab.mac(1), {"disk": None})
    plan = make_plan(lab.store, POOL, "nope", lab.driver)
    assert any("no boot disk" in p for p in plan.problems)
    assert any("no media named 'nope'" in p for p in plan.problems)


def test_plan_evacuation_blocked(lab):
    pool = lab.world.pools[POOL]
    vm = next(ref for ref in pool.db.find("VM", resident_on=pool.hosts[1].ref)
              if not pool.db.get("VM", ref)["is_control_domain"])
    lab.world.block_evacuation(vm)
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert not plan.ok and any("prevents evacuation" in p and "VM_REQUIRES_SR" in p for p in plan.problems)


def test_plan_unreachable(lab):
    driver = XenApiDriver("http://127.0.0.1:9", "root", "x", timeout=2)
    plan = make_plan(lab.store, POOL, MEDIA, driver)
    assert not plan.ok and "not reachable" in plan.problems[0]


def test_pool_password_not_shown(lab):
    record = lab.store.get_pool(POOL)
    assert record.password != PASSWORD and pools.pool_password(lab.store, POOL) == PASSWORD  # encrypted at rest
    assert PASSWORD not in repr(record) and PASSWORD not in str(record.as_dict())
    assert PASSWORD not in repr(lab.driver)
    assert not [e for e in lab.store.events() if PASSWORD in str(e["details"])]


def test_discover_reports_conflicts_never_overwrites(tmp_path):
    lab = make_lab(tmp_path, register=False)
    try:
        lab.store.add_host(pools.Host.from_fields({"mac": lab.mac(1), "name": "staff-name", "pool": "other"}))
        result = pools.discover(lab.store, POOL, lab.driver)
        assert sorted(result.added) == [f"{POOL}-host0", f"{POOL}-host2"]
        assert len(result.conflicts) == 1 and "staff-name" in result.conflicts[0]
        assert lab.store.get_host(lab.mac(1)).name == "staff-name"  # untouched
        again = pools.discover(lab.store, POOL, lab.driver)
        assert again.added == [] and len(again.unchanged) == 2
    finally:
        stop_lab(lab)


def test_add_pool_validates(store):
    with pytest.raises(ValueError):
        pools.add_pool(store, "p", "ftp://x", "root", "pw")
    with pytest.raises(ValueError):
        pools.add_pool(store, "p", "http://x", "root", "")


def test_plan_per_vm_in_a_pool(lab):
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver, migrate_back=True)
    assert plan.ok and not plan.standalone
    assert [(v.host, v.action, v.afterwards) for v in plan.vms] == [
        (f"{POOL}-host{i}", "migrate", "migrated back") for i in range(3)]
    assert plan.changes == [] and plan.as_dict()["vms"][0]["name"] == f"{POOL}-host0-vm0"
    assert make_plan(lab.store, POOL, MEDIA, lab.driver).vms[0].afterwards == "stays where host.evacuate moved it"


def test_plan_power_cycle_needs_a_power_on_mode_on_every_member(lab):
    pool = lab.world.pools[POOL]
    pool.db.update("host", pool.hosts[2].ref, power_on_mode="")
    pool.db.update("host", pool.hosts[0].ref, power_on_mode="")  # the master is rebooted: it needs none
    assert make_plan(lab.store, POOL, MEDIA, lab.driver).ok  # without --power-cycle nothing needs it
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver, power_cycle=True)
    assert not plan.ok and plan.power_cycle
    assert [p for p in plan.problems if "power_on_mode" in p] == [
        f"{pool.hosts[2].name}: no power_on_mode, so the pool cannot power it on after the shutdown "
        f"[NO_POWER_ON_MODE] (fix: `xe host-set-power-on-mode host={pool.hosts[2].name} power-on-mode=wake-on-lan` "
        "(or IPMI), or upgrade without --power-cycle)"]
    assert [(c.code, c.host) for c in plan.checks if c.blocking] == [("NO_POWER_ON_MODE", pool.hosts[2].name)]
    from provisioner import output
    assert "members are shut down and powered on through the pool" in output.plan(plan)
