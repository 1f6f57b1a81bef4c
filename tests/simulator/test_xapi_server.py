"""Contract tests of the XAPI simulator through the real XenAPI package over a socket (docs/xapi.md,
docs/simulator.md)."""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time

import pytest
import sim_tls
import XenAPI

from provisioner.simulator import states as st
from provisioner.simulator import xapi_server
from provisioner.simulator.builder import add_vm, build_pool, new_world, serve_world, start_simulator
from provisioner.simulator.clock import Clock

SPEED = 2000.0  # reboot delay 10 sim s = 5 ms real


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def failure(fn, *args):
    with pytest.raises(XenAPI.Failure) as ei:
        fn(*args)
    return ei.value.details


@pytest.fixture
def sim():
    handle = start_simulator(3, speed=SPEED)
    yield handle
    handle.stop()


@pytest.fixture
def slow_sim():
    """Reboot delay 1 s and still-booting window 0.5 s real, so a loaded CI machine cannot race them."""
    handle = start_simulator(3, speed=SPEED, reboot_delay=2000.0, still_booting=1000.0,
                             assumed_dead=4000.0)
    yield handle
    handle.stop()


def login(url):
    s = sim_tls.session(url)
    s.xenapi.login_with_password("root", "pw")
    return s


@pytest.fixture
def x(sim):
    s = login(sim.master_url())
    yield s.xenapi


def pool0(sim):
    return sim.world.pools["pool0"]


def refs(sim):
    p = pool0(sim)
    return [h.ref for h in p.hosts]


def user_vms(x, host):
    return [v for v in x.host.get_resident_VMs(host) if not x.VM.get_is_control_domain(v)]


# ---- wire format -----------------------------------------------------------------------------------
def test_wire_format_int64_as_strings_and_opaque_refs(sim, x):
    host = x.pool.get_master(x.pool.get_all()[0])
    assert host.startswith("OpaqueRef:")
    rec = x.host_metrics.get_record(x.host.get_metrics(host))
    assert isinstance(rec["memory_total"], str) and int(rec["memory_total"]) > 2 ** 31
    assert x.VM.get_record(x.host.get_control_domain(host))["is_control_domain"] is True
    assert x.pool.get_record(x.pool.get_all()[0])["default_SR"].startswith("OpaqueRef:")
    assert x.VM.get_by_uuid(x.VM.get_uuid(user_vms(x, host)[0])) == user_vms(x, host)[0]


def test_raw_wire_struct_is_failure_not_fault(sim):
    raw = sim_tls.proxy(sim.master_url())
    assert raw.session.login_with_password("root", "pw")["Status"] == "Success"
    assert raw.host.get_all("OpaqueRef:bogus") == {"Status": "Failure",
                                                   "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:bogus"]}


def test_method_unknown_and_parameter_count(sim, x):
    assert failure(x.host.frobnicate, "a") == ["MESSAGE_METHOD_UNKNOWN", "host.frobnicate"]
    assert failure(x.host.reboot) == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "host.reboot", "2", "1"]


def test_handle_invalid(sim, x):
    assert failure(x.host.get_record, "OpaqueRef:nope") == ["HANDLE_INVALID", "host", "OpaqueRef:nope"]


def test_session_invalid_and_sdk_relogin(sim, x):
    raw = sim_tls.proxy(sim.master_url())
    ref = raw.session.login_with_password("root", "pw")["Value"]
    sim.world.lose_sessions()
    assert raw.pool.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]
    assert len(x.pool.get_all()) == 1  # XenAPI logs in again by itself after SESSION_INVALID


def test_login_on_member_is_host_is_slave(sim):
    member = pool0(sim).hosts[1]
    s = sim_tls.session(sim.url(member.mac))
    assert failure(s.xenapi.login_with_password, "root", "pw") == ["HOST_IS_SLAVE", "127.0.0.1"]


def test_bad_password_when_configured():
    handle = start_simulator(1, speed=SPEED, password="secret")
    try:
        s = sim_tls.session(handle.master_url())
        assert failure(s.xenapi.login_with_password, "root", "wrong") == \
            ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]
        s.xenapi.login_with_password("root", "secret", "2.21", "test")
    finally:
        handle.stop()


