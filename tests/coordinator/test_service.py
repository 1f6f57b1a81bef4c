"""FlowService: pool runs on background threads (parallel pools, one run per pool, abort, stop and resume_all)
against the XAPI simulator, the real boot service and simulated PXE machines."""

from __future__ import annotations

import threading

import pytest

from labs import MEDIA, WAIT
from provisioner import states
from provisioner.coordinator import pools, runner
from provisioner.coordinator.report import run_report
from provisioner.coordinator.locks import PoolLock, lock_holder, owner_pid, pool_lease
from provisioner.store import ConflictError, NotFoundError


def test_two_pools_upgraded_at_once(two_pools):
    svc = two_pools.service()
    red_rebooting, blue_rebooting = threading.Event(), threading.Event()

    def hold(mine: threading.Event, other: threading.Event):
        def on_commit(rh):
            if rh.role == "master" and rh.step == states.STEP_WAIT_DOWN:
                mine.set()
                assert other.wait(WAIT), "the other pool never got going: runs are not parallel"
        return on_commit
    # each master waits, mid-install, for the other pool's master: only parallel runs get past this
    red = svc.start("red", MEDIA, on_commit=hold(red_rebooting, blue_rebooting))
    blue = svc.start("blue", MEDIA, on_commit=hold(blue_rebooting, red_rebooting))
    assert sorted(svc.running()) == sorted([red.id, blue.id])
    for run in (red, blue):
        assert svc.wait(run.id, WAIT).state == states.RUN_DONE
    assert svc.running() == []
    for pool in ("red", "blue"):
        assert two_pools.versions(pool) == {"8.4.0"}
        assert set(two_pools.installs(pool).values()) == {1}
        assert set(two_pools.reboots(pool).values()) == {1}
    progress = two_pools.store.events(run_id=red.id, kind="run.progress")
    assert progress and all("line" in e["details"] for e in progress)
    svc.stop()


def test_second_start_on_same_pool_refused(two_pools):
    svc = two_pools.service()
    gate = threading.Event()
    run = svc.start("red", MEDIA, on_commit=lambda rh: gate.wait(WAIT))
    with pytest.raises(ConflictError, match="already being upgraded here"):
        svc.start("red", MEDIA)
    with pytest.raises(ConflictError, match="already being upgraded here"):
        svc.resume("red")
    other = two_pools.service()  # another process on the same store: the pool lock file refuses it
    with pytest.raises(ConflictError, match="another process"):
        other.resume("red")
    gate.set()
    assert svc.wait(run.id, WAIT).state == states.RUN_DONE
    assert set(two_pools.installs("red").values()) == {1}
    with pytest.raises(NotFoundError):
        svc.resume("red")  # nothing left to resume


def test_abort_stops_before_the_next_destructive_step(two_pools):
    svc = two_pools.service()
    at_check, go = threading.Event(), threading.Event()

    def on_commit(rh):
        if rh.step == states.STEP_CHECK:
            at_check.set()
            go.wait(WAIT)
    run = svc.start("blue", MEDIA, on_commit=on_commit)
    assert at_check.wait(WAIT)
    assert svc.abort("blue").abort_requested
    go.set()
    final = svc.wait(run.id, WAIT)
    assert final.state == states.RUN_ABORTED
    assert set(two_pools.reboots("blue").values()) == {0}
    assert not [c for c in two_pools.world.call_log if c[1] in ("host.disable", "host.evacuate")]
    with pytest.raises(NotFoundError):
        svc.abort("blue")


