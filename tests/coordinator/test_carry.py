"""Nothing lost across abort and resume (coordinator.carry): what a run turned off and did not undo (HA, WLB, VM
auto_poweron) shows in the next plan, is taken over by the next run's PREPARE with its ORIGINAL values and put
back by its FINALIZE, or is restored now by restore-settings. Against the simulator and the real boot service."""

from __future__ import annotations

import pytest
from helpers import FAST
from labs import MEDIA, POOL

from provisioner import output, states
from provisioner.coordinator import carry, journal, runner
from provisioner.coordinator.report import run_report
from provisioner.coordinator.plan import make_plan
from provisioner.store import ConflictError


def settings(lab) -> tuple:
    """(HA on, failures to tolerate, the statefile's SR, WLB on, auto_poweron of every user VM by name)."""
    pool = lab.world.pools[POOL]
    db, rec = pool.db, pool.db.get("pool", pool.ref)
    sr = db.get("VDI", rec["ha_statefiles"][0])["SR"] if rec["ha_statefiles"] else None
    vms = {db.get("VM", r)["name_label"]: db.get("VM", r)["other_config"].get("auto_poweron") for r in db.all("VM")
           if not db.get("VM", r)["is_control_domain"]}
    return rec["ha_enabled"], rec["ha_host_failures_to_tolerate"], sr, rec["wlb_enabled"], vms


def turn_on(lab) -> tuple:
    """HA on (2 failures to tolerate, heartbeat on the shared SR), WLB on, auto_poweron on the VMs of host0 and
    host2; the settings as they are before any run."""
    pool = lab.world.pools[POOL]
    db = pool.db
    lab.driver.enable_ha([db.get("pool", pool.ref)["default_SR"]], 2)
    db.update("pool", pool.ref, wlb_enabled=True)
    for h in (pool.hosts[0], pool.hosts[2]):
        for vm in db.find("VM", resident_on=h.ref):
            if not db.get("VM", vm)["is_control_domain"]:
                db.update("VM", vm, other_config={"auto_poweron": "true"})
    return settings(lab)


def drive(lab, run_id, driver=None, **kw):
    return runner.Runner(lab.store, lab.config, run_id, driver or lab.driver, clock=lab.world.clock,
                         timeouts=FAST, **kw).run()


def abort_when(lab, run_id, role: str, step: str):
    """An on_commit that asks for the abort when the host of `role` commits `step` (the operator's `abort`)."""
    def on_commit(rh):
        if rh.role == role and rh.step == step:
            lab.store.request_abort(run_id)
    return on_commit


class CrashingDriver:
    """The real driver, but the coordinator dies (kill -9) at the first call of `method`: nothing after it runs."""

    def __init__(self, driver, method: str):
        self._driver, self._method = driver, method

    def __getattr__(self, name):
        if name == self._method:
            def crash(*args):
                raise KeyboardInterrupt(f"killed at {name}{args}")
            return crash
        return getattr(self._driver, name)


def test_abort_in_members_then_a_new_run_puts_everything_back_with_the_original_values(lab):
    before = turn_on(lab)
    first = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    ended = drive(lab, first.id, on_commit=abort_when(lab, first.id, "master", states.STEP_DONE))
    assert ended.state == states.RUN_ABORTED and "stays off" in ended.reason
    off = settings(lab)
    assert not off[0] and not off[3] and set(off[4].values()) == {"false"}  # left off on purpose

    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)  # no disable_ha_wlb needed: HA / WLB are off now
    assert plan.ok, plan.problems
    assert [i["what"] for i in plan.left_off] == ["ha", "wlb", "auto_poweron", "auto_poweron"]
    assert plan.carried == [f"left off by run {first.id}: HA (heartbeat SRs: {before[2]}, failures to tolerate 2), "
                            "WLB, VM lab-host0-vm0 auto_poweron, VM lab-host2-vm0 auto_poweron; the next run's "
                            f"FINALIZE restores them, or run `provisioner upgrade restore-settings {POOL}`"]
    assert output.plan(plan).splitlines()[1] == plan.carried[0]  # listed first

    second = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    lines: list[str] = []
    assert drive(lab, second.id, say=lines.append).state == states.RUN_DONE
    assert settings(lab) == before  # HA with the first run's heartbeat SR and failures to tolerate
    assert any("HA (heartbeat SRs" in line and f"left off by run {first.id}" in line for line in lines)
    assert {p["state"] for p in run_report(lab.store, first.id)["prepare"]} == {f"carried to run {second.id}"}
    again = run_report(lab.store, second.id)["prepare"]
    assert {(p["state"], p["carried_from"]) for p in again} == {("undone", first.id)}
    assert carry.left_off(lab.store, POOL) == []  # nothing carried twice


