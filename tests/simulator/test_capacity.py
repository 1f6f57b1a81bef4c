"""The simulator's memory is real: a migration onto a host without room fails, migrations in flight reserve their
memory on the destination (as xapi's allocate_vm_to_host does), and host.evacuate never picks a disabled host.
Through the real XenAPI package over a socket (what the coordinator's waves rely on: docs/waves.md)."""

from __future__ import annotations

import threading

import pytest
import sim_tls
import XenAPI

from provisioner.simulator.builder import GiB, build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock


def failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as ei:
        fn(*args)
    return ei.value.details


@pytest.fixture
def tight():
    """3 hosts of 16 GiB: dom0 4 GiB and two 4 GiB VMs each, so each host has room for exactly one more VM."""
    world = new_world(Clock(200.0), migrate=40.0)  # a migration is 0.2 s real: long enough to overlap two
    build_pool(world, "p", hosts=3, vms_per_host=2, memory_gib=16, vm_memory_gib=4, dom0_memory_gib=4)
    handle = serve_world(world)
    session = sim_tls.session(handle.master_url())
    session.xenapi.login_with_password("root", "pw")
    yield handle, session.xenapi
    handle.stop()


def hosts_by_name(x):
    return {r["name_label"]: ref for ref, r in x.host.get_all_records().items()}


def vms_on(x, host):
    return sorted((r["name_label"], ref) for ref, r in x.VM.get_all_records().items()
                  if r["resident_on"] == host and not r["is_control_domain"])


def test_migration_onto_a_full_host_is_refused(tight):
    _, x = tight
    hosts = hosts_by_name(x)
    a, b = vms_on(x, hosts["p-host1"])
    x.VM.pool_migrate(a[1], hosts["p-host2"], {})  # host2 now full: 4 + 3 * 4 = 16 GiB
    assert x.VM.get_resident_on(a[1]) == hosts["p-host2"]
    assert failure(x.VM.assert_can_boot_here, b[1], hosts["p-host2"]) == [
        "HOST_NOT_ENOUGH_FREE_MEMORY", str(4 * GiB), "0"]
    assert failure(x.VM.pool_migrate, b[1], hosts["p-host2"], {})[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert x.VM.get_resident_on(b[1]) == hosts["p-host1"]


def test_concurrent_migrations_reserve_memory_on_the_destination(tight):
    handle, x = tight
    hosts = hosts_by_name(x)
    one, two = vms_on(x, hosts["p-host1"])[0][1], vms_on(x, hosts["p-host2"])[0][1]
    outcomes: dict[str, object] = {}

    def move(vm):
        s = sim_tls.session(handle.master_url())
        s.xenapi.login_with_password("root", "pw")
        try:
            s.xenapi.VM.pool_migrate(vm, hosts["p-host0"], {})
            outcomes[vm] = "ok"
        except XenAPI.Failure as exc:
            outcomes[vm] = exc.details[0]
    threads = [threading.Thread(target=move, args=(vm,)) for vm in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # room for one VM on host0: the second migration, checked while the first is in flight, is refused
    assert sorted(outcomes.values()) == ["HOST_NOT_ENOUGH_FREE_MEMORY", "ok"], outcomes
    pool = handle.world.pools["p"]
    assert all(pool.db.get("VM", v)["scheduled_to_be_resident_on"] == "OpaqueRef:NULL" for v in (one, two))
    on_host0 = [n for n, _ in vms_on(x, hosts["p-host0"])]
    assert len(on_host0) == 3


def test_evacuate_never_targets_a_disabled_host(tight):
    """xapi_host.ml:285-291 compute_evacuation_plan_no_wlb: only enabled hosts other than this one are targets."""
    _, x = tight
    hosts = hosts_by_name(x)
    x.host.disable(hosts["p-host2"])
    x.host.disable(hosts["p-host1"])
    # host0 has room for one of host1's two VMs; host2 (disabled, with room) must not take the other
    errors = x.host.get_vms_which_prevent_evacuation(hosts["p-host1"])
    assert [e[0] for e in errors.values()] == ["HOST_NOT_ENOUGH_FREE_MEMORY"]
    assert failure(x.host.evacuate, hosts["p-host1"])[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert len(vms_on(x, hosts["p-host1"])) == 2 and len(vms_on(x, hosts["p-host2"])) == 2
    x.host.enable(hosts["p-host2"])
    x.host.evacuate(hosts["p-host1"])
    assert vms_on(x, hosts["p-host1"]) == []