# ---- host lifecycle ---------------------------------------------------------------------------------
def test_reboot_enabled_host_is_host_not_disabled(sim, x):
    assert failure(x.host.reboot, refs(sim)[1]) == ["HOST_NOT_DISABLED"]
    assert failure(x.host.shutdown, refs(sim)[1]) == ["HOST_NOT_DISABLED"]


def test_evacuate_moves_vms_and_does_not_disable(sim, x):
    h = refs(sim)[1]
    x.host.disable(h)
    assert x.host.get_vms_which_prevent_evacuation(h) == {}
    x.host.evacuate(h)
    assert user_vms(x, h) == []
    assert x.host.get_enabled(h) is False
    other = refs(sim)[2]
    x.host.enable(h)
    x.host.evacuate(other)
    assert x.host.get_enabled(other) is True  # evacuate never disables (message_forwarding.ml:3668-3676)


def test_pool_of_one_no_hosts_available():
    handle = start_simulator(1, speed=SPEED, vms_per_host=1)
    try:
        x = login(handle.master_url()).xenapi
        h = x.pool.get_master(x.pool.get_all()[0])
        vm = user_vms(x, h)[0]
        assert x.host.get_vms_which_prevent_evacuation(h) == {vm: ["NO_HOSTS_AVAILABLE", vm]}
        assert failure(x.host.evacuate, h) == ["NO_HOSTS_AVAILABLE", vm]
        assert failure(x.host.assert_can_evacuate, h) == ["CANNOT_EVACUATE_HOST", f"NO_HOSTS_AVAILABLE,{vm}"]
    finally:
        handle.stop()


def test_evacuation_memory_checked():
    world = new_world(Clock(SPEED))
    build_pool(world, "p", hosts=2, vms_per_host=3, memory_gib=16, vm_memory_gib=4, dom0_memory_gib=4)
    handle = serve_world(world)
    try:
        x = login(handle.master_url()).xenapi
        h = world.pools["p"].hosts[0].ref
        errors = x.host.get_vms_which_prevent_evacuation(h)
        assert list(errors.values()) == [["HOST_NOT_ENOUGH_FREE_MEMORY", v] for v in errors]
        assert len(errors) == 3  # the other host has 16-4-12 = 0 bytes free
    finally:
        handle.stop()


def test_evacuation_targets_must_not_have_lower_version(sim, x):
    p = pool0(sim)
    master = p.master
    sim.world.boot_handler = lambda mac: {"product_version": "8.4.0", "build_number": "b2",
                                          "platform_version": "3.4.0"}
    x.host.disable(master.ref)
    x.host.evacuate(master.ref)
    x.host.reboot(master.ref)
    wait_for(lambda: master.boot_count == 1 and master.state == st.XAPI_RUNNING)
    x = login(sim.master_url()).xenapi
    wait_for(lambda: x.host.get_enabled(master.ref))
    vm = user_vms(x, p.hosts[2].ref)[0]
    x.VM.pool_migrate(vm, master.ref, {"live": "true"})
    # the upgraded coordinator has only lower-version peers: no target (xapi_host.ml:285-424)
    assert x.host.get_vms_which_prevent_evacuation(master.ref) == {vm: ["NO_HOSTS_AVAILABLE", vm]}
    assert x.host.get_vms_which_prevent_evacuation(p.hosts[2].ref) == {}


@pytest.mark.parametrize("code,extra", [("VM_REQUIRES_SR", 1), ("HOST_NOT_ENOUGH_FREE_MEMORY", 0),
                                        ("NO_HOSTS_AVAILABLE", 0), ("VM_MISSING_PV_DRIVERS", 0),
                                        ("VM_LACKS_FEATURE", 0)])
def test_injected_evacuation_block(sim, x, code, extra):
    h = refs(sim)[1]
    vm = user_vms(x, h)[0]
    sim.world.block_evacuation(vm, code)
    err = x.host.get_vms_which_prevent_evacuation(h)[vm]
    assert err[:2] == [code, vm] and len(err) == 2 + extra
    if code == "VM_REQUIRES_SR":
        assert x.SR.get_shared(err[2]) is False
    x.host.disable(h)
    assert failure(x.host.evacuate, h) == err
    assert len(user_vms(x, h)) == 2  # fails before moving anything


