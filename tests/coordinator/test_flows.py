"""FlowService drives lab reinstalls as it drives upgrade runs (coordinator/service.py): a reinstall interrupted
when the service stops (a `serve` restart) continues when a new service starts on the same store, without a
second host.destroy, a second arming or a second pool.join; one waiting for the operator is left waiting."""

from __future__ import annotations

import threading

import pytest
from labs import MEDIA, PASSWORD, POOL, WAIT, macs, power_on_when_armed, shut_down, upgrade

from provisioner import cryptpw, states
from provisioner.coordinator import pools
from provisioner.coordinator.context import ReinstallTimeouts
from provisioner.coordinator.service import FlowService

HASH = cryptpw.hash_password(PASSWORD, rounds=1000)


def service(lab) -> FlowService:
    return FlowService(lab.store, lab.config, connect=lambda store, name: pools.connect(store, name, timeout=5),
                       clock=lab.world.clock, reinstall_timeouts=ReinstallTimeouts(poll=5))


def calls(lab, method: str) -> int:
    return len([c for c in lab.world.call_log if c[1] == method])


@pytest.mark.parametrize("stop_at", [states.RI_ARM, states.RI_INSTALLING, states.RI_JOIN, states.RI_WAIT_JOINED])
def test_an_interrupted_reinstall_continues_when_a_new_service_starts(lab, stop_at):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    shut_down(lab, mac)
    reached, go_on = threading.Event(), threading.Event()

    def on_commit(record):
        if record.step == stop_at and not reached.is_set():
            reached.set()
            assert go_on.wait(WAIT)  # hold the flow at this step boundary until the service is stopping

    first = service(lab)
    watcher = power_on_when_armed(lab, mac)
    found = first.start_reinstall(mac, POOL, MEDIA, confirm=lab.store.get_host(mac).name, forget=True,
                                  root_password_hash=HASH, host_url=lab.sim.url(mac), on_commit=on_commit)
    assert reached.wait(WAIT)
    first.stop(timeout=0)  # `serve` stopping: the flow leaves at its next wait or step boundary
    go_on.set()
    stopped = first.wait_reinstall(found.id, WAIT)
    assert stopped.step == stop_at and first.reinstalling() == []
    assert first.interrupted_reinstalls() == [found.id]
    assert [e["details"]["reinstall"] for e in lab.store.events(mac=mac, kind="reinstall.interrupted")] == [found.id]

    second = service(lab)  # the next `serve` on the same store
    assert second.resume_reinstalls() == [found.id]
    done = second.wait_reinstall(found.id, WAIT)
    watcher.join(WAIT)
    assert done.step == states.RI_DONE, done.reason
    assert lab.handler.machine(mac).installs() == 2  # the upgrade, then ONE fresh install
    assert len(lab.store.list_attempts(mac)) == 2
    assert calls(lab, "host.destroy") == 1 and calls(lab, "pool.join") == 1
    assert {h.product_version for h in lab.driver.hosts()} == {"8.4.0"} and len(lab.driver.hosts()) == 3
    assert second.resume_reinstalls() == []  # nothing left unfinished
    second.stop()
    assert lab.store.events(kind="reinstall.crashed") == []
