"""Lab reinstall-and-join (coordinator/reinstall.py + reinstall_plan.py) against the simulator, the real boot
service and simulated PXE machines: the failed-member remedy end to end, every refusal, and crash safety."""

from __future__ import annotations


import pytest
from helpers import crash_once
from labs import MEDIA, PASSWORD, POOL, host_info, macs, shut_down, upgrade

from provisioner import cryptpw, media, states
from provisioner.coordinator import pools, reinstall
from provisioner.coordinator.context import ReinstallTimeouts
from provisioner.coordinator.plan import make_plan
from provisioner.coordinator.reinstall_plan import ReinstallRefused, make_reinstall_plan
from provisioner.demo import synthetic_media_tree
from provisioner.model import ValidationError
from provisioner.simulator.builder import add_local_vm
from provisioner.simulator.fresh import new_host_uuid
from provisioner.simulator.join import apply_updates

FLOW_FAST = ReinstallTimeouts(install=4 * 3600, xapi=1800, joined=1800, poll=5)
HASH = cryptpw.hash_password(PASSWORD)
UPDATE = ("3f2a7c1e-0000-4000-8000-000000000001", "XS84E001")



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
    assert [c.code for c in plan.checks if c.blocking] == ["NOTHING_TO_DO"], plan.problems
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


def _master_platform(pool, value):
    with pool.db.lock:
        sv = dict(pool.db.get("host", pool.master.ref)["software_version"], platform_version=value)
        pool.db.update("host", pool.master.ref, software_version=sv)


def _editions(pool, value):
    with pool.db.lock:
        for h in pool.hosts:
            if pool.db.exists("host", h.ref):
                pool.db.update("host", h.ref, edition=value)


# (what changes in the pool after the checks passed, the refusal, the operator's fix on the new standalone host)
JOIN_REFUSALS = {
    "version": (lambda lab, pool: _master_platform(pool, "3.2.1"), "POOL_HOSTS_NOT_COMPATIBLE",
                lambda lab, pool, new: _master_platform(pool, "3.4.0")),  # the master is upgraded again
    "updates": (lambda lab, pool: apply_updates(pool, pool.master.ref, [UPDATE]), "Updates on local host",
                lambda lab, pool, new: apply_updates(new.pool, new.ref, [UPDATE])),
    "edition": (lambda lab, pool: _editions(pool, "xenserver-premium-per-socket"), "LICENSE_HOST_POOL_MISMATCH",
                lambda lab, pool, new: _editions(new.pool, "xenserver-premium-per-socket")),
}


@pytest.mark.parametrize("kind", sorted(JOIN_REFUSALS))
def test_refused_join_waits_for_the_operator_and_the_same_command_retries_it(lab, kind):
    """The checks passed, then the pool changed before JOIN: pool.join refuses the new host, the flow WAITS at
    join_refused (not failed) with the new host standalone; the operator fixes it and runs the command again."""
    change, words, fix = JOIN_REFUSALS[kind]
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    found = start(lab, mac)
    pool = lab.world.pools[POOL]

    def on_commit(r):
        if r.step == states.RI_WAIT_XAPI:
            change(lab, pool)
    lines: list[str] = []
    waiting = flow(lab, found, on_commit=on_commit, lines=lines).run()
    assert waiting.step == states.RI_JOIN_REFUSED and words in waiting.reason, waiting.reason
    assert "run the same reinstall command again" in waiting.reason and waiting.new_uuid
    assert any("WAITING at join_refused" in line for line in lines)
    new = lab.world.host(mac)
    assert new.is_master and len(new.pool.hosts) == 1  # a standalone new host, not joined
    assert lab.store.active_reinstall(mac).id == found.id  # still in progress: nothing else may start on it

    fix(lab, pool, new)
    again = start(lab, mac)  # the same command again: the same flow, no new checks
    assert again.id == found.id and again.step == states.RI_JOIN_REFUSED
    done = flow(lab, again).run()
    assert done.step == states.RI_DONE, done.reason
    assert host_info(lab, mac).uuid == waiting.new_uuid and len(lab.driver.hosts()) == 3
    assert lab.handler.machine(mac).installs() == 2  # the upgrade, then ONE fresh install: only JOIN was retried
    assert [e["details"]["to"] for e in lab.store.events(mac=mac) if e["kind"].startswith("reinstall.")
            and "to" in e["details"]][-5:] == ["join_refused", "converge", "join", "wait_joined", "done"]
    assert done.root_password_hash is None


@pytest.mark.parametrize("crash_at", [states.RI_ARM, states.RI_INSTALLING, states.RI_WAIT_XAPI, states.RI_CONVERGE,
                                      states.RI_JOIN, states.RI_WAIT_JOINED])
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


def destroys_and_fresh_arms(lab, mac):
    """host.destroy calls, and fresh-install attempts (those without a run)."""
    return ([c for c in lab.world.call_log if c[1] == "host.destroy"],
            [a for a in lab.store.list_attempts(mac) if a.run_id is None])


