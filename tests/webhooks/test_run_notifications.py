"""Webhooks of a real upgrade run: the simulated pool, the real boot service and PXE machines (labs.make_lab), the
runner, and the pump thread as `serve` runs it, delivering to a receiver that checks every signature itself."""

from __future__ import annotations

import time

from helpers import FAST
from labs import MEDIA, POOL
from webhook_receiver import SECRET, Receiver

from provisioner import states
from provisioner.coordinator import runner
from provisioner.webhooks import delivery, service


def test_a_run_with_a_failed_member_notifies_started_step_failed_and_finished(lab):
    receiver = Receiver()
    pump = None
    try:
        service.add(lab.store, receiver.url, SECRET, pool=POOL)
        pump = delivery.Pump(lab.store, poll=0.1).start()
        lab.handler.inject(lab.mac(1), installer_fails=True)
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, stop_on_failure=False)
        final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                              timeouts=FAST).run()
        assert final.state == states.RUN_DONE_WITH_FAILURES
        deadline = time.monotonic() + 60  # a bound for a loaded machine, not a timing assertion
        while not any(g["event"] == "run.finished" for g in receiver.got) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if pump is not None:
            pump.stop()
        receiver.stop()
    assert receiver.bad == []
    got = [(g["event"], g["body"]["run_id"], g["body"]["pool"]) for g in receiver.got]
    assert got[0] == ("run.started", started.id, POOL) and got[-1] == ("run.finished", started.id, POOL)
    failed = [g for g in receiver.got if g["event"] == "host.step_failed"]
    assert [g["body"]["mac"] for g in failed] == [lab.mac(1)]
    # the failing installer ran past FAST's "still installing" note: the operator is told, as the issue asks
    assert {g["body"]["why"] for g in receiver.got if g["event"] == "run.needs_operator"} <= {"still_installing"}
    assert receiver.got[-1]["body"]["state"] == states.RUN_DONE_WITH_FAILURES
    assert len({g["delivery"] for g in receiver.got}) == len(receiver.got)  # each once


def test_a_run_waiting_for_consent_tells_the_operator_why(lab):
    from provisioner.simulator import devices

    receiver = Receiver()
    try:
        service.add(lab.store, receiver.url, SECRET)
        pool = lab.world.pools[POOL]
        db, host = pool.db, pool.hosts[1].ref
        vm = next(r for r in db.find("VM", resident_on=host) if not db.get("VM", r)["is_control_domain"])
        devices.pin_vm(pool, vm, devices.PCI)  # a consent-level precheck: PINNED_VM
        started = runner.start_run(lab.store, POOL, MEDIA, lab.driver, stop_on_failure=False)
        final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                              timeouts=FAST).run()
        assert final.state == states.RUN_BLOCKED
        delivery.Pump(lab.store).round()
    finally:
        receiver.stop()
    assert receiver.bad == [] and [g["event"] for g in receiver.got] == ["run.started", "run.needs_operator"]
    body = receiver.got[1]["body"]
    assert body["why"] == "consent" and "PINNED_VM" in body["details"]["reason"]
