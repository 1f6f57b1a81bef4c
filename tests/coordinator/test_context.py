"""The shared step helpers (coordinator.context) against the XAPI simulator: logged calls, waits with timeouts."""

from __future__ import annotations

import dataclasses

import pytest

from provisioner.coordinator import context
from provisioner.simulator.builder import start_simulator
from provisioner.store import RunHost
from provisioner.xapi import Trust, XapiError, XenApiDriver


@pytest.fixture
def ctx(store):
    sim = start_simulator(2, speed=600.0)
    driver = XenApiDriver(sim.master_url(), "root", "pw", timeout=2, trust=Trust(fingerprint=sim.master_fingerprint()))
    yield context.Context(store, None, driver, None, "run-1", sim.world.clock, context.Timeouts(poll=5)), sim
    driver.close()
    sim.stop()


def run_host(ctx, i):
    h = ctx.driver.hosts()[i]
    return RunHost("run-1", h.mac, i, h.name, h.uuid, "member", "check", None, None, None, None, ""), h


def test_xapi_call_logs_each_outcome(ctx):
    c, sim = ctx
    rh, info = run_host(c, 1)
    context.xapi_call(c, rh, "host.disable", c.driver.disable, info.ref)
    with pytest.raises(XapiError) as err:
        context.xapi_call(c, rh, "host.reboot", c.driver.enable, "OpaqueRef:nope", vm="x")
    assert context.error_code(err.value) == "HANDLE_INVALID" and context.error_code(ValueError("x")) == ""
    events = [e["details"] for e in c.store.events(run_id="run-1", kind="xapi.call")]
    assert events[0] == {"host": info.name, "method": "host.disable", "ok": True}
    assert events[1]["ok"] is False and "HANDLE_INVALID" in events[1]["error"] and events[1]["vm"] == "x"


def test_wait_for_reports_progress_and_times_out(ctx):
    c, sim = ctx
    rh, info = run_host(c, 1)
    lines = []
    c.say = lines.append
    assert context.wait_for(c, rh, "live", 60, lambda i: i is not None and i.live).uuid == info.uuid
    with pytest.raises(context.StepFailed, match="disabled: not done after 1 min .*enabled=True"):
        context.wait_for(c, rh, "disabled", 60, lambda i: i is not None and not i.enabled)
    assert len(lines) == 1 and lines[0].startswith(f"{info.name}: disabled: live=True enabled=True")


def test_find_is_none_while_the_master_does_not_answer(ctx):
    c, sim = ctx
    rh, info = run_host(c, 1)
    assert context.find(c, rh.uuid) == info
    sim.world.hang(sim.world.pools["pool0"].master.mac)
    assert context.find(c, rh.uuid) is None
    with pytest.raises(context.StepFailed, match="master does not answer"):
        context.live_info(c, rh)
    sim.world.hang(sim.world.pools["pool0"].master.mac, on=False)


def test_every_step_event_is_also_a_log_line_naming_mac_attempt_and_run(ctx, caplog):
    c, sim = ctx
    rh, info = run_host(c, 1)
    rh = dataclasses.replace(rh, attempt_id=7)
    with caplog.at_level("INFO", logger="provisioner.coordinator.context"):
        context.xapi_call(c, rh, "host.disable", c.driver.disable, info.ref)
        with pytest.raises(XapiError):
            context.xapi_call(c, rh, "host.reboot", c.driver.enable, "OpaqueRef:nope")
    lines = [r for r in caplog.records if r.name == "provisioner.coordinator.context"]
    assert [(r.levelname, r.mac, r.attempt, r.run) for r in lines] == [
        ("INFO", rh.mac, 7, "run-1"), ("WARNING", rh.mac, 7, "run-1")]
    assert "host.disable" in lines[0].getMessage() and "HANDLE_INVALID" in lines[1].getMessage()
