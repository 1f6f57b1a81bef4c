"""Prechecks and order of a pool upgrade (coordinator.plan) against the XAPI simulator; also pools add/discover."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from helpers import register_hosts
from provisioner import media
from provisioner.coordinator import pools
from provisioner.coordinator.plan import make_plan
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.runtime import Runtime
from provisioner.simulator.builder import build_pool, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.machine import make_boot_handler
from provisioner.simulator.world import World
from provisioner.store import Store
from provisioner.xapi import XenApiDriver

POOL, MEDIA, PASSWORD = "lab", "xs84", "s3cret-pw"


@dataclass
class Lab:
    config: object
    store: Store
    runtime: Runtime
    world: World
    sim: object
    handler: object
    driver: XenApiDriver

    def mac(self, i: int) -> str:
        return self.world.pools[POOL].hosts[i].mac

    def reboots(self, i: int) -> int:
        ref = self.world.pools[POOL].hosts[i].ref
        return sum(1 for _, method, params in self.world.call_log if method == "host.reboot" and ref in params)


def make_lab(tmp_path, hosts: int = 3, *, register: bool = True, speed: float = 600.0) -> Lab:
    """Real boot service + simulator + PXE machines on loopback; hosts discovered and given a boot disk."""
    config = demo_config(tmp_path)
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    runtime = Runtime(config, store).start()
    world = World(Clock(speed))
    build_pool(world, POOL, hosts=hosts, version="8.2.1", vms_per_host=1)
    handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url)
    world.boot_handler = handler
    sim = serve_world(world)
    pools.add_pool(store, POOL, sim.master_url(), "root", PASSWORD)
    driver = pools.connect(store, POOL, timeout=5)
    lab = Lab(config, store, runtime, world, sim, handler, driver)
    if register:
        register_hosts(store, POOL, driver)
    return lab


def stop_lab(lab: Lab) -> None:
    lab.driver.close()
    lab.handler.stop()
    lab.sim.stop()
    lab.runtime.stop()
    lab.store.close()


@pytest.fixture
def lab(tmp_path):
    made = make_lab(tmp_path)
    yield made
    stop_lab(made)


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
