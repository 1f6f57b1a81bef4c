"""The rolling-upgrade runner against the simulator, the real boot service and simulated PXE machines."""

from __future__ import annotations

import re

import pytest
from helpers import FAST, crash_once
from labs import MEDIA, POOL, make_lab, stop_lab

from provisioner import states
from provisioner.coordinator import runner
from provisioner.coordinator.report import run_report, status
from provisioner.coordinator.steps import Timeouts
from provisioner.store import ConflictError




def run(lab, **kw):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, stop_on_failure=kw.pop("stop_on_failure", False))
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=kw.pop("timeouts", FAST), **kw).run()
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
    assert [h["step"] for h in run_report(lab.store, run_id)["hosts"]] == ["done"] * 3
    kinds = {e["kind"] for e in lab.store.events(run_id=run_id)}
    assert {"run.master", "run.members", "run.finalize", "run.done", "step.verify", "xapi.call"} <= kinds
    with pytest.raises(Exception):
        runner.active_run(lab.store, POOL)


def test_master_failure_aborts_without_touching_members(lab):
    lab.handler.inject(lab.mac(0), installer_fails=True)
    run_id, final = run(lab)
    assert final.state == states.RUN_ABORTED and "installer_failed_intact" in final.reason
    hosts = run_report(lab.store, run_id)["hosts"]
    assert hosts[0]["step"] == states.STEP_FAILED and hosts[0]["remedy_class"] == "installer_failed_intact"
    assert "Do NOT restore" in hosts[0]["remedy"]  # back at its old version: never restore a healthy master
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
    hosts = {h["name"]: h for h in run_report(lab.store, run_id)["hosts"]}
    failed = hosts[f"{POOL}-host1"]
    assert failed["step"] == states.STEP_FAILED and "8.2.1" in failed["reason"]
    assert failed["remedy_class"] == "installer_failed_intact" and "provisioner reinstall" not in failed["remedy"]
    assert hosts[f"{POOL}-host2"]["step"] == states.STEP_DONE
    assert versions(lab)[f"{POOL}-host2"] == "8.4.0"
    assert lab.handler.machine(lab.mac(1)).installs() <= 1


def test_member_failure_with_stop_on_failure(lab):
    lab.handler.inject(lab.mac(1), installer_fails=True)
    run_id, final = run(lab, stop_on_failure=True)
    assert final.state == states.RUN_ABORTED
    assert run_report(lab.store, run_id)["hosts"][2]["step"] == states.STEP_PENDING
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
    hosts = run_report(lab.store, started.id)["hosts"]
    assert hosts[0]["step"] == states.STEP_DONE  # the master was finished (already rebooting), not left half-way
    assert lab.reboots(1) == 0 and lab.reboots(2) == 0


@pytest.mark.parametrize("crash_at", [s for s in states.HOST_STEPS if s not in (
    states.STEP_PENDING, states.STEP_FAILED, states.STEP_POWER_ON, states.STEP_CONVERGE)])
# POWER_ON: with --power-cycle only (below); CONVERGE: with --updates only (test_converge.py)
@pytest.mark.parametrize("host", [0, 1])
def test_resume_after_crash_never_reboots_twice(lab, crash_at, host):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    assert crash_once(lambda on_commit: runner.Runner(lab.store, lab.config, started.id, lab.driver,
                                                      clock=lab.world.clock, timeouts=FAST, on_commit=on_commit),
                      lambda rh: rh.mac == lab.mac(host) and rh.step == crash_at) == crash_at
    assert runner.active_run(lab.store, POOL).id == started.id
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=FAST).run()
    assert final.state == states.RUN_DONE, final.reason
    assert set(versions(lab).values()) == {"8.4.0"}
    for i in range(3):
        assert lab.reboots(i) == 1, i
        assert lab.handler.machine(lab.mac(i)).installs() == 1, i


def test_member_that_never_returns_times_out_and_the_run_stops(lab):
    """Stuck in its firmware (its installer never started): the timer fails it, and as it is down the run
    does not start the next member (test_coordinator_installing.py has the installer that never reports)."""
    lab.world.never_returns(lab.mac(1))
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=Timeouts(down=900, up=3600, enable=1800, poll=5)).run()
    assert final.state == states.RUN_ABORTED
    hosts = run_report(lab.store, started.id)["hosts"]
    assert hosts[1]["step"] == states.STEP_FAILED
    # failed at the first poll past the 60-min timer, never before it; how far past (simulated minutes that pass
    # while a loaded machine starves the runner's thread: Clock is wall time x speed) is no property of the runner
    after = re.search(r"not done after (\d+) min", hosts[1]["reason"])
    assert after and int(after.group(1)) >= 60, hosts[1]["reason"]
    assert hosts[2]["step"] == states.STEP_PENDING and lab.reboots(1) == 1 and lab.reboots(2) == 0


