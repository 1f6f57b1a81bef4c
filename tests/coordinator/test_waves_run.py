"""Runs in waves (`--parallel`, issue 21) through the XAPI simulator, the real boot service and PXE machines: a
4-member wave, kill -9 in the middle of it then resume, --max-failures, abort mid-wave."""

from __future__ import annotations

import threading

import pytest
from helpers import FAST, Crash
from labs import MEDIA, POOL

from provisioner import states
from provisioner.coordinator import runner, wave_runner
from provisioner.coordinator.report import run_report


@pytest.fixture
def lab_hosts():
    return 5  # the master and a wave of 4


def drive(lab, run_id, **kw):
    return runner.Runner(lab.store, lab.config, run_id, lab.driver, clock=lab.world.clock, timeouts=FAST,
                         **kw).run()


def events(lab, run_id, prefix):
    return [e for e in lab.store.events(run_id=run_id, limit=100_000) if e["kind"].startswith(prefix)]


def members(lab):
    return [lab.world.pools[POOL].hosts[i] for i in range(1, 5)]


def test_a_wave_of_four_after_the_master(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, parallel=4)
    final = drive(lab, started.id)
    assert final.state == states.RUN_DONE, final.reason
    report = run_report(lab.store, started.id)
    assert [h["wave"] for h in report["hosts"]] == [0, 1, 1, 1, 1]
    assert report["waves"]["parallel"] == "4"
    for i in range(5):
        assert lab.handler.machine(lab.mac(i)).installs() == 1 and lab.reboots(i) == 1, i
    steps = [(e["details"]["host"], e["kind"]) for e in events(lab, started.id, "step.")]
    # the wave really ran at once: every member rebooted before any of them came back
    first_verify = min(i for i, (h, k) in enumerate(steps) if k == "step.verify" and h != "lab-host0")
    rebooted = {h for h, k in steps[:first_verify] if k == "step.wait_down" and h != "lab-host0"}
    assert rebooted == {h.name for h in members(lab)}
    waves = events(lab, started.id, "wave.")
    assert [(e["kind"], e["details"]["wave"]) for e in waves] == [("wave.start", 1), ("wave.done", 1)]
    # coordinated evacuation: per-VM migrations, never onto a host of the same wave, no host.evacuate for members
    wave = {h.name for h in members(lab)}
    moves = [e["details"] for e in events(lab, started.id, "xapi.call") if e["details"]["method"] == "VM.pool_migrate"]
    assert moves and all(m["ok"] and m["to"] not in wave for m in moves)
    assert {m["to"] for m in moves} == {"lab-host0"}  # the upgraded master first (no second move)
    evacuated = [e["details"]["host"] for e in events(lab, started.id, "xapi.call")
                 if e["details"]["method"] == "host.evacuate"]
    assert evacuated == ["lab-host0"]
    vms = lab.world.pools[POOL].db
    running = [r for r in vms.tables["VM"].values() if not r["is_control_domain"] and r["power_state"] == "Running"]
    assert len(running) == 5  # nothing stopped


def test_kill_9_in_the_middle_of_the_wave_then_resume(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, parallel="auto")
    assert [len(w["hosts"]) for w in run_report(lab.store, started.id)["waves"]["waves"]] == [1, 4]
    dead = threading.Event()

    def kill(rh):  # kill -9 once lab-host2 committed WAIT_UP: no thread of the process acts after its next commit
        if rh.name == "lab-host2" and rh.step == states.STEP_WAIT_UP:
            dead.set()
        if dead.is_set():
            raise Crash(rh.step)
    with pytest.raises(Crash):
        drive(lab, started.id, on_commit=kill)
    at = {h.name: h.step for h in lab.store.run_hosts(started.id)}
    assert at["lab-host0"] == states.STEP_DONE
    in_wave = [at[h.name] for h in members(lab)]
    assert states.STEP_WAIT_UP in in_wave and not set(in_wave) & {states.STEP_DONE, states.STEP_PENDING}, at
    final = drive(lab, started.id)  # a new process: each host of the wave resumes at its own step
    assert final.state == states.RUN_DONE, final.reason
    for i in range(5):
        assert lab.handler.machine(lab.mac(i)).installs() == 1, i
        assert lab.reboots(i) == 1, i
    starts = [e["details"]["steps"] for e in events(lab, started.id, wave_runner.WAVE_START)]
    assert len(starts) == 2 and set(starts[0].values()) == {states.STEP_PENDING}
    assert {starts[1][h.name] for h in members(lab)} == set(in_wave)


def test_max_failures_stops_new_waves_and_the_wave_in_flight_finishes(lab):
    lab.handler.inject(lab.mac(1), installer_fails=True)
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, parallel=2, max_failures=1)
    final = drive(lab, started.id)
    assert final.state == states.RUN_ABORTED
    assert "1 member(s) failed (lab-host1), --max-failures is 1: no new wave is started" in final.reason
    steps = {h["name"]: (h["wave"], h["step"]) for h in run_report(lab.store, started.id)["hosts"]}
    assert steps == {"lab-host0": (0, states.STEP_DONE), "lab-host1": (1, states.STEP_FAILED),
                     "lab-host2": (1, states.STEP_DONE), "lab-host3": (2, states.STEP_PENDING),
                     "lab-host4": (2, states.STEP_PENDING)}
    assert lab.reboots(3) == 0 and lab.reboots(4) == 0


def test_max_failures_as_a_share_and_alone(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, max_failures="50%")
    shown = run_report(lab.store, started.id)["waves"]
    assert shown["parallel"] == "1" and shown["max_failures"] == 2
    assert [len(w["hosts"]) for w in shown["waves"]] == [1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="--max-failures takes"):
        runner.start_run(lab.store, "other", MEDIA, lab.driver, parallel=2, max_failures="none")