def test_async_evacuate_task_success_and_migration_failure(sim, x):
    src = refs(sim)[2]
    vms = user_vms(x, src)
    sim.world.fail_migration(vms[1])
    x.host.disable(src)
    task = x.Async.host.evacuate(src)
    assert task.startswith("OpaqueRef:")
    wait_for(lambda: x.task.get_status(task) != "pending")
    info = x.task.get_error_info(task)
    assert info[0] == "VM_MIGRATE_FAILED" and info[1] == vms[1] and info[2] == src and info[3] in refs(sim)
    assert user_vms(x, src) == [vms[1]]  # the first VM already moved
    h = refs(sim)[1]
    x.host.disable(h)
    task = x.Async.host.evacuate(h)
    wait_for(lambda: x.task.get_status(task) != "pending")
    assert x.task.get_status(task) == "success" and x.task.get_progress(task) == 1.0
    x.task.destroy(task)
    assert task not in x.task.get_all()


def test_vm_bad_power_state_params(sim, x):
    vm = user_vms(x, refs(sim)[1])[0]
    x.VM.clean_shutdown(vm)
    assert failure(x.VM.clean_shutdown, vm) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    x.VM.start_on(vm, refs(sim)[1], False, False)
    x.VM.suspend(vm)
    assert x.VM.get_power_state(vm) == "Suspended"
    x.VM.resume_on(vm, refs(sim)[2], False, False)
    assert x.VM.get_resident_on(vm) == refs(sim)[2]


def test_start_on_disabled_host(sim, x):
    vm = user_vms(x, refs(sim)[1])[0]
    x.VM.clean_shutdown(vm)
    x.host.disable(refs(sim)[2])
    assert failure(x.VM.start_on, vm, refs(sim)[2], False, False) == ["HOST_DISABLED", refs(sim)[2]]


def test_master_reboot_cycle_with_upgrade_and_rpu(slow_sim):
    sim = slow_sim
    x = login(sim.master_url()).xenapi
    p = pool0(sim)
    m = p.master
    sim.world.boot_handler = lambda mac: {"product_version": "8.4.0", "build_number": "release/nile/77",
                                          "platform_version": "3.4.0"}
    boot0 = x.host.get_other_config(m.ref)["boot_time"]
    x.host.disable(m.ref)
    x.host.evacuate(m.ref)
    x.host.reboot(m.ref)  # returns at once
    assert failure(x.host.enable, m.ref) == ["HOST_DISABLED_UNTIL_REBOOT", m.ref]
    assert failure(x.host.reboot, m.ref) == ["OTHER_OPERATION_IN_PROGRESS", "host", m.ref, "reboot",
                                             "OpaqueRef:NULL"]
    wait_for(lambda: m.boot_count == 1 and m.state == st.XAPI_RUNNING)
    x = login(sim.master_url()).xenapi
    wait_for(lambda: x.host.get_enabled(m.ref))  # auto-enable after boot
    rec = x.host.get_record(m.ref)
    assert rec["other_config"]["boot_time"] != boot0
    sv = rec["software_version"]
    assert (sv["product_version"], sv["build_number"], sv["platform_version"], sv["xapi"]) == \
        ("8.4.0", "release/nile/77", "3.4.0", "24.19")
    assert rec["API_version_minor"] == "21"
    assert x.host_metrics.get_live(rec["metrics"]) is True
    # rolling_upgrade_in_progress: set by the simulator (coordinator start / DB-GC tick), never by the client
    wait_for(lambda: x.pool.get_other_config(x.pool.get_all()[0]).get("rolling_upgrade_in_progress") == "true")
    vm = user_vms(x, p.hosts[2].ref)[0]
    assert failure(x.VM.snapshot, vm, "snap") == ["NOT_SUPPORTED_DURING_UPGRADE"]
    assert "snapshot" not in x.VM.get_allowed_operations(vm)
    x.VM.pool_migrate(vm, m.ref, {"live": "true"})  # upward is fine
    assert failure(x.VM.pool_migrate, vm, p.hosts[2].ref, {"live": "true"}) == ["NOT_SUPPORTED_DURING_UPGRADE"]
    x.VM.clean_shutdown(vm)
    assert failure(x.VM.start_on, vm, p.hosts[2].ref, False, False) == ["NOT_SUPPORTED_DURING_UPGRADE"]
    # members follow; when all match, the tick clears the key
    for h in p.hosts[1:]:
        x.host.disable(h.ref)
    for h in p.hosts[1:]:
        x.host.evacuate(h.ref)  # only the upgraded coordinator is an enabled, not-lower target
        x.host.reboot(h.ref)
    assert all(x.VM.get_resident_on(v) == m.ref for v in x.VM.get_all() if not x.VM.get_is_control_domain(v)
               and x.VM.get_power_state(v) == "Running")
    wait_for(lambda: all(h.boot_count == 1 and x.host.get_enabled(h.ref) for h in p.hosts[1:]))
    wait_for(lambda: "rolling_upgrade_in_progress" not in x.pool.get_other_config(x.pool.get_all()[0]))