def test_vm_disks_on_the_local_sr_are_refused_and_listed_then_lost_only_by_name(lab):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    pool, ref = lab.world.pools[POOL], lab.world.host(mac).ref
    add_local_vm(pool, "web-halted", ref, disk_gib=8)
    add_local_vm(pool, "db-suspended", ref, power_state="Suspended", snapshot=True)
    shut_down(lab, mac)
    with pytest.raises(ReinstallRefused, match="--accept-data-loss") as err:
        start(lab, mac)
    lost = {(d["vm"], d["power_state"], d["role"], d["snapshot_of"]) for d in err.value.data_loss}
    assert lost == {("web-halted", "Halted", "disk", ""), ("db-suspended", "Suspended", "disk", ""),
                    ("db-suspended", "Suspended", "suspend image", ""),
                    ("db-suspended before upgrade", "Halted", "snapshot disk", "db-suspended")}
    assert all(d["sr"] == "Local storage" and d["size"] > 0 for d in err.value.data_loss)
    assert "web-halted" in str(err.value) and "db-suspended" in str(err.value)
    assert destroys_and_fresh_arms(lab, mac) == ([], [])  # nothing forgotten, nothing armed
    refused = lab.store.events(kind="reinstall.refused")[-1]["details"]
    assert len(refused["data_loss"]) == 4

    found = start(lab, mac, accept_data_loss=True)
    journaled = lab.store.events(mac=mac, kind="reinstall.data_lost")
    assert journaled and journaled[0]["details"]["reinstall"] == found.id and journaled[0]["details"]["accepted"]
    assert {d["vdi"] for d in journaled[0]["details"]["disks"]} == {
        "web-halted disk", "db-suspended disk", "Suspend image for db-suspended", "db-suspended disk (snapshot)"}
    done = flow(lab, found).run()
    assert done.step == states.RI_DONE, done.reason
    report = lab.store.events(mac=mac, kind="host.reinstalled")[-1]["details"]
    assert {d["vm"] for d in report["data_lost"]} == {"web-halted", "db-suspended", "db-suspended before upgrade"}
    # host.destroy left the local SR's VDI records pointing at nothing (xapi_host.ml destroy), as the plan said
    with pool.db.lock:
        assert pool.db.find("VDI", name_label="web-halted disk")


def _vlan(pool):
    pif = next(p for p in pool.db.find("PIF", host=pool.master.ref) if pool.db.get("PIF", p)["management"])
    pool.db.update("PIF", pif, VLAN="20")


def _backend(pool):
    with pool.db.lock:
        sv = dict(pool.db.get("host", pool.master.ref)["software_version"], network_backend="bridge")
        pool.db.update("host", pool.master.ref, software_version=sv)


# mismatch -> (change to the pool's master, words of the refusal, fixable on the new host before it joins)
MISMATCHES = {
    "updates": (lambda pool: apply_updates(pool, pool.master.ref, [UPDATE]),
                "the pool has updates this ISO lacks: XS84E001", True),
    "edition": (lambda pool: _editions(pool, "xenserver-premium-per-socket"), "LICENSE_HOST_POOL_MISMATCH", True),
    "version": (lambda pool: _master_platform(pool, "3.4.1"), "POOL_HOSTS_NOT_COMPATIBLE", False),
    "vlan": (_vlan, "POOL_JOINING_HOST_MANAGEMENT_VLAN_DOES_NOT_MATCH [-1, 20]", False),
    "backend": (_backend, "Network backends differ", True),
}


@pytest.mark.parametrize("kind", sorted(MISMATCHES))
def test_a_join_mismatch_is_refused_before_any_wipe(lab, kind):
    change, words, fixable = MISMATCHES[kind]
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    change(lab.world.pools[POOL])
    with pytest.raises(ReinstallRefused) as err:
        start(lab, mac)
    assert words in str(err.value)
    assert ("--fix-before-join" in str(err.value)) == fixable
    assert destroys_and_fresh_arms(lab, mac) == ([], [])  # refused BEFORE host.destroy and before arming
    plan = make_reinstall_plan(lab.store, mac, POOL, MEDIA, confirm=name(lab, mac), forget=True,
                               root_password_hash=HASH, connect=connect(lab), host_url=lab.sim.url(mac),
                               fix_before_join=True)
    assert plan.join["media"]["updates"] == [] and plan.join["master"]["product_version"] == "8.4.0"
    assert plan.ok == fixable, plan.problems  # the fixable ones go on, to wait at join_refused


def test_a_host_that_answers_on_its_management_address_is_refused(lab):
    """XAPI says dead (a partition, or the pool gave up on it), but the machine answers: it is running."""
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    db, ref = lab.world.pools[POOL].db, lab.world.host(mac).ref
    lab.driver.disable(ref)
    lab.driver.evacuate(ref)  # its VMs elsewhere: only the answering stands in the way
    with db.lock:
        db.update("host_metrics", db.get("host", ref)["metrics"], live=False)
    url = lab.sim.url(mac)  # its own XAPI endpoint, still listening
    with pytest.raises(ReinstallRefused) as err:
        start(lab, mac)
    where = url.split("//")[1].rstrip("/")
    assert f"the host answers on {where}: it is running; shut it down first" in str(err.value)
    assert destroys_and_fresh_arms(lab, mac) == ([], [])
    closed = make_reinstall_plan(lab.store, mac, POOL, MEDIA, confirm=name(lab, mac), forget=True,
                                 root_password_hash=HASH, connect=connect(lab), host_url="http://127.0.0.1:1/")
    assert closed.ok, closed.problems  # a closed port: nothing answers there


def test_a_host_no_registered_pool_knows_has_nothing_to_list(lab):
    mac = "52:54:00:ee:00:09"
    from provisioner.model import Host
    lab.store.add_host(Host.from_fields({"mac": mac, "name": "lab-new", "pool": POOL, "disk": "/dev/sda",
                                         "ip": "127.0.0.1"}))
    plan = make_reinstall_plan(lab.store, mac, POOL, MEDIA, confirm="lab-new", forget=False, root_password_hash=HASH,
                               connect=connect(lab), host_url="http://127.0.0.1:1/")
    assert plan.data_loss == [] and any("no registered pool knows this host" in n for n in plan.notes)
