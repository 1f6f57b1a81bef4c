"""The only database module: schema, forward migrations, hosts, media and the events table.

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
from typing import Any, Callable, Iterable, Iterator, Mapping

from provisioner.model import Host, Media, ValidationError

# Forward-only migrations; index + 1 is the schema version. Never edit a shipped entry: append a new one.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: host registry and the event log
        """CREATE TABLE hosts (
            mac VARCHAR(17) PRIMARY KEY,
            name VARCHAR(63) NOT NULL,
            pool VARCHAR(63) NOT NULL,
            disk VARCHAR(255),
            firmware VARCHAR(8) NOT NULL,
            ip VARCHAR(45),
            notes TEXT NOT NULL,
            created_at VARCHAR(32) NOT NULL,
            updated_at VARCHAR(32) NOT NULL,
            UNIQUE (pool, name))""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts VARCHAR(32) NOT NULL,
            mac VARCHAR(17),
            run_id VARCHAR(64),
            kind VARCHAR(64) NOT NULL,
            details TEXT NOT NULL)""",
        "CREATE INDEX events_mac ON events (mac, id)",
        "CREATE INDEX events_run ON events (run_id, id)",
    ),
    (  # 2: installation media
        """CREATE TABLE media (
            name VARCHAR(64) PRIMARY KEY,
            path TEXT NOT NULL,
            product_name VARCHAR(128) NOT NULL,
            product_version VARCHAR(32) NOT NULL,
            platform_version VARCHAR(32) NOT NULL,
            build VARCHAR(64),
            boot_files TEXT NOT NULL,
            added_at VARCHAR(32) NOT NULL)""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """Base of the store's errors."""


class NotFoundError(StoreError, LookupError):
    """The record does not exist."""


