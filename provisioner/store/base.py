"""The store core: connections, transactions, migrations and the events table (mixins add the records).

SQLite in WAL mode (the default: a file) or PostgreSQL (a `postgresql://` URL: store/postgres.py), one
connection per thread, every read-modify-write inside a write transaction that holds the database's one write
lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory transaction lock), so that the TFTP thread, the HTTP
workers, the coordinator and other servers on the same database can write at once without lost updates. Every
state change writes an `events` row in the same transaction. The SQL is written once (portable, `?` placeholders);
the backend-specific bits are confined to _connect(), _tx(), schema_version() and store/postgres.py.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from provisioner.store import postgres
from provisioner.store.errors import BUSY_ERRORS, DB_ERRORS, INTEGRITY_ERRORS  # noqa: F401 (re-exported)
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
    """A handle on one database (a SQLite file path or a postgresql:// URL); safe to share between threads (each
    thread gets its own connection). `data_dir`: where the files that go with the database live (the credentials
    key, flow locks); default: a SQLite file's directory (a PostgreSQL store needs it given)."""

    def __init__(self, target: str | Path, *, migrate: bool = True, data_dir: str | Path | None = None):
        self.url = str(target) if postgres.is_url(target) else None
        self.backend = "postgresql" if self.url else "sqlite"
        if self.url:
            self.path = None
            self.where = postgres.redact(self.url)
            self.data_dir = Path(data_dir) if data_dir is not None else Path.cwd()
        else:
            self.path = Path(target)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.where = str(self.path)
            self.data_dir = Path(data_dir) if data_dir is not None else self.path.parent
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self.noise = NoiseBudget()  # sampling of unauthenticated events (store.events)
        if migrate:
            if not self.url:
                self._check_file()
            try:
                self.migrate()
            except DB_ERRORS as err:
                self.close()
                raise StoreError(self._fault(err)) from None
            except BaseException:
                self.close()
                raise

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Any:
        """The store a Config names: its database_url (PostgreSQL) or data_dir/provisioner.db (SQLite)."""
        return cls(config.database_url or config.db_path, data_dir=config.data_dir, **kwargs)

    def _fault(self, err: BaseException) -> str:
        if self.url:
            return postgres.fault(self.where, err)
        return _fault(self.path, err)

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

    def _connect(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None and self.url:
            try:
                conn = postgres.Connection(self.url)
            except postgres.Error as err:
                raise StoreError(self._fault(err)) from None
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        elif conn is None:
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
    def _tx(self) -> Iterator[Any]:
        """A write transaction: takes the write lock up front, so read-then-write cannot lose an update."""
        conn = self._connect()
        if self.url:
            with conn.write_transaction(wait=not getattr(self._local, "impatient", False)) as pg:
                yield pg
            return
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

    def tables(self) -> list[str]:
        """The database's tables, sorted (db copy walks them)."""
        conn = self._connect()
        if self.url:
            return conn.tables()
        return [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]

    def columns(self, table: str) -> list[str]:
        """A table's columns in their defined order."""
        conn = self._connect()
        if self.url:
            return conn.columns(table)
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]

    def schema_version(self) -> int:
        conn = self._connect()
        if self.url:
            if not conn.table_exists("schema_version"):
                return 0
            return conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        exists = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()[0]
        if not exists:
            return 0
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return row[0] or 0

    def migrate(self, target: int = SCHEMA_VERSION) -> int:
        """Apply forward migrations up to `target`; refuse a database newer than this code. All in one
        transaction (PostgreSQL DDL is transactional too): a failed migration leaves the database as it was."""
        self.applied = self._migrate(target)
        return target

    def _migrate(self, target: int) -> list[int]:
        applied = []
        with self._tx() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at VARCHAR(32))")
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.where} has schema version {current}, newer than this program's "
                    f"{SCHEMA_VERSION}: upgrade the provisioner package"
                )
            for version in range(current + 1, target + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(postgres.ddl(statement) if self.url else statement)
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now()))
                self._event(conn, "schema.migrated", details={"version": version})
                applied.append(version)
        return applied

    # --- events ---

    @staticmethod
    def _event(conn: Any, kind: str, *, mac: str | None = None, run_id: str | None = None,
               details: Mapping[str, Any] | None = None) -> None:
        conn.execute(
            "INSERT INTO events (ts, mac, run_id, kind, details) VALUES (?, ?, ?, ?, ?)",
            (now(), mac, run_id, kind, json.dumps(dict(details or {}), sort_keys=True, default=str)),
        )
