"""The simulator's pool.join refuses each mismatch with xapi's own code and parameters (xapi_pool.ml
pre_join_checks), and joins once the new host is fixed; local storage records (builder.add_local_vm)."""

from __future__ import annotations

import time

import pytest
import sim_tls
import XenAPI

from provisioner.simulator.builder import add_local_vm, build_pool, local_sr, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.join import apply_updates

UPDATE = ("3f2a7c1e-0000-4000-8000-000000000001", "XS84E001")


@pytest.fixture
def two():
    """Pool "big" (2 hosts at 8.4.0) and a standalone host "new" at 8.4.0 (what a fresh install leaves)."""
    world = new_world(Clock(2000.0))
    big = build_pool(world, "big", hosts=2, version="8.4.0", vms_per_host=0)
    new = build_pool(world, "new", hosts=1, version="8.4.0", vms_per_host=0)
    handle = serve_world(world)
    yield world, big, new, handle
    handle.stop()


def session(url):
    s = sim_tls.session(url)
    s.xenapi.login_with_password("root", "any", "1.0", "test")
    return s


def join(handle, big, new, force=None):
    s = session(handle.url(new.master.mac))
    try:
        args = (big.master.address, "root", "any") + (() if force is None else (force,))
        s.xenapi.pool.join(*args)
    finally:
        try:
            s.xenapi.session.logout()
        except XenAPI.Failure:  # joined already: its xapi restarted as a member (HOST_IS_SLAVE)
            pass


def set_sv(pool, ref, **changes):
    with pool.db.lock:
        pool.db.update("host", ref, software_version={**pool.db.get("host", ref)["software_version"], **changes})


def management_pif(pool, ref):
    return next(p for p in pool.db.find("PIF", host=ref) if pool.db.get("PIF", p)["management"])


def _updates(world, big, new):
    apply_updates(big, big.master.ref, [UPDATE])


def _edition(world, big, new):
    for h in big.hosts:
        big.db.update("host", h.ref, edition="xenserver-premium-per-socket")


def _platform(world, big, new):
    set_sv(big, big.master.ref, platform_version="3.4.1")


def _git_id(world, big, new):
    set_sv(big, big.master.ref, git_id="a1b2c3d")


def _vlan(world, big, new):
    big.db.update("PIF", management_pif(big, big.master.ref), VLAN="20")


def _backend(world, big, new):
    set_sv(big, big.master.ref, network_backend="bridge")


def _api(world, big, new):
    big.db.update("host", big.master.ref, API_version_minor="22")


def _schema(world, big, new):
    set_sv(big, big.master.ref, db_schema="5.780")


@pytest.mark.parametrize("mismatch, expected", [
    (_updates, ["POOL_HOSTS_NOT_HOMOGENEOUS", "Updates on local host new-host0 and pool host big-host0 differ"]),
    (_edition, ["LICENSE_HOST_POOL_MISMATCH", 'host edition = "trial"',
                'pool edition = "xenserver-premium-per-socket"']),
    (_platform, ["POOL_HOSTS_NOT_COMPATIBLE"]),
    (_git_id, ["POOL_HOSTS_NOT_HOMOGENEOUS", "Software version differs"]),
    (_vlan, ["POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH", "-1", "20"]),
    (_backend, ["OPERATION_NOT_ALLOWED", "Network backends differ"]),
    (_api, ["POOL_JOINING_HOST_MUST_HAVE_SAME_API_VERSION", "2.21", "2.22"]),
    (_schema, ["POOL_JOINING_HOST_MUST_HAVE_SAME_DB_SCHEMA", "5.775", "5.780"]),
], ids=lambda v: getattr(v, "__name__", "")[1:] if callable(v) else "")
def test_pool_join_refuses_each_mismatch_with_xapis_code(two, mismatch, expected):
    world, big, new, handle = two
    mismatch(world, big, new)
    with pytest.raises(XenAPI.Failure) as err:
        join(handle, big, new)
    assert err.value.details == expected
    assert new.master.pool is new and len(big.hosts) == 2  # nothing moved: still standalone


def test_force_skips_only_the_software_homogeneity_check(two):
    world, big, new, handle = two
    _git_id(world, big, new)
    _updates(world, big, new)
    with pytest.raises(XenAPI.Failure) as err:
        join(handle, big, new, force=True)
    assert err.value.details[0] == "POOL_HOSTS_NOT_HOMOGENEOUS" and "Updates" in err.value.details[1]


def test_after_the_same_updates_are_applied_the_join_goes_through(two):
    world, big, new, handle = two
    _updates(world, big, new)
    joiner = new.master
    apply_updates(new, joiner.ref, [UPDATE])  # the operator brings the new host to the pool's update level
    join(handle, big, new)
    deadline = time.monotonic() + 20
    while joiner.pool is not big and time.monotonic() < deadline:
        time.sleep(0.01)
    assert joiner.pool is big and len(big.hosts) == 3
    with big.db.lock:
        updates = big.db.get("host", joiner.ref)["updates"]
        assert [big.db.get("pool_update", u)["uuid"] for u in updates] == [UPDATE[0]]  # refs of the pool's DB


def test_local_vms_put_their_disks_on_the_hosts_local_sr_only(two):
    world, big, new, handle = two
    member = big.hosts[1]
    vm = add_local_vm(big, "db1", member.ref, power_state="Suspended", snapshot=True)
    db, sr = big.db, local_sr(big, member.ref)
    assert db.get("SR", sr)["name_label"] == "Local storage" and not db.get("SR", sr)["shared"]
    assert [db.get("PBD", p)["host"] for p in db.find("PBD", SR=sr)] == [member.ref]
    suspend = db.get("VM", vm)["suspend_VDI"]
    assert db.get("VDI", suspend)["SR"] == sr and db.get("VDI", suspend)["type"] == "suspend"
    s = session(handle.url(big.master.mac))
    try:
        rec = s.xenapi.VM.get_record(vm)
        snap = rec["snapshots"]
        assert len(snap) == 1 and s.xenapi.VM.get_record(snap[0])["is_a_snapshot"]
        assert {s.xenapi.VDI.get_SR(v) for v in s.xenapi.SR.get_VDIs(sr)} == {sr}
        assert len(s.xenapi.SR.get_VDIs(sr)) == 3  # disk, suspend image, snapshot's disk
    finally:
        s.xenapi.session.logout()