def test_abort_in_the_middle_of_a_wave_stops_every_host_before_its_next_destructive_step(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, parallel=4)

    def abort(rh):
        if rh.role != "master" and rh.step == states.STEP_ARM:
            lab.store.request_abort(started.id)
    final = drive(lab, started.id, on_commit=abort)
    assert final.state == states.RUN_ABORTED
    for h in members(lab):
        assert lab.reboots(lab.world.pools[POOL].hosts.index(h)) == 0, h.name
    assert all(h.enabled for h in lab.driver.hosts())  # each stopped host re-enabled (make_safe)
    reasons = [h.reason for h in lab.store.run_hosts(started.id) if h.role != "master"]
    assert all(r and r.startswith("aborted before") for r in reasons), reasons


def test_the_plan_reads_memory_ha_and_tags_from_xapi(lab):
    """wave_facts.plan_for through the real driver: free memory, HA's failures to tolerate, group tags."""
    from provisioner.coordinator import wave_facts
    from provisioner.coordinator.plan import make_plan
    from provisioner.simulator.builder import GiB

    pool = lab.world.pools[POOL]
    for h in pool.hosts:  # dom0 4 GiB + one 4 GiB VM, room for four more VMs on each host
        pool.db.update("host_metrics", pool.db.get("host", h.ref)["metrics"], memory_total=str(24 * GiB))
    lab.world.update_memory(pool)
    hosts = make_plan(lab.store, POOL, MEDIA, lab.driver).to_upgrade
    plain = wave_facts.plan_for(lab.driver, hosts, "auto")
    assert [len(w.hosts) for w in plain.waves] == [1, 4] and plain.notes == []
    pool.db.update("pool", pool.ref, ha_enabled=True, ha_host_failures_to_tolerate="1")
    ha = wave_facts.plan_for(lab.driver, hosts, "auto", disable_ha_wlb=True)
    assert max(len(w.hosts) for w in ha.waves) < 4, ha.lines()
    assert any("HA's 1 host failure(s) to tolerate would not be kept" in w.why for w in ha.waves), ha.lines()
    assert "HA tolerates 1 host failure(s)" in ha.notes[0] and "PREPARE turns HA off" in ha.notes[0]
    pool.db.update("pool", pool.ref, ha_enabled=False)
    pool.db.update("host", pool.hosts[1].ref, tags=["rack:1"])
    pool.db.update("host", pool.hosts[2].ref, tags=["rack:1"])
    racks = wave_facts.plan_for(lab.driver, hosts, "auto", group_prefix="rack:")
    assert [w.hosts for w in racks.waves][1:] == [("lab-host1", "lab-host3", "lab-host4"), ("lab-host2",)]


def test_room_taken_after_the_wave_read_it_is_refused_by_xapi_and_the_next_target_used(lab, monkeypatch):
    """Another client fills the upgraded master (the first target) right after the wave read the free memory:
    XAPI's VM.assert_can_boot_here refuses it, the wave reads the pool again and the VMs go to the next target;
    nothing is stopped, nothing fails."""
    from provisioner.coordinator import evacuation
    from provisioner.simulator.builder import add_vm

    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, parallel=2)
    pool = lab.world.pools[POOL]
    read, hogged = evacuation.WaveTargets._read, []

    def read_then_fill_the_master(self, ctx, *reads):
        read(self, ctx, *reads)
        if hogged:
            return
        master = next(h for h in lab.driver.hosts() if h.is_master)
        hog = add_vm(pool, "hog", master.ref, pool.db.find("SR", shared=True)[0], master.memory_free - 2 ** 20,
                     running=False)
        lab.driver.start_vm_on(hog, master.ref)  # another XAPI client, between the read and the migrations
        hogged.append(master.name)
    monkeypatch.setattr(evacuation.WaveTargets, "_read", read_then_fill_the_master)
    final = drive(lab, started.id)
    assert final.state == states.RUN_DONE, final.reason
    refused = [e["details"] for e in events(lab, started.id, evacuation.REFUSED)]
    assert refused and all(r["target"] == "lab-host0" and r["code"] == "HOST_NOT_ENOUGH_FREE_MEMORY"
                           for r in refused), refused
    moves = [e["details"] for e in events(lab, started.id, "xapi.call") if e["details"]["method"] == "VM.pool_migrate"]
    assert moves and all(m["ok"] and m["to"] != "lab-host0" for m in moves)
    running = [r for r in pool.db.tables["VM"].values() if not r["is_control_domain"] and r["power_state"] == "Running"]
    assert len(running) == 5 + 1  # the lab's VMs and the hog: nothing stopped


def test_the_waves_are_planned_on_the_pool_facts_the_prechecks_just_read(lab):
    """create_run with --parallel: the waves come from the PoolFacts the plan's prechecks read (Plan.facts), not
    from a second read of every host, VM, PIF and SR; `upgrade plan --parallel` alike (plan_of)."""
    from provisioner.coordinator import wave_facts
    from provisioner.coordinator.plan import make_plan

    reads, real = [], lab.driver.precheck_facts
    lab.driver.precheck_facts = lambda: reads.append(1) or real()  # the real read, counted
    plan = make_plan(lab.store, POOL, MEDIA, lab.driver)
    assert len(reads) == 1 and plan.facts is not None
    assert wave_facts.plan_of(plan, lab.driver, "auto", None, None) is not None and len(reads) == 1
    run, made = runner.create_run(lab.store, POOL, MEDIA, lab.driver, parallel="auto")
    assert len(reads) == 2 and made.facts is not None  # create_run's own plan: one read for prechecks and waves
    assert wave_facts.recorded(lab.store, run.id)
