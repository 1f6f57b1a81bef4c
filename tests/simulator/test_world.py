"""World-level tests of the simulator: clock, host state machine, boot hook, rolling-upgrade detection."""

from __future__ import annotations

import threading
import time

import pytest

from provisioner.simulator import states as st
from provisioner.simulator.builder import build_pool, new_world, start_simulator
from provisioner.simulator.clock import Clock
from provisioner.simulator.db import Db
from provisioner.simulator.errors import NoBootableSystem, XapiError


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_clock_scales_sim_time():
    c = Clock(speed=100.0, start=1000.0)
    assert c.real(10) == pytest.approx(0.1)
    assert c.sim(0.5) == pytest.approx(50.0)
    before = c.now()
    c.sleep(5.0)
    assert c.now() - before >= 5.0
    stop = threading.Event()
    stop.set()
    assert c.sleep(1000.0, stop) is False
    with pytest.raises(ValueError):
        Clock(speed=0)


@pytest.mark.parametrize("old,new,ok", [
    (st.XAPI_RUNNING, st.SHUTTING_DOWN, True), (st.SHUTTING_DOWN, st.FIRMWARE, True),
    (st.OFF, st.FIRMWARE, True), (st.FIRMWARE, st.BOOT_LOCAL, True), (st.BOOT_LOCAL, st.XAPI_STARTING, True),
    (st.XAPI_STARTING, st.XAPI_RUNNING, True), (st.OFF, st.XAPI_RUNNING, False),
    (st.XAPI_RUNNING, st.FIRMWARE, False), (st.FIRMWARE, st.XAPI_RUNNING, False)])
def test_transition_table(old, new, ok):
    if ok:
        st.check_transition(old, new)
    else:
        with pytest.raises(ValueError):
            st.check_transition(old, new)


def test_db_generations_and_handle_invalid():
    db = Db()
    ref = db.create("host", name_label="a")
    t0 = db.token()
    db.update("host", ref, enabled=False)
    events = db.changes_since(int(t0.split(",")[0]), {"host"}, set())
    assert [(e["operation"], e["ref"]) for e in events] == [("mod", ref)]
    db.delete("host", ref)
    assert db.changes_since(int(t0.split(",")[0]), None, set())[-1]["operation"] == "del"
    with pytest.raises(XapiError) as ei:
        db.get("host", ref)
    assert ei.value.description == ["HANDLE_INVALID", "host", ref]


def test_software_version_changes_together():
    sv, minor = st.software_version({"product_version": "8.4.0", "build_number": "x",
                                     "platform_version": "3.4.0"}, "h")
    assert (sv["product_version"], sv["build_number"], sv["platform_version"], sv["xapi"], minor) == \
        ("8.4.0", "x", "3.4.0", "24.19", "21")
    unknown, _ = st.software_version({"product_version": "9.0.0", "platform_version": "3.5.0"}, "h")
    assert unknown["xapi"] == "25.0" and st.version_key(unknown) > st.version_key(sv)
    # an unknown version on a known platform takes that platform's xapi: it ranks with 8.4.0, not below it
    same, _ = st.software_version({"product_version": "8.4.1", "platform_version": "3.4.0"}, "h")
    assert (same["xapi"], same["product_version"], same["build_number"]) == ("24.19", "8.4.1", "sim")
    assert st.version_key(same) == st.version_key(sv)


@pytest.fixture
def world():
    w = new_world(Clock(2000.0))
    build_pool(w, "p", hosts=2)
    w.start()
    yield w
    w.stop()


def _reboot(world, h):
    db = h.pool.db
    db.update("host", h.ref, enabled=False)
    world.begin_power_off(h, "reboot")


def test_boot_hook_called_with_mac_on_a_sim_thread(world):
    h = world.pools["p"].hosts[1]
    seen = []

    def hook(mac):
        seen.append((mac, threading.current_thread().name))
        return None  # local boot: old version kept
    world.boot_handler = hook
    sv0 = h.pool.db.get("host", h.ref)["software_version"]
    _reboot(world, h)
    wait_for(lambda: h.boot_count == 1 and h.state == st.XAPI_RUNNING)
    assert seen == [(h.mac, f"sim-firmware-{h.name}")]
    assert h.pool.db.get("host", h.ref)["software_version"] == sv0
    assert h.pool.db.get("host", h.ref)["enabled"] is True


