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

from provisioner.store.events import NoiseBudget
from provisioner.store.schema import SCHEMA_VERSION, MIGRATIONS


class StoreError(Exception):
    """Base of the store's errors."""


class NotFoundError(StoreError, LookupError):
    """The record does not exist."""


class ConflictError(StoreError, ValueError):
    """The change would break a uniqueness rule (MAC, or pool + name)."""


BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another writer's lock (the TFTP thread never does: eventwriter)


def _fault(path: Path, err: sqlite3.Error) -> str:
    """One line naming the database file, what is wrong with it and what to do."""
    text = str(err)
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return (f"database {path} cannot be written ({text}): make it, its -wal/-shm files and its directory "
                "writable by this user")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"database {path} is damaged or not a SQLite file ({text}): restore it from a backup, or move "
                "it away to start with an empty one")
    if "disk is full" in text or "disk I/O" in text:
        return f"database {path}: {text}: free space on its file system"
    return f"database {path}: {text}"


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
        self.noise = NoiseBudget()  # sampling of unauthenticated events (store.events)
        if migrate:
            self._check_file()
            try:
                self.migrate()
            except sqlite3.Error as err:
                self.close()
                raise StoreError(_fault(self.path, err)) from None

    def _check_file(self) -> None:
        """Refuse a 0-byte file, a file that is not SQLite, and a database that is not ours, before any write:
        SQLite would silently turn a 0-byte file into a fresh empty database (issue 15 finding 11)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return  # a new database
        if size == 0:
            raise StoreError(f"database {self.path} is empty (0 bytes), so it is not a provisioner database; "
                             "restore it from a backup, or remove it to start with an empty one")
        try:  # read-only, and without _connect()'s PRAGMA journal_mode=WAL, which would rewrite a foreign file
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                probe.close()
        except sqlite3.Error as err:
            raise StoreError(_fault(self.path, err)) from None
        if tables and "schema_version" not in tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise StoreError(f"database {self.path} is not a provisioner database (tables: {shown}); point "
                             "data_dir at another directory, or move that file away")

    # --- connections and transactions ---

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except sqlite3.Error:  # not a database, read-only, ...: the caller says which, one line
                conn.close()
                raise
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
            if conn.in_transaction:  # SQLite already rolled back on SQLITE_FULL / IOERR: keep the real error
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:  # a COMMIT that fails (disk full) must not leave the connection in a transaction
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