def test_host_still_booting_then_auto_enable(slow_sim):
    sim = slow_sim
    x = login(sim.master_url()).xenapi
    m = pool0(sim).hosts[2]
    sim.world.slow_boot(m.mac, 2)
    x.host.disable(m.ref)
    x.host.evacuate(m.ref)
    x.host.reboot(m.ref)
    wait_for(lambda: m.boot_count == 1 and m.emergency is None
             and x.host_metrics.get_live(x.host.get_metrics(m.ref)))
    assert failure(x.host.enable, m.ref) == ["HOST_STILL_BOOTING"]
    assert failure(x.host.enable, m.ref) == ["HOST_STILL_BOOTING"]
    wait_for(lambda: x.host.get_enabled(m.ref))  # enabled flips to true by itself


def test_master_reboot_clears_sessions_and_refuses_connections(sim, x):
    p = pool0(sim)
    master = p.master
    raw = sim_tls.proxy(sim.master_url())
    ref = raw.session.login_with_password("root", "pw")["Value"]
    x.host.disable(master.ref)
    x.host.evacuate(master.ref)
    task = x.Async.host.reboot(master.ref)
    assert task.startswith("OpaqueRef:")
    wait_for(lambda: master.state not in st.SERVING)
    with pytest.raises(ConnectionRefusedError):
        raw.pool.get_all(ref)  # the certificate was read while it was up
    member = sim_tls.session(sim.url(p.hosts[1].mac))
    assert failure(member.xenapi.login_with_password, "root", "pw") == ["HOST_IS_SLAVE", master.address]
    wait_for(lambda: master.boot_count == 1 and master.state == st.XAPI_RUNNING)
    raw = sim_tls.proxy(sim.master_url())
    assert raw.pool.get_all(ref)["ErrorDescription"] == ["SESSION_INVALID", ref]
    assert len(x.pool.get_all()) == 1  # same port, fresh login works
    assert task not in x.task.get_all()


def test_member_newer_than_master_is_blocked_in_emergency(sim, x):
    p = pool0(sim)
    m = p.hosts[1]
    sim.world.boot_handler = lambda mac: {"product_version": "8.4.0", "build_number": "b",
                                          "platform_version": "3.4.0"}
    boot0 = x.host.get_other_config(m.ref)["boot_time"]
    x.host.disable(p.master.ref)
    x.host.evacuate(p.master.ref)
    x.host.disable(m.ref)
    x.host.evacuate(m.ref)
    sim.world.never_returns(p.master.mac)
    x.host.reboot(p.master.ref)
    wait_for(lambda: p.master.state == st.FIRMWARE)
    sim.world.begin_power_off(m, "reboot")  # the member reboots (upgraded) while the coordinator is down
    wait_for(lambda: m.emergency is not None and m.emergency.code == "INTERNAL_ERROR")
    s = sim_tls.session(sim.url(m.mac))
    assert failure(s.xenapi.login_with_password, "root", "pw")[0] == "INTERNAL_ERROR"
    sim.world.never_returns(p.master.mac, False)
    sim.world.boot_handler = None
    sim.world.boot_again(p.master.mac)  # coordinator back, old version
    wait_for(lambda: m.emergency is not None and m.emergency.code == "HOST_XAPI_VERSION_HIGHER_THAN_COORDINATOR")
    assert failure(s.xenapi.login_with_password, "root", "pw") == \
        ["HOST_XAPI_VERSION_HIGHER_THAN_COORDINATOR", "24.19"]
    x2 = login(sim.master_url()).xenapi
    # the restarted coordinator shows it live for 600 s (db_gc.ml:80-112), then not: a member in emergency mode
    # sends no heartbeat (docs/simulator.md "Members reconnect after the coordinator restarts")
    wait_for(lambda: x2.host_metrics.get_live(x2.host.get_metrics(m.ref)) is False)
    assert x2.host.get_other_config(m.ref)["boot_time"] == boot0