def test_resume_all_after_stop(two_pools):
    svc = two_pools.service()
    member_installing = threading.Event()
    macs = two_pools.macs("red")

    def on_commit(rh):
        if rh.mac == macs[1] and rh.step == states.STEP_WAIT_DOWN:
            member_installing.set()
    run = svc.start("red", MEDIA, on_commit=on_commit)
    assert member_installing.wait(WAIT)
    assert svc.stop() == [run.id]
    assert svc.running() == []
    interrupted = two_pools.store.get_run(run.id)
    assert interrupted.state == states.RUN_MEMBERS
    assert two_pools.store.events(run_id=run.id, kind="run.interrupted")
    with pytest.raises(ConflictError, match="stopping"):
        svc.start("blue", MEDIA)
    fresh = two_pools.service()  # a restarted server
    assert fresh.resume_all() == [run.id]
    assert fresh.wait(run.id, WAIT).state == states.RUN_DONE
    assert two_pools.versions("red") == {"8.4.0"}
    assert set(two_pools.installs("red").values()) == {1}
    assert set(two_pools.reboots("red").values()) == {1}
    assert fresh.resume_all() == []
    fresh.stop()


def test_crashed_run_thread_is_recorded_and_resumable(two_pools):
    svc = two_pools.service()

    def on_commit(rh):
        if rh.step == states.STEP_ARM:
            raise RuntimeError("disk full")
    run = svc.start("blue", MEDIA, on_commit=on_commit)
    assert svc.wait(run.id, WAIT).state == states.RUN_MASTER
    crash = two_pools.store.events(run_id=run.id, kind="run.crashed")
    assert crash and "RuntimeError: disk full" in crash[0]["details"]["error"]
    assert svc.resume("blue").id == run.id
    assert svc.wait(run.id, WAIT).state == states.RUN_DONE
    assert set(two_pools.installs("blue").values()) == {1}
    assert run_report(two_pools.store, run.id)["hosts"][0]["step"] == states.STEP_DONE


def test_start_refused_when_plan_fails_to_start_leaves_pool_free(two_pools):
    svc = two_pools.service()
    with pytest.raises(NotFoundError):
        svc.start("nope", MEDIA)
    run = svc.start("red", MEDIA)  # the failed claim released nothing it should not have
    assert svc.wait(run.id, WAIT).state == states.RUN_DONE


def test_lock_holder_names_the_driving_process_without_taking_the_lock(store):
    import os

    assert lock_holder(store, "p") is None  # no lease yet
    held = PoolLock(store, "p").acquire()
    try:
        assert owner_pid(lock_holder(store, "p")) == os.getpid()
        assert lock_holder(store, "other") is None
        with pytest.raises(ConflictError, match=f"another process \\(pid {os.getpid()}"):  # asking took nothing
            PoolLock(store, "p").acquire()
    finally:
        held.release()
    assert lock_holder(store, "p") is None and store.expired_leases() == []  # released: the row is gone


def test_a_server_adopts_a_run_whose_driver_died_holding_its_lease(two_pools):
    """kill -9 of the driving server leaves its lease to expire; another server's adopt_expired() takes it and
    resumes the run from the store: every host installed and rebooted exactly once. A live lease is never taken."""
    svc = two_pools.service()
    member_installing = threading.Event()
    macs = two_pools.macs("red")

    def on_commit(rh):
        if rh.mac == macs[1] and rh.step == states.STEP_WAIT_DOWN:
            member_installing.set()
    run = svc.start("red", MEDIA, on_commit=on_commit)
    assert member_installing.wait(WAIT)
    assert svc.stop() == [run.id]  # the thread stops; then the row a killed process would have left behind:
    store = two_pools.store
    store.take_lease(pool_lease("red"), "other-server:4242:1", 3600)
    fresh = two_pools.service()
    assert fresh.adopt_expired() == []  # alive (not expired): not taken
    with pytest.raises(ConflictError, match="pid 4242"):
        fresh.resume("red")
    store.take_lease(pool_lease("red"), "other-server:4242:1", -1)  # it stopped renewing: expired
    assert [lease.owner for lease in store.expired_leases()] == ["other-server:4242:1"]
    assert fresh.adopt_expired() == [pool_lease("red")]
    assert fresh.wait(run.id, WAIT).state == states.RUN_DONE
    taken = store.events(run_id=run.id, kind="run.taken_over")
    assert taken and taken[0]["details"]["previous_owner"] == "other-server:4242:1"
    assert store.events(kind="lease.taken")[-1]["details"]["previous_owner"] == "other-server:4242:1"
    assert set(two_pools.installs("red").values()) == {1}
    assert set(two_pools.reboots("red").values()) == {1}
    assert fresh.adopt_expired() == [] and lock_holder(store, "red") is None
    fresh.stop()


