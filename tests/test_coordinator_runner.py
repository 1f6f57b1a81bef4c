"""The rolling-upgrade runner against the simulator, the real boot service and simulated PXE machines."""

from __future__ import annotations

import threading

import pytest
from test_coordinator_plan import MEDIA, POOL, make_lab, stop_lab

from provisioner import states
from provisioner.coordinator import runner
from provisioner.coordinator.steps import Timeouts
from provisioner.store import ConflictError

FAST = Timeouts(down=900, up=4 * 3600, enable=1800, poll=5)


class Crash(Exception):
    """Stands for kill -9 at a step boundary: nothing after the commit runs."""


@pytest.fixture
def lab(tmp_path):
    made = make_lab(tmp_path, hosts=3)
    yield made
    stop_lab(made)


def run(lab, **kw):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, stop_on_failure=kw.pop("stop_on_failure", False))
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          **kw).run()
    return started.id, final


def versions(lab):
    return {h.name: h.product_version for h in lab.driver.hosts()}


def test_happy_path_master_first_each_host_installed_once(lab):
    run_id, final = run(lab)
    assert final.state == states.RUN_DONE
    assert set(versions(lab).values()) == {"8.4.0"}
    assert all(h.enabled for h in lab.driver.hosts())
    for i in range(3):
        assert lab.handler.machine(lab.mac(i)).installs() == 1 and lab.reboots(i) == 1
    steps = [e for e in lab.store.events(run_id=run_id) if e["kind"] == "step.reboot"]
    assert steps[0]["mac"] == lab.mac(0)  # master first
    assert [h["step"] for h in runner.report(lab.store, run_id)["hosts"]] == ["done"] * 3
    kinds = {e["kind"] for e in lab.store.events(run_id=run_id)}
    assert {"run.master", "run.members", "run.finalize", "run.done", "step.verify", "xapi.call"} <= kinds
    with pytest.raises(Exception):
        runner.active_run(lab.store, POOL)


def test_master_failure_aborts_without_touching_members(lab):
    lab.handler.inject(lab.mac(0), installer_fails=True)
    run_id, final = run(lab)
    assert final.state == states.RUN_ABORTED and "restore the master" in final.reason
    hosts = runner.report(lab.store, run_id)["hosts"]
    assert hosts[0]["step"] == states.STEP_FAILED and "restore the master" in hosts[0]["remedy"]
    assert [h["step"] for h in hosts[1:]] == [states.STEP_PENDING] * 2
    for i in (1, 2):
        assert lab.reboots(i) == 0
    touched = [c for c in lab.world.call_log if c[1] in ("host.disable", "host.evacuate", "host.reboot")
               and any(lab.world.pools[POOL].hosts[i].ref in c[2] for i in (1, 2))]
    assert touched == []


def test_member_failure_marks_host_failed_and_run_goes_on(lab):
    lab.handler.inject(lab.mac(1), installer_fails=True)
    run_id, final = run(lab)
    assert final.state == states.RUN_DONE_WITH_FAILURES
    hosts = {h["name"]: h for h in runner.report(lab.store, run_id)["hosts"]}
    failed = hosts[f"{POOL}-host1"]
    assert failed["step"] == states.STEP_FAILED and "8.2.1" in failed["reason"] and "pool-join" in failed["remedy"]
    assert hosts[f"{POOL}-host2"]["step"] == states.STEP_DONE
    assert versions(lab)[f"{POOL}-host2"] == "8.4.0"
    assert lab.handler.machine(lab.mac(1)).installs() <= 1


def test_member_failure_with_stop_on_failure(lab):
    lab.handler.inject(lab.mac(1), installer_fails=True)
    run_id, final = run(lab, stop_on_failure=True)
    assert final.state == states.RUN_ABORTED
    assert runner.report(lab.store, run_id)["hosts"][2]["step"] == states.STEP_PENDING
    assert lab.reboots(2) == 0


def test_precheck_failure_blocks_run(lab):
    lab.store.remove_host(lab.mac(2))
    run_id, final = run(lab)
    assert final.state == states.RUN_BLOCKED and "not registered" in final.reason
    assert not [c for c in lab.world.call_log if c[1] in ("host.disable", "host.reboot")]


def test_second_start_refused_and_abort_before_destructive_step(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    with pytest.raises(ConflictError):
        runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    runner.request_abort(lab.store, POOL)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_ABORTED
    assert not [c for c in lab.world.call_log if c[1] in ("host.disable", "host.reboot")]


def test_abort_during_master_stops_before_members(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)

    def on_commit(rh):
        if rh.step == states.STEP_WAIT_UP:
            lab.store.request_abort(started.id)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          on_commit=on_commit).run()
    assert final.state == states.RUN_ABORTED
    hosts = runner.report(lab.store, started.id)["hosts"]
    assert hosts[0]["step"] == states.STEP_DONE  # the master was finished (already rebooting), not left half-way
    assert lab.reboots(1) == 0 and lab.reboots(2) == 0


@pytest.mark.parametrize("crash_at", [states.STEP_REBOOT, states.STEP_INSTALLING, states.STEP_ARM,
                                      states.STEP_ENABLE])
@pytest.mark.parametrize("host", [0, 1])
def test_resume_after_crash_never_reboots_twice(lab, crash_at, host):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    crashed = []

    def on_commit(rh):
        if not crashed and rh.mac == lab.mac(host) and rh.step == crash_at:
            crashed.append(rh.step)
            raise Crash(rh.step)
    errors = []

    def first():
        try:
            runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          on_commit=on_commit).run()
        except Crash as exc:
            errors.append(exc)
    thread = threading.Thread(target=first)
    thread.start()
    thread.join(120)
    assert errors and crashed == [crash_at]
    assert runner.active_run(lab.store, POOL).id == started.id
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=FAST).run()
    assert final.state == states.RUN_DONE, final.reason
    assert set(versions(lab).values()) == {"8.4.0"}
    for i in range(3):
        assert lab.reboots(i) == 1, i
        assert lab.handler.machine(lab.mac(i)).installs() == 1, i


def test_member_that_never_returns_times_out_and_run_goes_on(lab):
    lab.handler.inject(lab.mac(1), never_returns=True)
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=Timeouts(down=900, up=3600, enable=1800, poll=5)).run()
    assert final.state == states.RUN_DONE_WITH_FAILURES
    hosts = runner.report(lab.store, started.id)["hosts"]
    assert hosts[1]["step"] == states.STEP_FAILED and "not done after 60 min" in hosts[1]["reason"]
    assert hosts[2]["step"] == states.STEP_DONE and lab.reboots(1) == 1


def test_four_hosts_and_resume_helper(tmp_path):
    lab = make_lab(tmp_path, hosts=4)
    try:
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
        final = runner.resume(lab.store, lab.config, POOL, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
        assert final.id == started.id and final.state == states.RUN_DONE
        assert set(versions(lab).values()) == {"8.4.0"}
        reboots = [e["mac"] for e in lab.store.events(run_id=started.id, kind="step.reboot")]
        assert reboots == [lab.mac(i) for i in range(4)]
        assert [r["state"] for r in runner.status(lab.store, POOL)] == [states.RUN_DONE]
    finally:
        stop_lab(lab)
