"""The audit trail's hash chain (docs/audit.md): the canonical form of a row and the hash linking it to the one before.

hash = sha256(prev_hash + "\\n" + canonical JSON of the row's fields), hex. The canonical JSON has sorted keys, no
spaces and ASCII only, so any program can recompute it. The first row's prev_hash is GENESIS. Editing any field of
a row, or deleting or reordering rows, makes a later check fail at that row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

GENESIS = "0" * 64
FIELDS = ("id", "ts", "actor", "actor_kind", "source", "action", "target", "outcome", "details")


def canonical(row: Mapping[str, Any]) -> str:
    """The row's hashed fields as canonical JSON (details as the parsed JSON object, not its stored text)."""
    return json.dumps({name: row[name] for name in FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, default=str)


def row_hash(row: Mapping[str, Any], prev_hash: str) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical(row)).encode("ascii")).hexdigest()


def first_break(rows: Iterable[Mapping[str, Any]], prev_hash: str = GENESIS) -> tuple[int, str] | None:
    """(row id, why) of the first row that breaks the chain, or None when every row links. Rows in id order."""
    for row in rows:
        if row["prev_hash"] != prev_hash:
            return row["id"], (f"its prev_hash {row['prev_hash'][:16]}... is not the hash of the row before it "
                               f"({prev_hash[:16]}...): a row before it was deleted or inserted")
        expected = row_hash(row, prev_hash)
        if row["hash"] != expected:
            return row["id"], ("its content does not match its hash: the row was edited after it was written "
                               f"(stored {row['hash'][:16]}..., computed {expected[:16]}...)")
        prev_hash = row["hash"]
    return None