def test_a_lease_of_a_dead_process_of_this_machine_is_taken_at_once(store):
    """serve restarted after kill -9 on the same machine does not wait out the lease: the kernel says the owner's
    pid is gone (as it released a dead process's flock). A live process's lease, or another machine's, is kept."""
    import socket
    import subprocess

    import os

    child = subprocess.Popen(["true"])
    child.wait()  # exited and reaped: its pid is gone (a zombie would still answer kill(pid, 0))
    pid = child.pid
    dead = f"{socket.gethostname()}:{pid}:1"
    store.take_lease(pool_lease("p"), dead, 3600)
    lock = PoolLock(store, "p").acquire()
    try:
        assert lock.taken_over == dead and owner_pid(lock_holder(store, "p")) == os.getpid()
    finally:
        lock.release()
    store.take_lease(pool_lease("q"), f"another-machine:{pid}:1", 3600)
    with pytest.raises(ConflictError, match="lease owner another-machine"):
        PoolLock(store, "q").acquire()


def test_a_driver_whose_lease_was_taken_learns_it_and_leaves_the_row_alone(store):
    """Another server took the lease (this one stalled past its expiry): the next renewal fails, `lost` is set (the
    flow stops at its next wait or commit: StopOrLost), a lease.lost event says so, and release() keeps the new
    owner's row."""
    from provisioner.coordinator.locks import StopOrLost

    lock = PoolLock(store, "p", ttl=3).acquire()  # renews every second
    try:
        with store._tx() as conn:  # what take_lease of another server does once the lease has expired
            conn.execute("UPDATE leases SET owner = 'other-server:1:1' WHERE name = ?", (pool_lease("p"),))
        assert lock.lost.wait(WAIT)
        assert StopOrLost(threading.Event(), lock.lost).is_set()
        assert store.events(kind="lease.lost")[-1]["details"]["owner"] == lock.owner
    finally:
        lock.release()
    assert store.lease_holder(pool_lease("p")).owner == "other-server:1:1"


def _asked_evacuation(lab, pool: str) -> int:
    """host.get_vms_which_prevent_evacuation calls about the pool's hosts (the precheck's question per host)."""
    refs = {h.ref for h in lab.world.pools[pool].hosts}
    return len([c for c in lab.world.call_log
                if c[1] == "host.get_vms_which_prevent_evacuation" and refs & set(map(str, c[2]))])


def test_a_started_run_decides_its_precheck_on_the_plan_it_was_made_from(two_pools):
    """FlowService.start plans the run with every precheck (the BMC checks too) and hands the plan to the run's
    PRECHECK: each host's evacuation is asked about once, not once by the start and again by the run."""
    svc = two_pools.service()
    run = svc.start("red", MEDIA)
    assert svc.wait(run.id, WAIT).state == states.RUN_DONE
    assert _asked_evacuation(two_pools, "red") == 3  # three hosts, one question each (six before)
    svc.stop()


def test_a_resumed_run_runs_its_prechecks_again(two_pools):
    """A run resumed at PRECHECK (its driver died right after creating it) has no plan handed over: it asks XAPI."""
    made = runner.start_run(two_pools.store, "red", MEDIA, pools.connect(two_pools.store, "red"))
    assert _asked_evacuation(two_pools, "red") == 3  # the start's plan
    svc = two_pools.service()
    assert svc.resume("red").id == made.id
    assert svc.wait(made.id, WAIT).state == states.RUN_DONE
    assert _asked_evacuation(two_pools, "red") == 6  # and the resumed PRECHECK's own
    svc.stop()
