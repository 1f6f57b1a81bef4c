"""Two servers on one real PostgreSQL (issue 22): two FlowServices, each on its own store handle (its own database
sessions, as two `serve` processes), driving a pool run with --updates against the simulator.

CONVERGE's pool side (converge.pool_hash: introduce the run's repository, enable it alone, PUT /bundle) is done by
the run's driver only; the in-process lock there serializes the threads of that one driver, and the pool's lease
(a store row, coordinator/locks.py) keeps every other server from driving the run: while the lease is live the
other server can neither resume the run nor adopt it; once its driver is gone, the server that takes the lease
over reads the journal and the pool (SYNCED, the repository enabled, the hosts' levels) and syncs nothing again.
"""

from __future__ import annotations

import threading
from collections import Counter

import bundles
import pytest
from helpers import FAST, Crash, register_hosts
from labs import MEDIA, PASSWORD, POOL, WAIT, Lab, _serve, stop_lab
from sim_tls import trust

from provisioner import media, states, updates
from provisioner.coordinator import converge, journal, pools
from provisioner.coordinator.locks import lock_holder, pool_lease
from provisioner.coordinator.service import FlowService
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.runtime import Runtime
from provisioner.simulator import update_http
from provisioner.simulator.builder import build_pool, new_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.updates import UpdateConf
from provisioner.store import ConflictError, Store

UPDATES = "xs84u"


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return bundles.signing_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def bundle_syncs(monkeypatch):
    """How many bundles the simulated coordinator unpacked and synced (PUT /bundle bodies): the simulator's own
    count, the product's events are not asked."""
    count = Counter()
    real = update_http._sync_bundle

    def counted(world, pool, req):
        count[pool.name] += 1
        return real(world, pool, req)
    monkeypatch.setattr(update_http, "_sync_bundle", counted)
    return count


@pytest.fixture
def pg_lab(tmp_path, key, pg_url):
    """A 3-host pool at 8.2.1, the media and the update bundle imported, the store on PostgreSQL."""
    config = demo_config(tmp_path).replace(updates_keyring=key.armored, database_url=pg_url)
    store = Store.from_config(config)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    runtime = Runtime(config, store).start()
    world = new_world(Clock(600.0))
    world.update_conf = UpdateConf(gpg_key=key.armored.read_bytes())
    build_pool(world, POOL, hosts=3, version="8.2.1", vms_per_host=1)
    handler, sim = _serve(world, runtime)
    pools.add_pool(store, POOL, sim.master_url(), "root", PASSWORD, **trust(sim))
    driver = pools.connect(store, POOL, timeout=5)
    register_hosts(store, POOL, driver)
    updates.add(store, config, UPDATES, str(bundles.build_bundle(tmp_path / "xs84u.xsbundle", key=key).path))
    lab = Lab(config, store, runtime, world, sim, handler, driver)
    yield lab
    stop_lab(lab)


def _calls(lab: Lab, method: str) -> Counter:
    names = {h.ref: h.name for h in lab.world.pools[POOL].hosts}
    return Counter(names.get(params[1], "?") if len(params) > 1 else "?"
                   for _, m, params in lab.world.call_log if m.removeprefix("Async.") == method)


def test_the_pool_side_of_converge_is_done_once_by_one_of_two_servers(pg_lab, bundle_syncs):
    lab = pg_lab
    assert lab.store.backend == "postgresql"
    other_store = Store.from_config(lab.config)  # the second server's own connections to the one database
    a = FlowService(lab.store, lab.config, clock=lab.world.clock, timeouts=FAST)
    b = FlowService(other_store, lab.config, clock=lab.world.clock, timeouts=FAST)
    master, member = lab.mac(0), lab.mac(1)
    at_converge, go_on = threading.Event(), threading.Event()

    def on_commit(rh):
        if rh.mac == master and rh.step == states.STEP_CONVERGE:  # A is about to sync the pool's repository
            at_converge.set()
            assert go_on.wait(WAIT)
        if rh.mac == member and rh.step == states.STEP_CONVERGE:  # the pool side done: A dies here
            raise Crash("server A killed at the member's CONVERGE")
    try:
        run = a.start(POOL, MEDIA, updates=UPDATES, on_commit=on_commit)
        assert at_converge.wait(WAIT)
        holder = lock_holder(other_store, POOL)
        assert holder is not None
        with pytest.raises(ConflictError, match="another process"):  # B cannot drive the run A drives
            b.resume(POOL)
        assert b.adopt_expired() == [] and lock_holder(other_store, POOL) == holder
        go_on.set()
        a.wait(run.id, WAIT)
        assert journal.last(lab.store, run.id, converge.SYNCED) is not None
        assert lab.store.get_run_host(run.id, member).step == states.STEP_CONVERGE
        assert lab.store.get_run(run.id).state == states.RUN_MEMBERS
        # what a killed A leaves behind: its lease row, no longer renewed (the crash above released it cleanly)
        lab.store.take_lease(pool_lease(POOL), holder, -1)
        assert b.adopt_expired() == [pool_lease(POOL)]
        assert b.wait(run.id, WAIT).state == states.RUN_DONE
    finally:
        a.stop()
        b.stop()
        other_store.close()
    assert lab.store.events(run_id=run.id, kind="run.taken_over")[0]["details"]["previous_owner"] == holder
    assert bundle_syncs[POOL] == 1  # one PUT /bundle for the run, though two servers drove it
    assert sum(_calls(lab, "Repository.introduce_bundle").values()) == 1
    assert sum(_calls(lab, "pool.set_repositories").values()) == 1
    assert set(_calls(lab, "host.apply_updates").values()) == {1} and len(_calls(lab, "host.apply_updates")) == 3
    assert {h.name: lab.handler.machine(h.mac).installs() for h in lab.world.pools[POOL].hosts} == {
        h.name: 1 for h in lab.world.pools[POOL].hosts}