def test_shutdown_live_false_at_once_and_power_on(sim, x):
    m = pool0(sim).hosts[2]
    x.host.disable(m.ref)
    x.host.evacuate(m.ref)
    assert failure(x.host.power_on, m.ref) == ["HOST_IS_LIVE", m.ref]
    x.host.shutdown(m.ref)
    wait_for(lambda: m.state == st.OFF)
    assert x.host_metrics.get_live(x.host.get_metrics(m.ref)) is False
    assert failure(x.host.disable, m.ref) == ["HOST_OFFLINE", m.ref]
    x.host.power_on(m.ref)
    wait_for(lambda: x.host.get_enabled(m.ref))


def test_power_on_mode_disabled(sim, x):
    m = pool0(sim).hosts[2]
    x.host.disable(m.ref)
    x.host.evacuate(m.ref)
    x.host.shutdown(m.ref)
    wait_for(lambda: m.state == st.OFF)
    sim.world.pools["pool0"].db.update("host", m.ref, power_on_mode="")
    assert failure(x.host.power_on, m.ref) == ["HOST_POWER_ON_MODE_DISABLED"]


def test_host_destroy_preconditions(sim, x):
    p = pool0(sim)
    m = p.hosts[2]
    assert failure(x.host.destroy, m.ref) == ["HOST_IS_LIVE", m.ref]
    assert failure(x.host.destroy, p.master.ref) == ["HOST_IS_LIVE", p.master.ref]
    sim.world.never_returns(m.mac)
    x.host.disable(m.ref)
    vms = user_vms(x, m.ref)
    for vm in vms:
        sim.world.block_evacuation(vm, "VM_REQUIRES_SR")
    x.host.shutdown(m.ref)
    wait_for(lambda: m.state == st.OFF)
    for vm in vms:  # VMs that cannot be evacuated are shut down by prepare_for_poweroff
        assert x.VM.get_power_state(vm) == "Halted"
    p.db.update("VM", vms[0], power_state="Running", resident_on=m.ref)  # as after a crash
    assert failure(x.host.destroy, m.ref) == ["HOST_HAS_RESIDENT_VMS", m.ref]
    x.VM.power_state_reset(vms[0])
    x.host.destroy(m.ref)
    assert m.ref not in x.host.get_all()


def test_pool_join_preconditions():
    world = new_world(Clock(SPEED))
    build_pool(world, "big", hosts=2, version="8.4.0")
    build_pool(world, "lone", hosts=1, version="8.2.1", vms_per_host=0, address="127.0.0.2")
    handle = serve_world(world)
    try:
        lone = world.pools["lone"].master
        x = login(handle.url(lone.mac)).xenapi
        assert failure(x.pool.join, "127.0.0.1", "root", "pw") == ["POOL_HOSTS_NOT_COMPATIBLE"]
        assert failure(x.pool.join, "10.9.9.9", "root", "pw") == ["POOL_JOINING_HOST_CONNECTION_FAILED"]
    finally:
        handle.stop()


def test_vbd_eject(sim, x):
    vm = user_vms(x, refs(sim)[1])[0]
    vbds = {x.VBD.get_type(b): b for b in x.VM.get_VBDs(vm)}
    cd, disk = vbds["CD"], vbds["Disk"]
    assert failure(x.VBD.eject, disk) == ["VBD_NOT_REMOVABLE_MEDIA", disk]
    assert failure(x.VBD.eject, cd) == ["VBD_IS_EMPTY", cd]
    iso = [v for v in x.VDI.get_all() if x.VDI.get_is_tools_iso(v)][0]
    x.VBD.insert(cd, iso)
    assert x.VBD.get_empty(cd) is False
    task = x.Async.VBD.eject(cd)
    wait_for(lambda: x.task.get_status(task) == "success")
    assert x.VBD.get_empty(cd) is True