def test_crash_in_the_middle_of_prepare_then_abort_then_a_new_run(lab):
    """PREPARE turned HA off, the coordinator died before WLB / auto_poweron; the operator aborts; the abort's undo
    is refused (a member is offline: HOST_OFFLINE, xapi_ha.ml) so HA stays off; a new run puts it back."""
    before = turn_on(lab)
    first = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    with pytest.raises(KeyboardInterrupt):
        drive(lab, first.id, CrashingDriver(lab.driver, "set_wlb_enabled"))
    assert lab.store.get_run(first.id).state == states.RUN_PREPARE
    half = settings(lab)
    assert not half[0] and half[3] and half[4] == before[4]  # only HA was turned off
    with pytest.raises(ConflictError):
        runner.start_run(lab.store, POOL, MEDIA, lab.driver)  # the crashed run still owns the pool
    with pytest.raises(ConflictError, match="owns the settings"):
        carry.restore(lab.store, POOL, lab.driver)

    pool = lab.world.pools[POOL]
    metrics = pool.db.get("host", pool.hosts[2].ref)["metrics"]
    pool.db.update("host_metrics", metrics, live=False)
    lab.store.request_abort(first.id)
    aborted = drive(lab, first.id)
    assert aborted.state == states.RUN_ABORTED and "HA not turned back on" in aborted.reason
    pool.db.update("host_metrics", metrics, live=True)
    assert [(i.what, i.state) for i in carry.left_off(lab.store, POOL, pool_info=lab.driver.pool_info(),
                                                       vms=lab.driver.vms())] == [("ha", carry.OFF)]

    second = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)  # WLB is still on
    assert make_plan(lab.store, POOL, MEDIA, lab.driver).carried[0].startswith(f"left off by run {first.id}: HA")
    ended = drive(lab, second.id)
    assert ended.state == states.RUN_DONE, ended.reason
    assert settings(lab) == before
    intents = journal.read(lab.store, second.id, journal.PREPARE_INTENT)
    assert [(i["what"], i.get("carried_from")) for i in intents][:2] == [("ha", first.id), ("wlb", None)]


def test_restore_settings_now_refused_while_a_run_is_active_and_idempotent(lab):
    before = turn_on(lab)
    first = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    # abort in MASTER before its reboot: nothing upgraded, everything PREPARE did left off
    assert drive(lab, first.id, on_commit=abort_when(lab, first.id, "master", states.STEP_CHECK)).state == \
        states.RUN_ABORTED
    assert not settings(lab)[0]
    active = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    with pytest.raises(ConflictError, match=f"has run {active.id}"):
        carry.restore(lab.store, POOL, lab.driver)
    lab.store.request_abort(active.id)
    assert drive(lab, active.id).state == states.RUN_ABORTED  # before any change

    done = carry.restore(lab.store, POOL, lab.driver)
    assert done["restored"] == ["VM lab-host0-vm0 auto_poweron", "VM lab-host2-vm0 auto_poweron", "WLB",
                                f"HA (heartbeat SRs: {before[2]}, failures to tolerate 2)"]  # as undo: VMs first
    assert done["not_restored"] == [] and settings(lab) == before
    calls = len(lab.world.call_log)
    assert carry.restore(lab.store, POOL, lab.driver) == {"pool": POOL, "restored": [], "already_back": [],
                                                          "not_restored": []}
    assert not {c[1] for c in lab.world.call_log[calls:]} & {"Async.pool.enable_ha", "pool.set_wlb_enabled",
                                                             "VM.add_to_other_config"}
    assert {p["state"] for p in run_report(lab.store, first.id)["prepare"]} == {"restored by restore-settings"}
    assert make_plan(lab.store, POOL, MEDIA, lab.driver).carried == []


