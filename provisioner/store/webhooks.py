"""Store mixin: webhooks and their outbox (issue 23; provisioner/webhooks/ delivers, docs/audit.md).

The outbox is filled by tailing the events table: `webhook_enqueue` reads events after the stored cursor, turns
those a webhook wants into outbox rows and moves the cursor, all in one transaction (nothing is queued twice, and
nothing is lost over a restart). A delivery stays 'pending' until the receiver answered 2xx ('delivered'), or it
ran out of attempts ('failed').
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping

from provisioner.store.base import NotFoundError, now


def _hook(row: Any) -> dict[str, Any]:
    hook = dict(row)
    hook["events"] = json.loads(hook["events"])
    return hook


class WebhooksMixin:
    """Webhook records, the events cursor and the delivery outbox."""

    def add_webhook(self, url: str, secret: str, *, pool: str | None, events: Iterable[str]) -> dict[str, Any]:
        with self._tx() as conn:  # type: ignore[attr-defined]
            cur = conn.execute("INSERT INTO webhooks (url, secret, pool, events, created_at) VALUES (?, ?, ?, ?, ?)",
                               (url, secret, pool, json.dumps(sorted(events)), now()))
            hook_id = cur.lastrowid  # now: on PostgreSQL it is lastval(), which the next INSERT changes
            if not conn.execute("SELECT 1 FROM webhook_cursor WHERE id = 1").fetchone():
                # deliveries start with what happens from now on, not the whole history
                last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
                conn.execute("INSERT INTO webhook_cursor (id, last_event_id) VALUES (1, ?)", (last,))
            self._event(conn, "webhook.added", details={"id": hook_id, "url": url, "pool": pool})  # type: ignore
            return _hook(conn.execute("SELECT * FROM webhooks WHERE id = ?", (hook_id,)).fetchone())

    def list_webhooks(self) -> list[dict[str, Any]]:
        return [_hook(r) for r in self._connect().execute(  # type: ignore[attr-defined]
            "SELECT * FROM webhooks ORDER BY id").fetchall()]

    def remove_webhook(self, webhook_id: int) -> None:
        with self._tx() as conn:  # type: ignore[attr-defined]
            if conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount == 0:
                raise NotFoundError(f"no webhook with id {webhook_id} (see: provisioner webhooks list)")
            conn.execute("UPDATE webhook_outbox SET state = 'failed', last_error = 'webhook removed' "
                         "WHERE webhook_id = ? AND state = 'pending'", (webhook_id,))
            self._event(conn, "webhook.removed", details={"id": webhook_id})  # type: ignore[attr-defined]

    def webhook_enqueue(self, select: Callable[[Mapping[str, Any], list[dict[str, Any]]],
                                               list[tuple[int, str, dict[str, Any]]]],
                        *, at: str | None = None, batch: int = 500) -> int:
        """Turn events after the cursor into outbox rows: select(event, webhooks) -> [(webhook id, event name,
        payload)]; `event` carries its run's pool (None without a run). First attempt due `at` (default now). The
        deliveries queued."""
        queued = 0
        with self._tx() as conn:  # type: ignore[attr-defined]
            cursor = conn.execute("SELECT last_event_id FROM webhook_cursor WHERE id = 1").fetchone()
            if cursor is None:
                return 0  # no webhook was ever added
            hooks = [_hook(r) for r in conn.execute("SELECT * FROM webhooks ORDER BY id").fetchall()]
            rows = conn.execute("SELECT e.id, e.ts, e.mac, e.run_id, e.kind, e.details, r.pool FROM events e "
                                "LEFT JOIN runs r ON r.id = e.run_id WHERE e.id > ? ORDER BY e.id LIMIT ?",
                                (cursor[0], batch)).fetchall()
            stamp = now()
            due = at or stamp
            for row in rows:
                event = {**dict(row), "details": json.loads(row["details"])}
                for hook_id, name, payload in select(event, hooks):
                    conn.execute(
                        "INSERT INTO webhook_outbox (webhook_id, event_id, event, payload, attempts, next_at, state,"
                        " created_at) VALUES (?, ?, ?, ?, 0, ?, 'pending', ?) ON CONFLICT DO NOTHING",
                        (hook_id, row["id"], name, json.dumps(payload, sort_keys=True), due, stamp))
                    queued += 1
            if rows:
                conn.execute("UPDATE webhook_cursor SET last_event_id = ? WHERE id = 1", (rows[-1]["id"],))
        return queued

    def webhook_due(self, at: str, limit: int = 50) -> list[dict[str, Any]]:
        """Pending deliveries whose next attempt is due at `at`, with their webhook's url and secret."""
        rows = self._connect().execute(  # type: ignore[attr-defined]
            "SELECT o.*, w.url, w.secret FROM webhook_outbox o JOIN webhooks w ON w.id = o.webhook_id "
            "WHERE o.state = 'pending' AND o.next_at <= ? ORDER BY o.next_at, o.id LIMIT ?", (at, limit)).fetchall()
        return [dict(r) for r in rows]

    def webhook_result(self, delivery_id: int, *, delivered: bool, error: str | None = None,
                       next_at: str | None = None, give_up: bool = False) -> None:
        """Record one attempt: delivered; or failed with the next attempt at next_at; or given up (an event)."""
        with self._tx() as conn:  # type: ignore[attr-defined]
            if delivered:
                conn.execute("UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, "
                             "delivered_at = ?, last_error = NULL WHERE id = ?", (now(), delivery_id))
                return
            state = "failed" if give_up else "pending"
            conn.execute("UPDATE webhook_outbox SET state = ?, attempts = attempts + 1, last_error = ?, "
                         "next_at = COALESCE(?, next_at) WHERE id = ?", (state, error, next_at, delivery_id))
            if give_up:
                row = conn.execute("SELECT webhook_id, event, event_id, attempts FROM webhook_outbox WHERE id = ?",
                                   (delivery_id,)).fetchone()
                self._event(conn, "webhook.gave_up", details={**dict(row), "delivery": delivery_id,  # type: ignore
                                                              "error": error})

    def webhook_deliveries(self, *, webhook_id: int | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM webhook_outbox", []
        if webhook_id is not None:
            sql, args = sql + " WHERE webhook_id = ?", [webhook_id]
        return [dict(r) for r in self._connect().execute(sql + " ORDER BY id", args).fetchall()]  # type: ignore
