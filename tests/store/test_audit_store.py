"""The store side of issue 23 on both backends: the audit chain (appended under the write lock, by many threads at
once without forking), named tokens (digest only, unique names), webhooks and their outbox (cursor and rows in one
transaction, nothing queued twice)."""

from __future__ import annotations

import threading

import pytest

from provisioner import audit, auditchain
from provisioner.store import ConflictError, NotFoundError, Store


@pytest.fixture
def db(db_target):
    store = Store(db_target)
    yield store
    store.close()


def test_rows_link_and_concurrent_writers_do_not_fork_the_chain(db):
    def write(n):
        for i in range(10):
            audit.record(db, actor=f"t{n}", actor_kind="token", source="10.0.0.1", action="api.add_host",
                         target=str(i), details={"n": n, "password": "x"})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = list(db.iter_audit(batch=7))
    assert [r["id"] for r in rows] == list(range(1, 41))
    assert rows[0]["prev_hash"] == auditchain.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(rows, rows[1:]))
    assert rows[5]["details"]["password"] == "<redacted>"
    verdict = audit.verify(db)
    assert verdict.ok and verdict.rows == 40 and verdict.head == rows[-1]["hash"] and db.last_audit_id() == 40


def test_an_edited_details_field_is_found(db):
    for i in range(3):
        audit.record(db, actor="a", actor_kind="cli", source="cli@x", action="hosts add", details={"i": i})
    with db._tx() as conn:  # the tamperer, through the same backend
        conn.execute("UPDATE audit SET details = ? WHERE id = 2", ('{"i": 99}',))
    verdict = audit.verify(db)
    assert (verdict.ok, verdict.broken_id, verdict.rows) == (False, 2, 1) and "edited" in verdict.why


def test_tokens_keep_only_the_digest_and_names_are_unique(db):
    db.add_api_token("ci", "viewer", "ab" * 32)
    assert db.find_api_token("ab" * 32)["name"] == "ci" and db.api_token_digest("ci") == "ab" * 32
    with pytest.raises(ConflictError):
        db.add_api_token("ci", "admin", "cd" * 32)
    db.touch_api_token("ci", "2026-01-01T00:00:00.000+00:00")
    assert db.list_api_tokens()[0]["last_used"] == "2026-01-01T00:00:00.000+00:00"
    db.remove_api_token("ci")
    with pytest.raises(NotFoundError):
        db.remove_api_token("ci")
    assert db.find_api_token("ab" * 32) is None


def test_outbox_is_filled_once_from_the_events_after_the_cursor(db):
    db.add_event("run.precheck", run_id="before-any-webhook")
    hook = db.add_webhook("http://127.0.0.1:9/", "fernet:v1:x", pool=None, events=["run.started"])
    assert hook["id"] >= 1 and db.list_webhooks()[0]["events"] == ["run.started"]
    db.add_event("run.precheck", run_id="r1")
    db.add_event("run.progress", run_id="r1")

    def select(event, hooks):
        return [(h["id"], "run.started", {"run": event["run_id"]}) for h in hooks if event["kind"] == "run.precheck"]

    assert db.webhook_enqueue(select, at="2026-01-01T00:00:00.000+00:00") == 1
    assert db.webhook_enqueue(select) == 0  # the cursor moved
    (due,) = db.webhook_due("2026-01-01T00:00:00.000+00:00")
    assert due["url"] == "http://127.0.0.1:9/" and due["payload"] == '{"run": "r1"}'
    db.webhook_result(due["id"], delivered=False, error="refused", next_at="2026-01-01T00:00:05.000+00:00")
    assert db.webhook_due("2026-01-01T00:00:04.000+00:00") == []
    db.webhook_result(due["id"], delivered=False, error="refused", give_up=True)
    assert db.webhook_deliveries()[0]["state"] == "failed" and db.events(kind="webhook.gave_up")
    db.remove_webhook(hook["id"])
    assert db.list_webhooks() == []
