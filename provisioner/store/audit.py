"""Store mixin: the audit trail (append-only, hash-chained: provisioner/auditchain.py, docs/audit.md).

A row is appended inside BEGIN IMMEDIATE: its id and prev_hash are read from the last row under the write lock, so
two writers cannot fork the chain. Nothing here updates or deletes audit rows.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping

from provisioner import auditchain
from provisioner.store.base import now


def _row(record: Any) -> dict[str, Any]:
    row = dict(record)
    row["details"] = json.loads(row["details"])
    return row


class AuditMixin:
    """add_audit / audit_rows / iter_audit over the audit table (StoreBase supplies _tx, _connect)."""

    def add_audit(self, *, actor: str, actor_kind: str, source: str, action: str, target: str = "",
                  outcome: str = "ok", details: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append one row linked to the last one; the row as written."""
        with self._tx() as conn:  # type: ignore[attr-defined]
            last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            row = {"id": (last["id"] + 1) if last else 1, "ts": now(), "actor": str(actor)[:128],
                   "actor_kind": actor_kind, "source": str(source)[:128], "action": str(action)[:128],
                   "target": str(target)[:1000], "outcome": str(outcome)[:32],
                   "details": json.loads(json.dumps(dict(details or {}), sort_keys=True, default=str))}
            row["prev_hash"] = last["hash"] if last else auditchain.GENESIS
            row["hash"] = auditchain.row_hash(row, row["prev_hash"])
            conn.execute(
                "INSERT INTO audit (id, ts, actor, actor_kind, source, action, target, outcome, details, prev_hash,"
                " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row["id"], row["ts"], row["actor"], row["actor_kind"], row["source"], row["action"], row["target"],
                 row["outcome"], json.dumps(row["details"], sort_keys=True), row["prev_hash"], row["hash"]))
        return row

    def audit_rows(self, *, since_id: int = 0, limit: int = 1000, actor: str | None = None) -> list[dict[str, Any]]:
        """Rows after since_id, oldest first (at most limit)."""
        sql, args = "SELECT * FROM audit WHERE id > ?", [since_id]
        if actor is not None:
            sql += " AND actor = ?"
            args.append(actor)
        rows = self._connect().execute(sql + " ORDER BY id LIMIT ?", [*args, limit]).fetchall()  # type: ignore
        return [_row(r) for r in rows]

    def iter_audit(self, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every row in id order, read in batches (the verifier walks the whole chain)."""
        last = 0
        while True:
            rows = self.audit_rows(since_id=last, limit=batch)
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1]["id"]

    def last_audit_id(self) -> int:
        row = self._connect().execute("SELECT MAX(id) FROM audit").fetchone()  # type: ignore[attr-defined]
        return int(row[0] or 0)