def test_pbds_not_replugged(sim, x):
    m = pool0(sim).hosts[1]
    sim.world.keep_pbds_unplugged(m.mac)
    x.host.disable(m.ref)
    x.host.evacuate(m.ref)
    x.host.reboot(m.ref)
    wait_for(lambda: m.boot_count == 1 and x.host.get_enabled(m.ref))
    pbds = x.host.get_PBDs(m.ref)
    assert all(x.PBD.get_currently_attached(p) is False for p in pbds)
    x.PBD.plug(pbds[0])
    assert x.PBD.get_currently_attached(pbds[0]) is True


def test_event_from_token_and_blocking(sim, x):
    ev_from = getattr(x.event, "from")
    first = ev_from(["host", "pool"], "", 1.0)
    assert {e["operation"] for e in first["events"]} == {"add"}
    assert len([e for e in first["events"] if e["class"] == "host"]) == 3
    token = first["token"]
    empty = ev_from(["host"], token, 5.0)  # 5 sim s
    assert empty["events"] == [] and empty["token"] >= token
    h = refs(sim)[1]
    threading.Timer(0.05, lambda: login(sim.master_url()).xenapi.host.disable(h)).start()
    got = ev_from(["host"], token, 600.0)
    assert [(e["class"], e["operation"], e["ref"]) for e in got["events"]] == [("host", "mod", h)]
    assert got["events"][0]["snapshot"]["enabled"] is False
    assert failure(ev_from, ["nonsense"], "", 1.0) == ["EVENT_SUBSCRIPTION_PARSE_FAILURE", "nonsense"]
    assert failure(ev_from, ["host"], "junk", 1.0) == ["EVENT_FROM_TOKEN_PARSE_FAILURE", "junk"]


def test_event_from_one_object(sim, x):
    """xapi_event.ml:65-78: "task/<ref>" subscribes to that one object (class lower-cased, ref kept as given):
    token "" returns it as an add, the next call blocks until that object changes and reports only it."""
    ev_from = getattr(x.event, "from")
    h = refs(sim)[1]
    task = x.Async.host.disable(h)
    assert task.startswith("OpaqueRef:")
    first = ev_from([f"Task/{task}"], "", 1.0)
    assert [(e["class"], e["operation"], e["ref"]) for e in first["events"]] == [("task", "add", task)]
    token, status = first["token"], first["events"][0]["snapshot"]["status"]
    while status == "pending":
        got = ev_from([f"task/{task}"], token, 600.0)
        assert {e["ref"] for e in got["events"]} <= {task}
        token = got["token"]
        status = next((e["snapshot"]["status"] for e in got["events"]), status)
    assert status == "success" and x.host.get_enabled(h) is False
    assert ev_from([f"task/{task.lower()}"], "", 1.0)["events"] == []  # another ref: nothing
    x.host.enable(h)


def test_network_hang(sim):
    master = pool0(sim).master
    sim.world.hang(master.mac)
    s = sim_tls.session(sim.master_url(), timeout=0.3)
    with pytest.raises(TimeoutError):
        s.xenapi.login_with_password("root", "pw")
    sim.world.hang(master.mac, False)


def test_member_calls_are_host_is_slave(sim):
    raw = sim_tls.proxy(sim.url(pool0(sim).hosts[2].mac))
    assert raw.host.get_all("OpaqueRef:x")["ErrorDescription"] == ["HOST_IS_SLAVE", "127.0.0.1"]
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, OSError)):
        sim.world.hang(pool0(sim).hosts[2].mac)
        threading.Timer(0.1, sim.world.stop).start()
        raw.host.get_all("OpaqueRef:x")


def test_logout_and_get_this_host(sim):
    s = login(sim.master_url())
    assert s.xenapi.session.get_this_host(s.handle) == pool0(sim).master.ref
    raw = sim_tls.proxy(sim.master_url())
    handle = s.handle
    s.xenapi.session.logout()
    assert raw.pool.get_all(handle)["ErrorDescription"] == ["SESSION_INVALID", handle]