def test_four_hosts_and_resume_helper(tmp_path):
    lab = make_lab(tmp_path, hosts=4)
    try:
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
        final = runner.resume(lab.store, lab.config, POOL, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
        assert final.id == started.id and final.state == states.RUN_DONE
        assert set(versions(lab).values()) == {"8.4.0"}
        reboots = [e["mac"] for e in lab.store.events(run_id=started.id, kind="step.reboot")]
        assert reboots == [lab.mac(i) for i in range(4)]
        assert [r["state"] for r in status(lab.store, POOL)] == [states.RUN_DONE]
    finally:
        stop_lab(lab)


def assert_master_first_and_installed_once(lab, run_id, hosts=3):
    reboots = [e["mac"] for e in lab.store.events(run_id=run_id, kind="step.reboot")]
    assert reboots and reboots[0] == lab.mac(0) and len(set(reboots)) == len(reboots)
    for i in range(hosts):
        assert lab.handler.machine(lab.mac(i)).installs() <= 1 and lab.reboots(i) <= 1


def placement(lab) -> dict[str, tuple[str, str]]:
    """VM name -> (power state, host name) as the simulator has it."""
    pool = lab.world.pools[POOL]
    names = {h.ref: h.name for h in pool.hosts}
    return {rec["name_label"]: (rec["power_state"], names.get(rec["resident_on"], "-"))
            for rec in (pool.db.get("VM", r) for r in pool.db.all("VM")) if not rec["is_control_domain"]}


def test_vms_keep_running_and_each_host_is_evacuated_before_its_reboot(lab):
    before = placement(lab)
    run_id, final = run(lab)
    assert final.state == states.RUN_DONE, final.reason
    after = placement(lab)
    assert {name: state for name, (state, _) in after.items()} == {name: state for name, (state, _) in before.items()}
    rows = {v["name"]: v for h in run_report(lab.store, run_id)["hosts"] for v in h["vms"]}
    assert set(rows) == set(before) and {(v["action"], v["done"]) for v in rows.values()} == {
        ("migrate", "migrated away")}
    assert all(v["afterwards"] is None for v in rows.values())  # not asked to migrate back
    assert not [c for c in lab.world.call_log if c[1] in ("Async.VM.suspend", "Async.VM.clean_shutdown")]


def test_eight_hosts_migrated_back_where_they_started(tmp_path):
    lab = make_lab(tmp_path, hosts=8)
    try:
        before = placement(lab)
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, migrate_back=True)
        final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                              timeouts=FAST).run()
        assert final.state == states.RUN_DONE, final.reason
        assert placement(lab) == before
        assert set(versions(lab).values()) == {"8.4.0"}
        reboots = [e["mac"] for e in lab.store.events(run_id=started.id, kind="step.reboot")]
        assert reboots == [lab.mac(i) for i in range(8)]  # master first, each host once
        for i in range(8):
            assert lab.handler.machine(lab.mac(i)).installs() == 1 and lab.reboots(i) == 1
        rows = [v for h in run_report(lab.store, started.id)["hosts"] for v in h["vms"]]
        assert len(rows) == 8 and {v["afterwards"] for v in rows} == {"migrated back"}
        cleared = lab.store.events(run_id=started.id, kind="finalize.rpu_cleared")
        done = lab.store.events(run_id=started.id, kind="run.done")
        assert cleared and done and cleared[0]["id"] < done[0]["id"]
        assert "rolling_upgrade_in_progress" not in lab.world.pools[POOL].db.get(
            "pool", lab.world.pools[POOL].ref)["other_config"]
    finally:
        stop_lab(lab)


def test_unplugged_storage_is_plugged_before_enable(lab):
    for i in (0, 2):
        lab.world.keep_pbds_unplugged(lab.mac(i))
    run_id, final = run(lab)
    assert final.state == states.RUN_DONE, final.reason
    db = lab.world.pools[POOL].db
    assert all(db.get("PBD", p)["currently_attached"] for p in db.all("PBD"))
    plugged = [e["details"] for e in lab.store.events(run_id=run_id, kind="xapi.call")
               if e["details"]["method"] == "PBD.plug"]
    assert {(p["on"], p["ok"]) for p in plugged} == {(f"{POOL}-host0", True), (f"{POOL}-host2", True)}
    assert len(plugged) == 6  # local, shared and tools SR on each
    enabled = [e["mac"] for e in lab.store.events(run_id=run_id, kind="step.enable")]
    storage = [e["mac"] for e in lab.store.events(run_id=run_id, kind="step.storage")]
    assert storage == enabled == [lab.mac(i) for i in range(3)]
    assert_master_first_and_installed_once(lab, run_id)


