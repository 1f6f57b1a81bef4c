"""PREPARE and FINALIZE (coordinator.finalize): HA / WLB / auto_poweron turned off and exactly those put back,
rolling_upgrade_in_progress awaited, the guest-tools report. Against the simulator, the real boot service and
simulated PXE machines."""

from __future__ import annotations

import re

import pytest
from helpers import FAST
from labs import MEDIA, POOL

from provisioner import output, states
from provisioner.coordinator import finalize, journal, runner, steps
from provisioner.coordinator.report import run_report
from provisioner.coordinator.plan import make_plan
from provisioner.simulator import states as sim_states
from provisioner.simulator.db import NULL_REF



def sim_pool(lab):
    pool = lab.world.pools[POOL]
    return pool, pool.db, pool.db.get("pool", pool.ref)


def user_vms(lab) -> list[str]:
    db = lab.world.pools[POOL].db
    return sorted(r for r in db.all("VM") if not db.get("VM", r)["is_control_domain"])


def turn_on_ha_wlb_autostart(lab) -> tuple[str, str]:
    """HA on (2 failures to tolerate, heartbeat on the shared SR), WLB on, auto_poweron on the master's VM."""
    pool, db, rec = sim_pool(lab)
    lab.driver.enable_ha([rec["default_SR"]], 2)
    db.update("pool", pool.ref, wlb_enabled=True)
    vm = next(r for r in user_vms(lab) if db.get("VM", r)["resident_on"] == pool.hosts[0].ref)
    db.update("VM", vm, other_config={"auto_poweron": "true"})
    return rec["default_SR"], vm


def context(lab, run_id):
    return steps.Context(lab.store, lab.config, lab.driver, lab.store.get_media(MEDIA), run_id, lab.world.clock,
                         FAST)


def test_plan_lists_what_is_turned_off_and_back_on(lab):
    turn_on_ha_wlb_autostart(lab)
    refused = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert not refused.ok and any("HA is enabled" in p for p in refused.problems)
    assert any("WLB is enabled" in p for p in refused.problems)
    allowed = make_plan(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    assert allowed.ok, allowed.problems
    assert [c.split(":")[0] for c in allowed.changes] == ["HA", "WLB", "VM lab-host0-vm0"]
    assert "failures to tolerate 2" in allowed.changes[0]
    assert "turned off and back on: WLB" in output.plan(allowed)


def test_ha_wlb_autostart_off_during_the_run_and_back_after_rpu_cleared(lab):
    sr, vm = turn_on_ha_wlb_autostart(lab)
    pool, db, _ = sim_pool(lab)
    seen = []

    def on_commit(rh):  # what the pool looks like at every host step
        rec = db.get("pool", pool.ref)
        seen.append((rec["ha_enabled"], rec["wlb_enabled"], db.get("VM", vm)["other_config"]["auto_poweron"]))
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    final = runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                          on_commit=on_commit).run()
    assert final.state == states.RUN_DONE, final.reason
    assert seen and set(seen) == {(False, False, "false")}
    rec = db.get("pool", pool.ref)
    assert rec["ha_enabled"] and rec["wlb_enabled"] and rec["ha_host_failures_to_tolerate"] == "2"
    assert [db.get("VDI", v)["SR"] for v in rec["ha_statefiles"]] == [sr]
    assert db.get("VM", vm)["other_config"]["auto_poweron"] == "true"
    assert "rolling_upgrade_in_progress" not in rec["other_config"]
    events = lab.store.events(run_id=run.id)
    order = [e["kind"] for e in events if e["kind"] in (journal.RPU_CLEARED, journal.UNDO, "run.done")]
    assert order[0] == journal.RPU_CLEARED and order[-1] == "run.done" and order.count(journal.UNDO) == 3
    report = run_report(lab.store, run.id)
    assert report["options"] == {"disable_ha_wlb": True, "migrate_back": False, "power_cycle": False, "consent": (),
                                 "updates": None}
    assert [(p["what"], p["state"]) for p in report["prepare"]] == [
        ("ha", "undone"), ("wlb", "undone"), ("auto_poweron", "undone")]
    assert report["rpu_cleared_after"] is not None and report["warnings"] == []


