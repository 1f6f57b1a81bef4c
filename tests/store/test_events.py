"""provisioner.store.events (noise sampling) and provisioner.eventwriter (the queue the TFTP thread writes through)."""

from __future__ import annotations

import pytest

from provisioner.eventwriter import DecisionStore, EventWriter
from provisioner.store.events import NoiseBudget, is_noise
from store_backends import write_lock_held


@pytest.mark.parametrize("kind, mac, run_id, noise", [
    ("http.not_found", None, None, True),
    ("tftp.sent", None, None, True),
    ("boot.bad_name", None, None, True),
    ("attempt.unknown_token", None, None, True),
    ("ui.login_failed", None, None, True),
    ("boot.render_failed", "52:54:00:00:00:01", None, False),  # names a registered host
    ("attempt.fetch", "52:54:00:00:00:01", None, False),
    ("xapi.call", None, None, False),
    ("prepare.intent", None, "run-1", False),  # the run journal
    ("http.not_found", None, "run-1", False),
])
def test_what_is_noise(kind, mac, run_id, noise):
    assert is_noise(kind, mac, run_id) is noise


def test_budget_per_address_then_per_kind_and_the_summaries_add_up():
    clock = [0.0]
    budget = NoiseBudget(per_client=(3, 1.0), per_kind=(5, 1.0), clock=lambda: clock[0])
    admitted = [budget.admit("http.not_found", {"client": "10.0.0.1"}) for _ in range(10)]
    assert admitted == [True] * 3 + [False] * 7  # one address: its own budget
    admitted = [budget.admit("http.not_found", {"client": f"10.0.1.{n}"}) for n in range(5)]
    assert admitted == [True, True, False, False, False]  # many addresses: the kind's budget (5) is spent
    assert budget.admit("tftp.refused", {"client": "10.0.0.1", "count": 40, "reason": "not_found"})
    budget.admit("tftp.refused", {"client": "10.0.0.1", "count": 1, "reason": "not_found"})
    budget.admit("tftp.refused", {"client": "10.0.0.1", "count": 1, "reason": "not_found"})
    assert not budget.admit("tftp.refused", {"client": "10.0.0.1", "count": 7, "reason": "not_found"})
    rows = dict(budget.take_pending())
    assert rows["http.not_found"]["count"] == 10 and rows["http.not_found"]["clients"]["10.0.0.1"] == 7
    assert rows["tftp.refused"] == {"sampled": True, "count": 7, "clients": {"10.0.0.1": 7}, "distinct_clients": 1,
                                    "reason": "not_found"}
    assert budget.take_pending() == [] and budget.sampled["http.not_found"] == 10
    clock[0] += 3.0  # refilled
    assert budget.admit("http.not_found", {"client": "10.0.0.1"})


def test_a_full_queue_sheds_and_counts_never_blocks(store):
    writer = EventWriter(store, max_age_days=90, max_rows=10_000, maxsize=1)
    try:
        with write_lock_held(store):  # the writer thread now waits on the lock with the first item
            for n in range(50):
                writer.add_event("run.progress", run_id="r", details={"n": n})
        assert writer.dropped >= 40 and store.event_counters()["dropped"]["run.progress"] == writer.dropped
        assert writer.drain(30)
        written = store.events(run_id="r")
        assert 1 <= len(written) <= 50 - writer.dropped + 1
    finally:
        writer.close()


def test_decision_store_reads_through_and_writes_fetches_at_once_when_the_lock_is_free(store):
    writer = EventWriter(store, max_age_days=90, max_rows=10_000)
    try:
        deciding = DecisionStore(store, writer)
        assert deciding.get_host("52:54:00:00:00:01") is None  # reads go straight to the store
        deciding.add_event("boot.bad_name", details={"client": "10.0.0.1", "name": "x"})
        assert writer.drain(10) and store.events(kind="boot.bad_name")
    finally:
        writer.close()


def test_a_full_queue_never_sheds_the_record_that_binds_an_attempt(store, config, tmp_path):
    """A flood fills the queue; the first boot-config fetch of an attempt still gets in and binds it (else the
    host's own answer file would be refused), while the flood's other records are shed."""
    from helpers import make_media_tree

    from provisioner.boot import attempts
    from provisioner.media import import_media
    from provisioner.model import Host
    store.add_host(Host.from_fields({"mac": "52:54:00:00:00:01", "name": "h1", "pool": "p", "disk": "/dev/sda"}))
    import_media(store, config, "xs84", make_media_tree(tmp_path / "xs84"))
    attempt = attempts.arm(store, config, "52:54:00:00:00:01", "xs84")
    writer = EventWriter(store, max_age_days=90, max_rows=10_000, maxsize=1)
    try:
        with write_lock_held(store):
            for n in range(50):
                writer.add_event("run.progress", run_id="r", details={"n": n})
            writer.add_fetch_event(attempt, {"what": "config"}, boot_client="127.0.0.1")
            writer.add_fetch_event(attempt, {"what": "config"}, boot_client="127.0.0.9")  # a later one: sheddable
        assert writer.dropped >= 49
        assert writer.drain(30)
        assert store.get_attempt(attempt.id).boot_client == "127.0.0.1"
    finally:
        writer.close()