def test_master_relogin_tolerates_host_still_booting(lab):
    lines = []

    def on_commit(rh):
        if rh.role == "master" and rh.step == states.STEP_WAIT_UP:
            lab.world.still_booting_logins(lab.mac(0), 3)
    run_id, final = run(lab, on_commit=on_commit, say=lines.append)
    assert final.state == states.RUN_DONE, final.reason
    assert any("master re-login: starting (HOST_STILL_BOOTING)" in line for line in lines)
    assert any("master re-login: not answering" in line for line in lines)
    assert lab.world.host(lab.mac(0)).login_refusals == 0 and lab.store.events(run_id=run_id, kind="master.relogin")
    assert_master_first_and_installed_once(lab, run_id)


def test_migration_failure_fails_that_member_only(lab):
    db = lab.world.pools[POOL].db
    vm = next(r for r in db.find("VM", resident_on=lab.world.pools[POOL].hosts[1].ref)
              if not db.get("VM", r)["is_control_domain"])
    lab.world.fail_migration(vm)
    run_id, final = run(lab)
    assert final.state == states.RUN_DONE_WITH_FAILURES
    hosts = run_report(lab.store, run_id)["hosts"]
    assert hosts[1]["step"] == states.STEP_FAILED and "VM_MIGRATE_FAILED" in hosts[1]["reason"]
    assert "re-enabled" in hosts[1]["reason"] and [h["step"] for h in hosts] == ["done", "failed", "done"]
    assert lab.reboots(1) == 0 and lab.reboots(0) == lab.reboots(2) == 1
    assert_master_first_and_installed_once(lab, run_id)
    assert next(h for h in lab.driver.hosts() if h.mac == lab.mac(1)).enabled
    assert db.get("VM", vm)["power_state"] == "Running"


def test_member_upgraded_but_never_enabled_is_not_sent_to_reinstall(lab):
    lab.world.slow_boot(lab.mac(1), 400)  # host.enable says HOST_STILL_BOOTING for 400 x 30 sim s
    run_id, final = run(lab, timeouts=Timeouts(down=900, up=4 * 3600, enable=120, poll=5, storage=30))
    assert final.state == states.RUN_DONE_WITH_FAILURES
    hosts = run_report(lab.store, run_id)["hosts"]
    assert hosts[1]["step"] == states.STEP_FAILED and hosts[1]["reason"].startswith("enable: ")
    assert "at the target version" in hosts[1]["remedy"] and "reinstall" not in hosts[1]["remedy"]
    assert hosts[1]["remedy_class"] == "at_target"
    assert versions(lab)[f"{POOL}-host1"] == "8.4.0" and hosts[2]["step"] == states.STEP_DONE
    assert run_report(lab.store, run_id)["rpu_cleared_after"] is not None  # every host at the target
    assert_master_first_and_installed_once(lab, run_id)


def power_calls(lab, i: int, method: str) -> int:
    return sum(1 for e in lab.store.events(kind="xapi.call") if e["details"]["method"] == method
               and e["details"]["ok"] and e["mac"] == lab.mac(i))


def test_power_cycle_reboots_the_master_and_powers_the_members_off_and_on(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, power_cycle=True)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_DONE, final.reason
    assert set(versions(lab).values()) == {"8.4.0"}
    assert lab.reboots(0) == 1 and power_calls(lab, 0, "host.shutdown") == 0
    for i in (1, 2):
        assert lab.reboots(i) == 0
        assert power_calls(lab, i, "host.shutdown") == 1 and power_calls(lab, i, "host.power_on") == 1
    for i in range(3):
        assert lab.handler.machine(lab.mac(i)).installs() == 1
    walked = [e["mac"] for e in lab.store.events(run_id=started.id) if e["kind"] == "step.power_on"]
    assert sorted(walked) == sorted([lab.mac(1), lab.mac(2)])


@pytest.mark.parametrize("crash_at", [states.STEP_REBOOT, states.STEP_POWER_ON, states.STEP_WAIT_DOWN])
def test_power_cycle_resumed_after_a_crash_powers_each_member_on_once(lab, crash_at):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, power_cycle=True)
    assert crash_once(lambda on_commit: runner.Runner(lab.store, lab.config, started.id, lab.driver,
                                                      clock=lab.world.clock, timeouts=FAST, on_commit=on_commit),
                      lambda rh: rh.mac == lab.mac(1) and rh.step == crash_at) == crash_at
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=FAST).run()
    assert final.state == states.RUN_DONE, final.reason
    for i in (1, 2):
        assert power_calls(lab, i, "host.shutdown") == 1 and power_calls(lab, i, "host.power_on") == 1, i
    for i in range(3):
        assert lab.handler.machine(lab.mac(i)).installs() == 1, i