def test_guest_tools_report_reads_the_pv_drivers_flags_not_the_version(lab):
    """As XenCenter (VM.cs): not detected -> no tools; detected but PV_drivers_up_to_date false -> not up to date;
    an old version string with up_to_date true is fine (xapi sets up_to_date = detected since Dundee)."""
    pool, db, _ = sim_pool(lab)
    vms = user_vms(lab)
    names = [db.get("VM", v)["name_label"] for v in vms]
    db.update("VM_guest_metrics", db.get("VM", vms[0])["guest_metrics"],
              PV_drivers_version={"major": "7", "minor": "0", "micro": "0", "build": "1"})
    db.update("VM", vms[2], guest_metrics=NULL_REF)
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_DONE
    tools = run_report(lab.store, run.id)["guest_tools"]
    assert tools["target"] == "8.4.0" and tools["checked"] == 3 and tools["not_running"] == 0
    assert tools["not_up_to_date"] == []  # vm0's 7.0.0 is up to date for XAPI: not listed
    assert tools["no_tools"] == [{"uuid": db.get("VM", vms[2])["uuid"], "name": names[2]}]
    # a record as a pre-Dundee xapi wrote it: drivers there, but not up to date
    db.update("VM_guest_metrics", db.get("VM", vms[1])["guest_metrics"], PV_drivers_up_to_date=False)
    again = finalize.tools_report(context(lab, run.id))
    assert again["not_up_to_date"] == [{"uuid": db.get("VM", vms[1])["uuid"], "name": names[1], "version": "8.2.1"}]
    assert run_report(lab.store, run.id)["guest_tools"] == again  # the latest report wins
    text = "\n".join(output.guest_tools_lines(again))
    assert f"guest tools not up to date: {names[1]} (8.2.1) (3 running VMs checked" in text
    assert f"no guest tools detected: {names[2]}" in text and names[0] not in text


def test_ha_on_without_the_option_blocks_and_changes_nothing(lab):
    turn_on_ha_wlb_autostart(lab)
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_BLOCKED and "HA is enabled" in final.reason
    _, _, rec = sim_pool(lab)
    assert rec["ha_enabled"] and rec["wlb_enabled"]
    assert not [c for c in lab.world.call_log if c[1] in ("Async.pool.disable_ha", "host.disable")]


def test_prepare_is_journaled_first_and_idempotent_and_undo_puts_back_exactly_that(lab):
    sr, vm = turn_on_ha_wlb_autostart(lab)
    pool, db, _ = sim_pool(lab)
    other = next(r for r in user_vms(lab) if r != vm)
    db.update("VM", other, other_config={"auto_poweron": "false"})
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    ctx = context(lab, run.id)
    uuids = [h.uuid for h in lab.store.run_hosts(run.id)]
    assert len(finalize.prepare(ctx, uuids, disable_ha_wlb=True)) == 3
    assert finalize.prepare(ctx, uuids, disable_ha_wlb=True) == []  # a re-run finds it done
    intents = journal.read(lab.store, run.id, journal.PREPARE_INTENT)
    assert [i["what"] for i in intents] == ["ha", "wlb", "auto_poweron"]
    assert intents[0]["heartbeat_srs"] == [sr] and intents[0]["failures_to_tolerate"] == 2
    kinds = [(e["kind"], e["details"].get("what") or e["details"].get("method"))
             for e in lab.store.events(run_id=run.id) if e["kind"] in (journal.PREPARE_INTENT, "xapi.call")]
    assert kinds[:4] == [(journal.PREPARE_INTENT, "ha"), ("xapi.call", "ha off"), (journal.PREPARE_INTENT, "wlb"),
                         ("xapi.call", "wlb off")]  # each change journaled before it is made
    assert finalize.undo(ctx) == []
    calls = len(lab.world.call_log)
    assert finalize.undo(ctx) == []
    assert {c[1] for c in lab.world.call_log[calls:]} <= {  # nothing left to put back: reads only
        "pool.get_all", "pool.get_record", "VDI.get_SR", "VM.get_all_records", "VBD.get_all_records",
        "VDI.get_all_records", "SR.get_all_records", "VM_guest_metrics.get_all_records"}
    rec = db.get("pool", pool.ref)
    assert rec["ha_enabled"] and rec["wlb_enabled"]
    assert db.get("VM", other)["other_config"]["auto_poweron"] == "false"  # never changed, never "restored"


