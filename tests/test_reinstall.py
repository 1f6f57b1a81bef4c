"""Lab reinstall-and-join (coordinator/reinstall.py + reinstall_plan.py) against the simulator, the real boot
service and simulated PXE machines: the failed-member remedy end to end, every refusal, and crash safety."""

from __future__ import annotations


import pytest
from helpers import crash_once
from labs import MEDIA, PASSWORD, POOL, host_info, macs, make_lab, shut_down, stop_lab, upgrade

from provisioner import cryptpw, media, states
from provisioner.coordinator import pools, reinstall, runner
from provisioner.coordinator.plan import make_plan
from provisioner.coordinator.reinstall_plan import ReinstallRefused, make_reinstall_plan
from provisioner.demo import synthetic_media_tree
from provisioner.model import ValidationError
from provisioner.simulator.fresh import new_host_uuid

FLOW_FAST = reinstall.Timeouts(install=4 * 3600, xapi=1800, joined=1800, poll=5)
HASH = cryptpw.hash_password(PASSWORD)



@pytest.fixture
def lab(tmp_path):
    made = make_lab(tmp_path, hosts=3)
    yield made
    stop_lab(made)


def connect(lab):
    return lambda name: pools.connect(lab.store, name, timeout=5)


def name(lab, mac):
    return lab.store.get_host(mac).name


def start(lab, mac, **kw):
    kw.setdefault("confirm", name(lab, mac))
    kw.setdefault("forget", True)
    kw.setdefault("root_password_hash", HASH)
    return reinstall.start(lab.store, mac, kw.pop("pool", POOL), kw.pop("media", MEDIA),
                           connect=connect(lab), host_url=lab.sim.url(mac), **kw)


def flow(lab, found, **kw):
    lines = kw.pop("lines", [])
    return reinstall.Flow(lab.store, lab.config, found.id, connect=connect(lab), clock=lab.world.clock,
                          timeouts=FLOW_FAST, say=lines.append, power_on=lambda: lab.world.power_on(found.mac),
                          **kw)


def joins(lab):
    return [c for c in lab.world.call_log if c[1] == "pool.join"]


def test_failed_member_is_forgotten_reinstalled_and_rejoined(lab):
    master, mac, _ = macs(lab)
    lab.handler.inject(mac, installer_fails=True)
    run = upgrade(lab)
    assert run.state == states.RUN_DONE_WITH_FAILURES
    remedy = runner.report(lab.store, run.id)["hosts"][1]["remedy"]
    assert f"provisioner reinstall {mac} --pool {POOL} --media {MEDIA} --confirm {name(lab, mac)} --forget" in remedy
    lab.handler.inject(mac, installer_fails=False)
    old_uuid = host_info(lab, mac).uuid
    shut_down(lab, mac)

    found = start(lab, mac)
    assert found.step == states.RI_FORGET and found.old_uuid == old_uuid
    lines = []
    done = flow(lab, found, lines=lines).run()

    assert done.step == states.RI_DONE, done.reason
    hosts = lab.driver.hosts()
    assert len(hosts) == 3 and {h.product_version for h in hosts} == {"8.4.0"}
    assert all(h.live and h.enabled for h in hosts) and host_info(lab, master).is_master
    new = host_info(lab, mac)
    assert new.uuid == done.new_uuid == new_host_uuid(lab.world.host(mac)) and new.uuid != old_uuid
    assert old_uuid not in {h.uuid for h in hosts}
    registered = lab.store.get_host(mac)
    assert (registered.pool, registered.name) == (POOL, new.name)
    moved = lab.store.events(mac=mac, kind="host.reinstalled")
    assert moved and moved[0]["details"]["old_uuid"] == old_uuid and moved[0]["details"]["new_uuid"] == new.uuid
    # One fresh install, once: the failed upgrade plus the reinstall; one answer file for the fresh attempt.
    assert lab.handler.machine(mac).installs() == 2
    attempt = lab.store.get_attempt(done.attempt_id)
    assert attempt.state == states.SUCCEEDED and attempt.runs == 1 == attempt.max_runs
    assert len(joins(lab)) == 1 and len([c for c in lab.world.call_log if c[1] == "host.destroy"]) == 1, lines
    # The registry follows the new host: a new plan finds every host registered and at the target.
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert plan.problems == ["every host is already at 8.4.0: nothing to do"]
    assert pools.discover(lab.store, POOL, lab.driver).conflicts == []
    # The hash is gone from the store, and never was in an event or a progress line.
    assert lab.store.get_reinstall(done.id).root_password_hash is None
    assert not [e for e in lab.store.events() if HASH in str(e["details"]) or PASSWORD in str(e["details"])]
    assert not [line for line in lines if HASH in line] and any("fresh install armed" in line for line in lines)
    assert HASH not in repr(done) and HASH not in str(done.as_dict())