def test_restore_settings_leaves_ha_and_wlb_off_while_the_pool_is_mixed_and_says_why(lab):
    """Aborted in MEMBERS: the master is upgraded, members are not; XAPI refuses HA then (NOT_SUPPORTED_DURING_
    UPGRADE): auto_poweron goes back, HA / WLB stay for later, and someone who put WLB back by hand is respected."""
    turn_on(lab)
    first = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    assert drive(lab, first.id, on_commit=abort_when(lab, first.id, "master", states.STEP_DONE)).state == \
        states.RUN_ABORTED
    lab.driver.set_wlb_enabled(True)  # the operator put WLB back by hand
    done = carry.restore(lab.store, POOL, lab.driver)
    assert sorted(done["restored"]) == ["VM lab-host0-vm0 auto_poweron", "VM lab-host2-vm0 auto_poweron"]
    assert done["already_back"] == ["WLB"]
    assert [(n["setting"].split(" ")[0], "different versions" in n["why"]) for n in done["not_restored"]] == [
        ("HA", True)]
    text = output.restore_settings(done)
    assert "already back on: WLB" in text and "NOT restored: HA (heartbeat SRs" in text
    assert [i.what for i in carry.left_off(lab.store, POOL)] == ["ha"]  # still there for the next run


def test_ha_wlb_left_off_by_a_mixed_pool_are_carried_to_the_run_that_finishes_it(lab):
    """FINALIZE leaves HA / WLB off while a failed member keeps the pool mixed (undo pool_mixed); the next run,
    which upgrades that member, puts them back with the first run's values."""
    before = turn_on(lab)
    lab.handler.inject(lab.mac(1), installer_fails=True)
    first = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    assert drive(lab, first.id).state == states.RUN_DONE_WITH_FAILURES
    assert not settings(lab)[0] and not settings(lab)[3]
    lab.handler.inject(lab.mac(1), installer_fails=False)  # the operator fixed what made it fail
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert [i["what"] for i in plan.left_off] == ["ha", "wlb"]  # auto_poweron went back in FINALIZE
    second = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    ended = drive(lab, second.id)
    assert ended.state == states.RUN_DONE, ended.reason
    assert settings(lab) == before
    states_first = {p["what"]: p["state"] for p in run_report(lab.store, first.id)["prepare"]}
    assert states_first == {"ha": f"carried to run {second.id}", "wlb": f"carried to run {second.id}",
                            "auto_poweron": "undone"}


def test_take_over_killed_between_its_journal_entries_neither_doubles_nor_loses(lab):
    """kill -9 after the new run journaled the carried intent but before the old run was settled: a second
    PREPARE only settles it; the HA values stay the first run's."""
    before = turn_on(lab)
    first = runner.start_run(lab.store, POOL, MEDIA, lab.driver, disable_ha_wlb=True)
    assert drive(lab, first.id, on_commit=abort_when(lab, first.id, "master", states.STEP_CHECK)).state == \
        states.RUN_ABORTED
    second = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    ha = next(e for e in journal.read(lab.store, first.id, journal.PREPARE_INTENT) if e["what"] == "ha")
    journal.write(lab.store, second.id, journal.PREPARE_INTENT, what="ha", carried_from=first.id,
                  heartbeat_srs=ha["heartbeat_srs"], failures_to_tolerate=ha["failures_to_tolerate"])  # then killed
    said = carry.take_over(lab.store, second.id, POOL, lab.driver)
    assert len(said) == 4 and carry.take_over(lab.store, second.id, POOL, lab.driver) == []
    intents = journal.read(lab.store, second.id, journal.PREPARE_INTENT)
    assert sorted(i["what"] for i in intents) == ["auto_poweron", "auto_poweron", "ha", "wlb"]
    assert carry.left_off(lab.store, POOL) == []
    assert drive(lab, second.id).state == states.RUN_DONE and settings(lab) == before


def test_take_over_reads_nothing_from_xapi_when_no_run_left_anything_off(lab):
    """The usual PREPARE: no earlier run left a setting off, so the pool's VMs are not read for it; once one did,
    the pool is read to see whether someone put it back meanwhile."""
    run = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    before = len(lab.world.call_log)
    assert carry.take_over(lab.store, run.id, POOL, lab.driver) == []
    assert lab.world.call_log[before:] == []