def test_abort_during_prepare_undoes_it(lab):
    turn_on_ha_wlb_autostart(lab)
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    finalize.prepare(context(lab, run.id), [h.uuid for h in lab.store.run_hosts(run.id)], disable_ha_wlb=True)
    lab.store.set_run_state(run.id, states.RUN_PREPARE)  # as if killed inside PREPARE
    lab.store.request_abort(run.id)
    final = runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_ABORTED and "no host touched" in final.reason
    _, _, rec = sim_pool(lab)
    assert rec["ha_enabled"] and rec["wlb_enabled"]
    assert not [c for c in lab.world.call_log if c[1] == "host.disable"]


def test_failed_member_leaves_ha_off_and_says_why(lab):
    turn_on_ha_wlb_autostart(lab)
    lab.handler.inject(lab.mac(1), installer_fails=True)
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    final = runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_DONE_WITH_FAILURES
    assert "HA not turned back on" in final.reason and "old version" in final.reason
    _, db, rec = sim_pool(lab)
    assert not rec["ha_enabled"] and not rec["wlb_enabled"]
    report = run_report(lab.store, run.id)
    states_by_what = {p["what"]: p["state"] for p in report["prepare"]}
    assert states_by_what["auto_poweron"] == "undone" and states_by_what["ha"].startswith("not undone: left off")
    assert report["rpu_cleared_after"] is None and any("HA not turned back on" in w for w in report["warnings"])
    assert lab.handler.machine(lab.mac(1)).installs() <= 1 and lab.reboots(1) == 1


def test_rpu_flag_that_never_clears_times_out(lab):
    pool, db, _ = sim_pool(lab)
    db.update("host", pool.hosts[2].ref, software_version=sim_states.software_version("8.4.0", "x")[0])
    lab.world.detect_rolling_upgrade(pool)
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    ctx = context(lab, run.id)
    ctx.timeouts = steps.Timeouts(finalize=60, poll=5)
    lines = []
    ctx.say = lines.append
    with pytest.raises(steps.StepFailed, match="not cleared after 1 min"):
        finalize.wait_rpu_cleared(ctx)
    # one progress line, before the 1 min bound (its elapsed minutes read the simulated clock, which a loaded
    # machine moves on: 0.5 min was seen under 4 xdist workers)
    assert len(lines) == 1 and re.fullmatch(r"finalize: waiting for XAPI to clear rolling_upgrade_in_progress: "
                                            r"rolling_upgrade_in_progress still set \[0\.\d min\]", lines[0]), lines


@pytest.mark.parametrize("crash_on", ["HA turned off", "finalize: XAPI cleared", "back on"])
def test_crash_inside_prepare_or_finalize_then_resume(lab, crash_on):
    """kill -9 inside PREPARE (after its changes) or FINALIZE (after the wait, or mid-undo): the resumed run
    journals nothing twice, changes nothing twice and ends DONE with everything back on."""
    turn_on_ha_wlb_autostart(lab)
    start = len(lab.world.call_log)
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)

    class Crash(Exception):
        pass

    def say(line):
        if crash_on in line:
            raise Crash(line)
    with pytest.raises(Crash):
        runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                      say=say).run()
    final = runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_DONE, final.reason
    _, db, rec = sim_pool(lab)
    assert rec["ha_enabled"] and rec["wlb_enabled"]
    assert len(journal.read(lab.store, run.id, journal.PREPARE_INTENT)) == 3
    calls = [c[1] for c in lab.world.call_log[start:]]
    assert calls.count("Async.pool.disable_ha") == calls.count("Async.pool.enable_ha") == 1
    assert calls.count("pool.set_wlb_enabled") == 2 and calls.count("VM.add_to_other_config") == 2
    assert all(p["state"] == "undone" for p in run_report(lab.store, run.id)["prepare"])
    for i in range(3):
        assert lab.reboots(i) == 1


def test_master_failure_leaves_prepare_changes_in_place_and_says_so(lab):
    turn_on_ha_wlb_autostart(lab)
    lab.handler.inject(lab.mac(0), installer_fails=True)
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    final = runner.Runner(lab.store, lab.config, run.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()
    assert final.state == states.RUN_ABORTED and "installer_failed_intact" in final.reason
    assert "what PREPARE turned off stays off" in final.reason
    assert {p["state"] for p in run_report(lab.store, run.id)["prepare"]} == {"changed"}
    _, _, rec = sim_pool(lab)
    assert not rec["ha_enabled"] and not rec["wlb_enabled"]
    assert lab.reboots(1) == lab.reboots(2) == 0  # no member touched