def test_refused_for_the_master(lab):
    master = macs(lab)[0]
    with pytest.raises(ReinstallRefused, match="MASTER"):
        start(lab, master)
    assert lab.store.active_reinstall(master) is None and not lab.store.list_attempts(master)
    assert lab.store.events(kind="reinstall.refused")


def test_refused_for_a_live_member(lab):
    mac = macs(lab)[1]
    with pytest.raises(ReinstallRefused, match="LIVE member"):
        start(lab, mac)
    assert not [c for c in lab.world.call_log if c[1] == "host.destroy"]
    assert not lab.store.list_attempts(mac)


def test_refused_with_resident_vms_and_host_destroy_says_so(lab):
    mac = macs(lab)[1]
    lab.world.crash(mac)  # power loss: its VMs stay resident on the dead host
    db = lab.world.pools[POOL].db
    with db.lock:  # the pool declares it dead (after host_assumed_dead_interval)
        db.update("host_metrics", db.get("host", lab.world.host(mac).ref)["metrics"], live=False)
    with pytest.raises(ReinstallRefused, match="HOST_HAS_RESIDENT_VMS") as err:
        start(lab, mac)
    assert "vm-reset-powerstate" in str(err.value)
    assert not [c for c in lab.world.call_log if c[1] == "host.destroy"]


@pytest.mark.parametrize("change, code, way_out", [("live", "HOST_IS_LIVE", "xe host-shutdown"),
                                                    ("vm", "HOST_HAS_RESIDENT_VMS", "vm-reset-powerstate")])
def test_host_destroy_refusal_is_reported_with_the_way_out(lab, change, code, way_out):
    """The checks passed (dead, no VMs), then the world changed before host.destroy: the code and the way out."""
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    found = start(lab, mac)
    db, ref = lab.world.pools[POOL].db, lab.world.host(mac).ref
    with db.lock:
        if change == "live":
            db.update("host_metrics", db.get("host", ref)["metrics"], live=True)
        else:
            vm = next(v for v in db.all("VM") if not db.get("VM", v)["is_control_domain"])
            db.update("VM", vm, resident_on=ref, power_state="Running")
    done = flow(lab, found).run()
    assert done.step == states.RI_FAILED and code in done.reason and way_out in done.reason, done.reason
    destroys = [c for c in lab.world.call_log if c[1] == "host.destroy"]
    assert len(destroys) == (0 if change == "live" else 1)  # a live host is not even asked
    assert [a.run_id is not None for a in lab.store.list_attempts(mac)] == [True]  # no fresh install armed
    assert lab.store.active_reinstall(mac) is None and done.root_password_hash is None


def test_dead_member_needs_forget(lab):
    mac = macs(lab)[2]
    shut_down(lab, mac)
    with pytest.raises(ReinstallRefused, match="--forget runs host.destroy"):
        start(lab, mac, forget=False)


@pytest.mark.parametrize("confirm, words", [(None, "confirm it by name"), ("", "confirm it by name"),
                                            ("lab-host2", "is not the name of host")])
def test_confirmation_by_name_is_required(lab, confirm, words):
    mac = macs(lab)[1]
    calls = len(lab.world.call_log)
    with pytest.raises(ValidationError, match=words):
        start(lab, mac, confirm=confirm)
    assert len(lab.world.call_log) == calls  # refused before any XAPI call
    assert lab.store.active_reinstall(mac) is None


