"""Webhooks end to end against a real HTTP receiver (a thread with http.server) that checks every signature with
its own HMAC code: each notification arrives once per delivery, signed; a receiver that is down gets them after it
comes back; a restart re-sends nothing delivered; a receiver that never takes them is given up with an event.
The pump runs on a simulated clock (its backoff), the HTTP is real."""

from __future__ import annotations

import time

import pytest
from webhook_receiver import SECRET, Receiver

from provisioner import netports
from provisioner.store import Store
from provisioner.webhooks import delivery, events, service, signing


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def a_run(store: Store, run_id: str = "r1", pool: str = "p1") -> None:
    store.create_run(run_id, pool, "xs84", stop_on_failure=False,
                     hosts=[{"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "uuid": "u1", "role": "master"}])


def test_each_event_arrives_once_per_delivery_with_a_valid_signature(store, receiver):
    hook = service.add(store, receiver.url, SECRET)
    pump = delivery.Pump(store, clock=Clock())
    a_run(store)
    store.add_event("step.failed", mac="aa:bb:cc:dd:ee:01", run_id="r1", details={"reason": "evacuate: no room"})
    store.add_event("host.still_installing", mac="aa:bb:cc:dd:ee:01", run_id="r1", details={"minutes": 20})
    store.set_run_state("r1", "blocked", reason="consent needed: PINNED_VM (--consent PINNED_VM)")
    store.add_event("run.progress", run_id="r1")  # not a notification
    counts = pump.round()
    assert counts == {"queued": 4, "delivered": 4, "failed": 0, "given_up": 0}
    assert receiver.bad == []
    assert [g["event"] for g in receiver.got] == ["run.started", "host.step_failed", "run.needs_operator",
                                                  "run.needs_operator"]
    assert [g["body"]["why"] for g in receiver.got[2:]] == ["still_installing", "consent"]
    assert {g["body"]["pool"] for g in receiver.got} == {"p1"} and receiver.got[1]["body"]["mac"] == \
        "aa:bb:cc:dd:ee:01"
    assert len({g["delivery"] for g in receiver.got}) == 4
    assert pump.round()["delivered"] == 0 and len(receiver.got) == 4  # once
    assert {d["state"] for d in store.webhook_deliveries(webhook_id=hook["id"])} == {"delivered"}


def test_a_pool_webhook_gets_only_its_pool_and_chosen_events(store, receiver):
    store.add_pool("p2", "https://10.0.0.2", "root", "x")
    service.add(store, receiver.url, SECRET, pool="p2", wanted=["run.finished"])
    pump = delivery.Pump(store, clock=Clock())
    a_run(store, "r1", "p1")
    a_run(store, "r2", "p2")
    store.set_run_state("r1", "aborted")
    store.set_run_state("r2", "aborted")
    pump.round()
    assert [(g["event"], g["body"]["run_id"], g["body"]["state"]) for g in receiver.got] == [
        ("run.finished", "r2", "aborted")]


def test_a_receiver_that_is_down_gets_them_after_it_comes_back_and_a_restart_resends_nothing(config):
    store = Store(config.db_path)
    port = netports.free_port()
    service.add(store, f"http://127.0.0.1:{port}/hook", SECRET)
    clock = Clock()
    pump = delivery.Pump(store, clock=clock, backoff=(5, 30))
    a_run(store)
    assert pump.round() == {"queued": 1, "delivered": 0, "failed": 1, "given_up": 0}  # connection refused
    (pending,) = store.webhook_deliveries()
    assert pending["state"] == "pending" and pending["attempts"] == 1 and "refused" in pending["last_error"].lower()
    clock.now += 5
    assert pump.round()["failed"] == 1  # still down: next try 30 s later
    store.close()

    receiver = Receiver(port)  # it comes back; and this server restarted meanwhile (a new store, a new pump)
    try:
        store = Store(config.db_path)
        pump = delivery.Pump(store, clock=clock, backoff=(5, 30))
        clock.now += 10
        assert pump.round()["delivered"] == 0 and receiver.got == []  # not due yet: backoff kept across restart
        clock.now += 20
        assert pump.round()["delivered"] == 1
        assert [g["event"] for g in receiver.got] == ["run.started"] and receiver.bad == []
        store.close()
        store = Store(config.db_path)
        clock.now += 3600
        assert delivery.Pump(store, clock=clock).round() == {"queued": 0, "delivered": 0, "failed": 0,
                                                             "given_up": 0}
        assert len(receiver.got) == 1
    finally:
        receiver.stop()
        store.close()


def test_a_receiver_that_never_takes_them_is_given_up_with_an_event(store):
    receiver = Receiver(status=500)
    try:
        service.add(store, receiver.url, SECRET)
        clock = Clock()
        pump = delivery.Pump(store, clock=clock, backoff=(1,), max_attempts=3)
        a_run(store)
        results = []
        for _ in range(4):
            results.append(pump.round())
            clock.now += 1
        assert [r["failed"] for r in results] == [1, 1, 0, 0] and [r["given_up"] for r in results] == [0, 0, 1, 0]
        assert len(receiver.got) == 3 and receiver.bad == []  # signed every time, same delivery id
        assert len({g["delivery"] for g in receiver.got}) == 1
        (gave_up,) = store.events(kind="webhook.gave_up")
        assert gave_up["details"]["event"] == "run.started" and gave_up["details"]["error"] == "HTTP 500"
    finally:
        receiver.stop()


def test_only_history_after_the_first_webhook_is_sent(store, receiver):
    a_run(store, "old")
    store.set_run_state("old", "aborted")
    service.add(store, receiver.url, SECRET)
    assert delivery.Pump(store, clock=Clock()).round()["queued"] == 0


def test_the_signature_check_refuses_a_changed_body_or_an_old_timestamp():
    body = b'{"event":"run.started"}'
    sent = signing.headers(SECRET, body, event="run.started", delivery=7, timestamp=1_000_000)
    assert signing.check(SECRET, sent, body, now=1_000_010) is None
    assert "does not match" in signing.check(SECRET, sent, body + b" ", now=1_000_010)
    assert "does not match" in signing.check("another-secret-0123456", sent, body, now=1_000_010)
    assert "replay" in signing.check(SECRET, sent, body, now=1_000_000 + 301)


def test_webhook_test_sends_one_signed_notification(receiver):
    ok, what = delivery.test_delivery(receiver.url, SECRET)
    assert ok and what == "HTTP 204" and receiver.got[0]["event"] == "webhook.test" and receiver.bad == []


def test_notification_mapping_covers_the_issue_events():
    assert set(events.SOURCES.values()) == set(events.EVENTS)
    assert events.notification({"kind": "run.progress", "id": 1, "ts": "", "details": {}}) is None


def test_the_pump_thread_delivers_without_being_asked(store, receiver):
    service.add(store, receiver.url, SECRET)
    pump = delivery.Pump(store, poll=0.05).start()  # as `serve` runs it (runtime.py), with the real clock
    try:
        a_run(store)
        deadline = time.monotonic() + 30  # a generous bound on a loaded machine, not a timing assertion
        while not receiver.got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pump.stop()
    assert [g["event"] for g in receiver.got] == ["run.started"] and receiver.bad == []