def test_crash_keeps_live_until_assumed_dead(slow_sim):
    sim = slow_sim
    x = login(sim.master_url()).xenapi
    m = pool0(sim).hosts[2]
    sim.world.crash(m.mac)
    with pytest.raises(ConnectionRefusedError):
        sim_tls.proxy(sim.url(m.mac)).session.login_with_password("root", "pw")
    assert x.host_metrics.get_live(x.host.get_metrics(m.ref)) is True  # no shutting-down heartbeat
    wait_for(lambda: not x.host_metrics.get_live(x.host.get_metrics(m.ref)))  # after 10 sim minutes
    sim.world.power_on(m.mac)
    wait_for(lambda: m.boot_count == 1 and x.host_metrics.get_live(x.host.get_metrics(m.ref)))


def test_reboot_with_resident_vms_evacuates_then_halts(sim, x):
    m = pool0(sim).hosts[1]
    vms = user_vms(x, m.ref)
    x.host.disable(m.ref)
    x.host.reboot(m.ref)  # prepare_for_poweroff evacuates what it can
    wait_for(lambda: m.state not in st.SERVING)
    assert all(x.VM.get_power_state(v) == "Running" and x.VM.get_resident_on(v) != m.ref for v in vms)


def test_distinct_addresses_and_emergency_calls():
    world = new_world(Clock(SPEED))
    build_pool(world, "p", hosts=2, address=["127.0.0.2", "127.0.0.3"])
    handle = serve_world(world)
    try:
        master, member = world.pools["p"].hosts
        assert handle.url(member.mac).startswith("https://127.0.0.3:")
        s = sim_tls.session(handle.url(member.mac))
        assert failure(s.xenapi.login_with_password, "root", "pw") == ["HOST_IS_SLAVE", "127.0.0.2"]
        raw = sim_tls.proxy(handle.url(member.mac))
        local = raw.session.slave_local_login_with_password("root", "pw")["Value"]
        assert raw.host.is_in_emergency_mode(local) == {"Status": "Success", "Value": False}
        assert login(handle.master_url()).xenapi.host.get_address(member.ref) == "127.0.0.3"
    finally:
        handle.stop()


def test_pool_join_success():
    world = new_world(Clock(SPEED))
    build_pool(world, "big", hosts=2, version="8.4.0")
    build_pool(world, "lone", hosts=1, version="8.4.0", vms_per_host=0, address="127.0.0.2")
    handle = serve_world(world)
    try:
        lone = world.pools["lone"].master
        uuid = login(handle.url(lone.mac)).xenapi.host.get_uuid(lone.ref)
        login(handle.url(lone.mac)).xenapi.pool.join("127.0.0.1", "root", "pw")
        x = login(handle.master_url("big")).xenapi
        wait_for(lambda: len(x.host.get_all()) == 3)
        ref = x.host.get_by_uuid(uuid)
        assert x.host.get_address(ref) == "127.0.0.2"
        s = sim_tls.session(handle.url(lone.mac))
        assert failure(s.xenapi.login_with_password, "root", "pw") == ["HOST_IS_SLAVE", "127.0.0.1"]
    finally:
        handle.stop()


# ---- HA, WLB and the HOST_STILL_BOOTING login injection (coordinator PREPARE / FINALIZE, re-login loop) ----------
def test_ha_enable_disable_rules(sim, x):
    pool = x.pool.get_all()[0]
    sr = x.pool.get_default_SR(pool)
    assert failure(x.pool.disable_ha) == ["HA_NOT_ENABLED"]
    x.pool.set_ha_host_failures_to_tolerate(pool, "1")
    x.pool.enable_ha([sr], {})
    rec = x.pool.get_record(pool)
    assert rec["ha_enabled"] is True and rec["ha_host_failures_to_tolerate"] == "1"
    assert [x.VDI.get_SR(v) for v in rec["ha_statefiles"]] == [sr]
    assert failure(x.pool.enable_ha, [sr], {}) == ["HA_IS_ENABLED"]
    x.pool.disable_ha()
    rec = x.pool.get_record(pool)
    assert rec["ha_enabled"] is False and rec["ha_statefiles"] == []


def test_ha_enable_refused_during_rolling_upgrade(sim, x):
    p = pool0(sim)
    p.db.update("host", p.hosts[1].ref, software_version=st.software_version("8.4.0", "h")[0])
    sim.world.detect_rolling_upgrade(p)
    assert failure(x.pool.enable_ha, [], {}) == ["NOT_SUPPORTED_DURING_UPGRADE"]  # xapi_pool.ml:2944-2950