@pytest.mark.parametrize("value, words", [("s3cret-pw", "not a SHA-512"), (None, "is empty"),
                                          (cryptpw.hash_password("other"), "does not match pool")])
def test_root_password_hash_is_checked_and_never_echoed(lab, value, words):
    mac = macs(lab)[1]
    shut_down(lab, mac)
    with pytest.raises(ReinstallRefused, match=words) as err:
        start(lab, mac, root_password_hash=value)
    assert PASSWORD not in str(err.value)
    assert not [e for e in lab.store.events() if PASSWORD in str(e["details"])]


def test_master_not_upgraded_yet_is_refused_as_pool_hosts_not_compatible(lab):
    mac = macs(lab)[1]
    shut_down(lab, mac)
    with pytest.raises(ReinstallRefused, match="POOL_HOSTS_NOT_COMPATIBLE") as err:
        start(lab, mac)
    assert "upgrade the master first" in str(err.value)
    assert not [c for c in lab.world.call_log if c[1] == "host.destroy"]


def test_pool_join_refused_is_reported_with_the_way_out(lab):
    """The checks passed (master at the target), then the master went back to 8.2.1 (restored from backup):
    pool.join answers POOL_HOSTS_NOT_COMPATIBLE and the flow fails at JOIN, leaving a standalone new host."""
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    found = start(lab, mac)
    pool = lab.world.pools[POOL]

    def on_commit(r):
        if r.step == states.RI_JOIN:
            with pool.db.lock:
                sv = dict(pool.db.get("host", pool.master.ref)["software_version"], platform_version="3.2.1")
                pool.db.update("host", pool.master.ref, software_version=sv)
    done = flow(lab, found, on_commit=on_commit).run()
    assert done.step == states.RI_FAILED and "POOL_HOSTS_NOT_COMPATIBLE" in done.reason, done.reason
    assert "xe pool-join" in done.reason and done.new_uuid
    new = lab.world.host(mac)
    assert new.is_master and len(new.pool.hosts) == 1  # a standalone new host, not joined
    assert done.root_password_hash is None


@pytest.mark.parametrize("crash_at", [states.RI_ARM, states.RI_INSTALLING, states.RI_WAIT_XAPI, states.RI_JOIN,
                                      states.RI_WAIT_JOINED])
def test_crash_and_resume_never_reinstalls_or_joins_twice(lab, crash_at):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    found = start(lab, mac)
    assert crash_once(lambda on_commit: flow(lab, found, on_commit=on_commit), lambda r: r.step == crash_at) == crash_at
    again = start(lab, mac)  # the same command again: resumes, no new checks (the host may be standalone now)
    assert again.id == found.id
    done = flow(lab, again).run()
    assert done.step == states.RI_DONE, done.reason
    assert lab.handler.machine(mac).installs() == 2  # the upgrade, then ONE fresh install
    assert len(lab.store.list_attempts(mac)) == 2 and len(joins(lab)) == 1
    assert {h.product_version for h in lab.driver.hosts()} == {"8.4.0"} and len(lab.driver.hosts()) == 3


def test_resume_needs_the_same_pool_and_media(lab, tmp_path):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    start(lab, mac)
    media.import_media(lab.store, lab.config, "other", synthetic_media_tree(tmp_path / "other"))
    with pytest.raises(ReinstallRefused, match="in progress"):
        start(lab, mac, media="other")


def test_plan_is_read_only_and_lists_what_it_will_do(lab):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[2]
    shut_down(lab, mac)
    events, calls = len(lab.store.events()), len(lab.world.call_log)
    plan = make_reinstall_plan(lab.store, mac, POOL, MEDIA, confirm=name(lab, mac), forget=True,
                               root_password_hash=HASH, connect=connect(lab), host_url="http://127.0.0.1:1/")
    assert plan.ok, plan.problems
    assert plan.forget and plan.old_pool == POOL and plan.network["mode"] == "static"
    assert plan.network["ip"].startswith("10.0.")
    assert len(lab.store.events()) == events
    assert not [c for c in lab.world.call_log[calls:] if c[1] in ("host.destroy", "pool.join")]
    assert "root_password_hash" not in plan.as_dict() and HASH not in str(plan.as_dict())
