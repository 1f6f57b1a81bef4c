"""RunService: pool runs on background threads (parallel pools, one run per pool, abort, stop and resume_all)
against the XAPI simulator, the real boot service and simulated PXE machines."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from helpers import FAST, register_hosts
from provisioner import media, states
from provisioner.coordinator import pools, runner
from provisioner.coordinator.service import PoolLock, RunService, lock_holder
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.runtime import Runtime
from provisioner.simulator.builder import build_pool, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.machine import make_boot_handler
from provisioner.simulator.world import World
from provisioner.store import ConflictError, NotFoundError, Store

MEDIA, PASSWORD = "xs84", "s3cret-pw"
WAIT = 300  # real seconds: a generous bound, never reached when things work


@dataclass
class World2:
    """Several simulated pools in one world, served, with their hosts discovered into one store."""

    config: object
    store: Store
    runtime: Runtime
    world: World
    sim: object
    handler: object
    names: list[str] = field(default_factory=list)

    def macs(self, pool: str) -> list[str]:
        return [h.mac for h in self.world.pools[pool].hosts]

    def reboots(self, pool: str) -> dict[str, int]:
        refs = {h.ref: h.mac for h in self.world.pools[pool].hosts}
        counts = dict.fromkeys(refs.values(), 0)
        for _, method, params in self.world.call_log:
            if method == "host.reboot":
                for ref, mac in refs.items():
                    if ref in params:
                        counts[mac] += 1
        return counts

    def installs(self, pool: str) -> dict[str, int]:
        return {mac: self.handler.machine(mac).installs() for mac in self.macs(pool)}

    def versions(self, pool: str) -> set[str]:
        db = self.world.pools[pool].db
        return {db.get("host", h.ref)["software_version"]["product_version"] for h in self.world.pools[pool].hosts}

    def service(self, **kw) -> RunService:
        return RunService(self.store, self.config, clock=self.world.clock, timeouts=FAST, **kw)


def make_world(tmp_path, names=("red", "blue"), hosts: int = 3, speed: float = 600.0, **overrides) -> World2:
    config = demo_config(tmp_path)
    config = config.replace(**overrides) if overrides else config
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    world = World(Clock(speed))
    for name in names:
        build_pool(world, name, hosts=hosts, version="8.2.1", vms_per_host=1)
    # the server's own RunService (what the REST API drives) runs on the simulator's clock
    runtime = Runtime(config, store, runs=RunService(store, config, clock=world.clock, timeouts=FAST)).start()
    handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url)
    world.boot_handler = handler
    sim = serve_world(world)
    for name in names:
        pools.add_pool(store, name, sim.master_url(name), "root", PASSWORD)
        driver = pools.connect(store, name, timeout=5)
        register_hosts(store, name, driver)
        driver.close()
    return World2(config, store, runtime, world, sim, handler, list(names))


def stop_world(w: World2) -> None:
    w.handler.stop()
    w.sim.stop()
    w.runtime.stop()
    w.store.close()


@pytest.fixture
def lab(tmp_path):
    made = make_world(tmp_path)
    yield made
    stop_world(made)


def test_two_pools_upgraded_at_once(lab):
    svc = lab.service()
    red_rebooting, blue_rebooting = threading.Event(), threading.Event()

    def hold(mine: threading.Event, other: threading.Event):
        def on_commit(rh):
            if rh.role == "master" and rh.step == states.STEP_INSTALLING:
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
        assert lab.versions(pool) == {"8.4.0"}
        assert set(lab.installs(pool).values()) == {1}
        assert set(lab.reboots(pool).values()) == {1}
    progress = lab.store.events(run_id=red.id, kind="run.progress")
    assert progress and all("line" in e["details"] for e in progress)
    svc.stop()


def test_second_start_on_same_pool_refused(lab):
    svc = lab.service()
    gate = threading.Event()
    run = svc.start("red", MEDIA, on_commit=lambda rh: gate.wait(WAIT))
    with pytest.raises(ConflictError, match="already being upgraded here"):
        svc.start("red", MEDIA)
    with pytest.raises(ConflictError, match="already being upgraded here"):
        svc.resume("red")
    other = lab.service()  # another process on the same store: the pool lock file refuses it
    with pytest.raises(ConflictError, match="another process"):
        other.resume("red")
    gate.set()
    assert svc.wait(run.id, WAIT).state == states.RUN_DONE
    assert set(lab.installs("red").values()) == {1}
    with pytest.raises(NotFoundError):
        svc.resume("red")  # nothing left to resume


def test_abort_stops_before_the_next_destructive_step(lab):
    svc = lab.service()
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
    assert set(lab.reboots("blue").values()) == {0}
    assert not [c for c in lab.world.call_log if c[1] in ("host.disable", "host.evacuate")]
    with pytest.raises(NotFoundError):
        svc.abort("blue")


def test_resume_all_after_stop(lab):
    svc = lab.service()
    member_installing = threading.Event()
    macs = lab.macs("red")

    def on_commit(rh):
        if rh.mac == macs[1] and rh.step == states.STEP_INSTALLING:
            member_installing.set()
    run = svc.start("red", MEDIA, on_commit=on_commit)
    assert member_installing.wait(WAIT)
    assert svc.stop() == [run.id]
    assert svc.running() == []
    interrupted = lab.store.get_run(run.id)
    assert interrupted.state == states.RUN_MEMBERS
    assert lab.store.events(run_id=run.id, kind="run.interrupted")
    with pytest.raises(ConflictError, match="stopping"):
        svc.start("blue", MEDIA)
    fresh = lab.service()  # a restarted server
    assert fresh.resume_all() == [run.id]
    assert fresh.wait(run.id, WAIT).state == states.RUN_DONE
    assert lab.versions("red") == {"8.4.0"}
    assert set(lab.installs("red").values()) == {1}
    assert set(lab.reboots("red").values()) == {1}
    assert fresh.resume_all() == []
    fresh.stop()


def test_crashed_run_thread_is_recorded_and_resumable(lab):
    svc = lab.service()

    def on_commit(rh):
        if rh.step == states.STEP_ARM:
            raise RuntimeError("disk full")
    run = svc.start("blue", MEDIA, on_commit=on_commit)
    assert svc.wait(run.id, WAIT).state == states.RUN_MASTER
    crash = lab.store.events(run_id=run.id, kind="run.crashed")
    assert crash and "RuntimeError: disk full" in crash[0]["details"]["error"]
    assert svc.resume("blue").id == run.id
    assert svc.wait(run.id, WAIT).state == states.RUN_DONE
    assert set(lab.installs("blue").values()) == {1}
    assert runner.report(lab.store, run.id)["hosts"][0]["step"] == states.STEP_DONE


def test_start_refused_when_plan_fails_to_start_leaves_pool_free(lab):
    svc = lab.service()
    with pytest.raises(NotFoundError):
        svc.start("nope", MEDIA)
    run = svc.start("red", MEDIA)  # the failed claim released nothing it should not have
    assert svc.wait(run.id, WAIT).state == states.RUN_DONE


def test_lock_holder_names_the_driving_process_without_taking_the_lock(store):
    import os

    assert lock_holder(store, "p") is None  # no lock file yet
    held = PoolLock(store, "p").acquire()
    try:
        assert lock_holder(store, "p") == os.getpid()
        assert lock_holder(store, "other") is None
        with pytest.raises(ConflictError, match="another process"):  # asking did not take or break the lock
            PoolLock(store, "p").acquire()
    finally:
        held.release()
    assert lock_holder(store, "p") is None
