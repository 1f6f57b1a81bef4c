"""The store core: connections, transactions, migrations and the events table (mixins add the records).

SQLite in WAL mode, one connection per thread, every read-modify-write inside BEGIN IMMEDIATE so that the
TFTP thread, the HTTP workers and the coordinator can write at once without lost updates. Every state
change writes an `events` row in the same transaction. The SQL is kept portable (a PostgreSQL backend will
follow); the SQLite-only bits (PRAGMAs, BEGIN IMMEDIATE) are confined to _connect() and _tx().
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from provisioner.store.schema import SCHEMA_VERSION, MIGRATIONS


class StoreError(Exception):
    """Base of the store's errors."""


class NotFoundError(StoreError, LookupError):
    """The record does not exist."""


class ConflictError(StoreError, ValueError):
    """The change would break a uniqueness rule (MAC, or pool + name)."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class StoreBase:
    """A handle on one database file; safe to share between threads (each thread gets its own connection)."""

    def __init__(self, path: str | Path, *, migrate: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if migrate:
            self.migrate()

    # --- connections and transactions ---

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: takes the write lock up front, so read-then-write cannot lose an update."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # --- schema ---

    def schema_version(self) -> int:
        conn = self._connect()
        exists = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()[0]
        if not exists:
            return 0
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return row[0] or 0

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Apply forward migrations up to `target`; refuse a database newer than this code."""
        with self._tx() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at VARCHAR(32))")
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {current}, newer than this program's "
                    f"{SCHEMA_VERSION}: upgrade the provisioner package"
                )
            for version in range(current + 1, target + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now()))
                self._event(conn, "schema.migrated", details={"version": version})
        return target

    # --- events ---

    @staticmethod
    def _event(conn: sqlite3.Connection, kind: str, *, mac: str | None = None, run_id: str | None = None,
               details: Mapping[str, Any] | None = None) -> None:
        conn.execute(
            "INSERT INTO events (ts, mac, run_id, kind, details) VALUES (?, ?, ?, ?, ?)",
            (now(), mac, run_id, kind, json.dumps(dict(details or {}), sort_keys=True, default=str)),
        )

    def add_event(self, kind: str, *, mac: str | None = None, run_id: str | None = None,
                  details: Mapping[str, Any] | None = None) -> None:
        with self._tx() as conn:
            self._event(conn, kind, mac=mac, run_id=run_id, details=details)

    def events(self, *, mac: str | None = None, run_id: str | None = None, kind: str | None = None,
               since_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT id, ts, mac, run_id, kind, details FROM events WHERE id > ?"
        args: list[Any] = [since_id]
        for column, value in (("mac", mac), ("run_id", run_id), ("kind", kind)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        rows = self._connect().execute(sql, args).fetchall()
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]