class ConflictError(StoreError, ValueError):
    """The change would break a uniqueness rule (MAC, or pool + name)."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _host_from_row(row: sqlite3.Row) -> Host:
    return Host(mac=row["mac"], name=row["name"], pool=row["pool"], disk=row["disk"],
                firmware=row["firmware"], ip=row["ip"], notes=row["notes"])


def _media_from_row(row: sqlite3.Row) -> Media:
    return Media(name=row["name"], path=row["path"], product_name=row["product_name"],
                 product_version=row["product_version"], platform_version=row["platform_version"],
                 build=row["build"], boot_files=tuple(json.loads(row["boot_files"])), added_at=row["added_at"])


class Store:
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

    # --- hosts ---

    @staticmethod
    def _check_unique(conn: sqlite3.Connection, host: Host, *, replacing: str | None = None) -> None:
        if replacing is None and conn.execute("SELECT 1 FROM hosts WHERE mac = ?", (host.mac,)).fetchone():
            raise ConflictError(f"a host with MAC {host.mac} is already registered")
        row = conn.execute("SELECT mac FROM hosts WHERE pool = ? AND name = ?", (host.pool, host.name)).fetchone()
        if row and row["mac"] != replacing:
            raise ConflictError(f"pool {host.pool!r} already has a host named {host.name!r} (MAC {row['mac']})")

    @staticmethod
    def _insert_host(conn: sqlite3.Connection, host: Host) -> None:
        stamp = now()
        conn.execute(
            "INSERT INTO hosts (mac, name, pool, disk, firmware, ip, notes, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (host.mac, host.name, host.pool, host.disk, host.firmware, host.ip, host.notes, stamp, stamp),
        )

    def add_host(self, host: Host) -> Host:
        with self._tx() as conn:
            self._check_unique(conn, host)
            self._insert_host(conn, host)
            self._event(conn, "host.added", mac=host.mac, details=host.as_dict())
        return host

    def add_hosts(self, hosts: Iterable[Host], *, source: str = "import") -> list[Host]:
        """Insert all hosts or none (the caller has validated them and checked duplicates within the batch)."""
        hosts = list(hosts)
        with self._tx() as conn:
            for host in hosts:
                self._check_unique(conn, host)
                self._insert_host(conn, host)
                self._event(conn, "host.added", mac=host.mac, details={**host.as_dict(), "source": source})
        return hosts

    def conflicts(self, hosts: Iterable[Host]) -> dict[str, str]:
        """MAC -> why it cannot be inserted, for each host that clashes with the registry (read only)."""
        conn = self._connect()
        problems: dict[str, str] = {}
        for host in hosts:
            try:
                self._check_unique(conn, host)
            except ConflictError as exc:
                problems[host.mac] = str(exc)
        return problems

    def get_host(self, mac: str) -> Host | None:
        row = self._connect().execute("SELECT * FROM hosts WHERE mac = ?", (mac,)).fetchone()
        return _host_from_row(row) if row else None

    def list_hosts(self, pool: str | None = None) -> list[Host]:
        if pool is None:
            rows = self._connect().execute("SELECT * FROM hosts ORDER BY pool, name").fetchall()
        else:
            rows = self._connect().execute("SELECT * FROM hosts WHERE pool = ? ORDER BY name", (pool,)).fetchall()
        return [_host_from_row(row) for row in rows]

    def update_host(self, mac: str, changes: Mapping[str, Any] | Callable[[Host], Mapping[str, Any]]) -> Host:
        """Apply `changes` (or changes computed from the current record) atomically; the MAC cannot change."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM hosts WHERE mac = ?", (mac,)).fetchone()
            if row is None:
                raise NotFoundError(f"no host with MAC {mac} is registered")
            old = _host_from_row(row)
            changes = dict(changes(old) if callable(changes) else changes)
            if "mac" in changes and changes["mac"] != mac:
                try:
                    same = Host.from_fields({**old.as_dict(), "mac": changes["mac"]}).mac == mac
                except ValidationError:
                    same = False
                if not same:
                    raise ValidationError("cannot be changed; remove the host and add it again", "mac")
                changes.pop("mac")
            new = old.with_changes(changes)
            self._check_unique(conn, new, replacing=mac)
            conn.execute(
                "UPDATE hosts SET name = ?, pool = ?, disk = ?, firmware = ?, ip = ?, notes = ?, updated_at = ? "
                "WHERE mac = ?",
                (new.name, new.pool, new.disk, new.firmware, new.ip, new.notes, now(), mac),
            )
            diff = {k: [getattr(old, k), v] for k, v in new.as_dict().items() if getattr(old, k) != v}
            self._event(conn, "host.updated", mac=mac, details=diff)
        return new

    def remove_host(self, mac: str) -> Host:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM hosts WHERE mac = ?", (mac,)).fetchone()
            if row is None:
                raise NotFoundError(f"no host with MAC {mac} is registered")
            conn.execute("DELETE FROM hosts WHERE mac = ?", (mac,))
            host = _host_from_row(row)
            self._event(conn, "host.removed", mac=mac, details=host.as_dict())
        return host

    # --- media ---

    def add_media(self, media: Media) -> Media:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM media WHERE name = ?", (media.name,)).fetchone():
                raise ConflictError(f"media {media.name!r} already exists")
            conn.execute(
                "INSERT INTO media (name, path, product_name, product_version, platform_version, build, "
                "boot_files, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (media.name, media.path, media.product_name, media.product_version, media.platform_version,
                 media.build, json.dumps(list(media.boot_files)), media.added_at or now()),
            )
            self._event(conn, "media.added", details=media.as_dict())
        return self.get_media(media.name)

    def get_media(self, name: str) -> Media | None:
        row = self._connect().execute("SELECT * FROM media WHERE name = ?", (name,)).fetchone()
        return _media_from_row(row) if row else None

    def list_media(self) -> list[Media]:
        return [_media_from_row(r) for r in self._connect().execute("SELECT * FROM media ORDER BY name")]

    def remove_media(self, name: str) -> Media:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM media WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no media named {name!r}")
            conn.execute("DELETE FROM media WHERE name = ?", (name,))
            self._event(conn, "media.removed", details={"name": name})
        return _media_from_row(row)