def test_boot_hook_raising_leaves_host_down(world):
    h = world.pools["p"].hosts[1]

    def hook(mac):
        raise RuntimeError("tftp timeout")
    world.boot_handler = hook
    _reboot(world, h)
    wait_for(lambda: h.boot_error)
    assert h.state == st.FIRMWARE and "tftp timeout" in h.boot_error
    db = h.pool.db
    assert db.get("host_metrics", db.get("host", h.ref)["metrics"])["live"] is False


def test_no_bootable_system_keeps_the_host_down_until_booted_again(world, caplog):
    """installer_breaks (machine.py): the firmware stops at "no bootable device": in FIRMWARE, not live, no
    xapi start; quietly (it is the simulated outcome, not a simulator fault); boot_again after a repair."""
    h = world.pools["p"].hosts[1]
    broken = [True]

    def hook(mac):
        if broken[0]:
            raise NoBootableSystem(f"{mac}: the disk has no bootable system")
        return None
    world.boot_handler = hook
    _reboot(world, h)
    wait_for(lambda: h.boot_error)
    assert h.state == st.FIRMWARE and "no bootable system" in h.boot_error and h.boot_count == 0
    db = h.pool.db
    assert db.get("host_metrics", db.get("host", h.ref)["metrics"])["live"] is False
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    broken[0] = False
    world.boot_again(h.mac)
    wait_for(lambda: h.state == st.XAPI_RUNNING)


def test_never_returns_then_boot_again(world):
    h = world.pools["p"].hosts[1]
    world.never_returns(h.mac)
    _reboot(world, h)
    wait_for(lambda: h.boot_error == "injected: never returns")
    assert h.state == st.FIRMWARE
    world.never_returns(h.mac, False)
    world.boot_again(h.mac)
    wait_for(lambda: h.state == st.XAPI_RUNNING)


def test_shutdown_off_power_on(world):
    h = world.pools["p"].hosts[1]
    h.pool.db.update("host", h.ref, enabled=False)
    world.begin_power_off(h, "shutdown")
    wait_for(lambda: h.state == st.OFF)
    world.power_on(h.mac)
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 1)


def test_detect_rolling_upgrade(world):
    pool = world.pools["p"]
    member = pool.hosts[1]
    sv, minor = st.software_version("8.4.0", member.name)
    pool.db.update("host", member.ref, software_version=sv)
    world.detect_rolling_upgrade(pool)
    assert pool.db.get("pool", pool.ref)["other_config"] == {"rolling_upgrade_in_progress": "true"}
    pool.db.update("host", pool.master.ref, software_version=sv)
    world.detect_rolling_upgrade(pool)
    assert pool.db.get("pool", pool.ref)["other_config"] == {}


def test_start_simulator_urls_and_stop():
    handle = start_simulator(2, speed=1000.0)
    try:
        assert len(handle.urls) == 2
        assert handle.master_url().startswith("https://127.0.0.1:")
        assert handle.master_url() != handle.url(handle.world.pools["pool0"].hosts[1].mac)
    finally:
        handle.stop()


def test_serve_simulator_announces_and_stops_on_sigterm():
    import os
    import signal

    from provisioner.simulator.builder import serve_simulator
    lines = []

    def announce(line):
        lines.append(line)
        if line.startswith("login:"):
            os.kill(os.getpid(), signal.SIGTERM)  # handled by serve_simulator: it returns cleanly
    assert serve_simulator(hosts=2, speed=1000.0, announce=announce) == 0
    assert lines[0].startswith("pool0-host0 (coordinator, MAC ") and "https://127.0.0.1:" in lines[0] and "certificate SHA-256" in lines[0]
    assert lines[-1].startswith("login: user root")