def test_ha_enable_refused_by_versions_before_the_flag_and_with_a_host_offline(sim, x):
    """Real enable_ha looks at the versions, not the flag (helpers.ml:1075-1084), and at every host's liveness
    (xapi_ha.ml:1893-1906): never kinder than XAPI between two DB-GC ticks or with a member down."""
    p = pool0(sim)
    sv = p.db.get("host", p.hosts[1].ref)["software_version"]
    p.db.update("host", p.hosts[1].ref, software_version=st.software_version("8.4.0", "h")[0])
    assert "rolling_upgrade_in_progress" not in p.db.get("pool", p.ref)["other_config"]  # no GC tick yet
    assert failure(x.pool.enable_ha, [], {}) == ["NOT_SUPPORTED_DURING_UPGRADE"]
    p.db.update("host", p.hosts[1].ref, software_version=sv)
    metrics = p.db.get("host", p.hosts[2].ref)["metrics"]
    p.db.update("host_metrics", metrics, live=False)
    assert failure(x.pool.enable_ha, [], {}) == ["HOST_OFFLINE", p.hosts[2].ref]
    p.db.update("host_metrics", metrics, live=True)
    x.pool.enable_ha([], {})  # no SR given: a shared, non-ISO SR takes the statefile
    statefile = p.db.get("pool", p.ref)["ha_statefiles"][0]
    assert p.db.get("SR", p.db.get("VDI", statefile)["SR"])["name_label"] == "NFS storage"


def test_guest_metrics_up_to_date_is_detected_whatever_the_version(sim, x):
    """xapi sets PV_drivers_up_to_date from PV_drivers_detected (xapi_xenops.ml:2418-2427): an old tools version is
    still "up to date"; a VM with no tools has no guest metrics."""
    p = pool0(sim)
    shared = p.db.get("pool", p.ref)["default_SR"]
    old = add_vm(p, "old-tools", p.hosts[0].ref, shared, 1024 ** 3, tools="7.0.0")
    bare = add_vm(p, "bare", p.hosts[0].ref, shared, 1024 ** 3, tools=None)
    gm = x.VM_guest_metrics.get_record(x.VM.get_guest_metrics(old))
    assert gm["PV_drivers_version"]["major"] == "7" and gm["PV_drivers_detected"] and gm["PV_drivers_up_to_date"]
    assert x.VM.get_guest_metrics(bare) == "OpaqueRef:NULL"
    assert "suspend" not in x.VM.get_allowed_operations(bare)  # no PV drivers: VM_MISSING_PV_DRIVERS territory


def test_wlb_enabled_setter(sim, x):
    pool = x.pool.get_all()[0]
    x.pool.set_wlb_enabled(pool, True)
    assert x.pool.get_wlb_enabled(pool) is True
    x.pool.set_wlb_enabled(pool, False)
    assert x.pool.get_wlb_enabled(pool) is False


def test_injected_still_booting_logins(sim):
    sim.world.still_booting_logins(pool0(sim).master.mac, 2)
    for _ in range(2):
        with pytest.raises(XenAPI.Failure) as err:
            login(sim.master_url())
        assert err.value.details == ["HOST_STILL_BOOTING"]
    assert login(sim.master_url()).xenapi.pool.get_all()


def test_listen_backlog_as_xapi():
    """A burst of clients connecting before the host accepts any: all 40 are queued by the kernel (xapi listens
    with 128, stunnel with SOMAXCONN: docs/xapi.md "Connections"). socketserver's default of 5 dropped the SYNs of
    the rest, and each client waited for its 1 s retransmission (seen as 1 s stalls in a wave's evacuation)."""
    server = xapi_server._Server(("127.0.0.1", 0), None, None)  # listening, never accepting
    clients = [socket.socket() for _ in range(40)]
    try:
        for c in clients:
            c.setblocking(False)
            c.connect_ex(server.server_address)
        connected: set[socket.socket] = set()
        end = time.monotonic() + 10  # a bound, not a measure: a queued connection completes at once
        while len(connected) < len(clients) and time.monotonic() < end:
            _, ready, _ = select.select([], [c for c in clients if c not in connected], [], 0.2)
            connected.update(c for c in ready if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        assert len(connected) == len(clients)
    finally:
        for c in clients:
            c.close()
        server.server_close()
