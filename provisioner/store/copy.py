"""`provisioner db copy`: every row of one store into another (SQLite -> PostgreSQL, or back), then proven there.

The target is brought to the source's schema version with the same migrations, then ONE transaction on the
target empties its tables (refused unless `replace` when they hold anything but a fresh schema's own rows)
and inserts every row of every table with its ids (identity sequences then follow the largest id). After the
commit, each table's row count and checksum are computed on both sides and compared; only then is the target
migrated on to this program's schema. The source is only read. (docs/store.md "Moving a store")
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from provisioner.store.base import StoreBase, StoreError
from provisioner.store.schema import SCHEMA_VERSION

BATCH = 1000  # rows per INSERT round trip
FRESH_EVENT_KINDS = ("schema.migrated",)  # what a freshly migrated, still empty store holds


@dataclass(frozen=True)
class TableCheck:
    table: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    schema_version: int  # the source's (and, after the copy, the target's before migrating on)
    migrated_to: int  # the target's schema version at the end
    tables: tuple[TableCheck, ...]

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "schema_version": self.schema_version,
                "migrated_to": self.migrated_to, "ok": self.ok, "rows": sum(t.source_rows for t in self.tables),
                "tables": [t.as_dict() for t in self.tables]}


def parse_target(text: str) -> str | Path:
    """`sqlite:PATH` -> the path; a postgresql:// URL as it is; anything else: ValueError naming both forms."""
    if text.startswith("sqlite:"):
        path = text[len("sqlite:"):]
        if not path:
            raise ValueError("sqlite: needs a file path (sqlite:/var/lib/provisioner/provisioner.db)")
        return Path(path)
    if text.startswith(("postgresql://", "postgres://")):
        return text
    raise ValueError(f"{text!r} is not a database: give sqlite:PATH or a postgresql://user@host/database URL")


def _value(value: Any) -> Any:
    """One column's value as both backends read it back: integers and text as they are, NULL as None."""
    if value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def table_check(store: StoreBase, table: str, columns: list[str]) -> tuple[int, str]:
    """(row count, checksum): SHA-256 over the sorted SHA-256 of each row's JSON (order-independent)."""
    cols = ", ".join(columns)
    digests = sorted(hashlib.sha256(json.dumps([_value(v) for v in row], separators=(",", ":")).encode()).digest()
                     for row in store._connect().execute(f"SELECT {cols} FROM {table}"))
    total = hashlib.sha256()
    for digest in digests:
        total.update(digest)
    return len(digests), total.hexdigest()


def _is_fresh(conn: Any, table: str) -> bool:
    if table == "schema_version":
        return True
    if table == "events":
        marks = ", ".join("?" for _ in FRESH_EVENT_KINDS)
        return conn.execute(f"SELECT COUNT(*) FROM events WHERE kind NOT IN ({marks})",
                            FRESH_EVENT_KINDS).fetchone()[0] == 0
    return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def _rows(store: StoreBase, table: str, columns: list[str]) -> Iterable[tuple]:
    return (tuple(row) for row in store._connect().execute(f"SELECT {', '.join(columns)} FROM {table}"))


def copy_store(source: StoreBase, target: StoreBase, *, replace: bool = False) -> CopyReport:
    """Copy every row of `source` into `target` (both opened with migrate=False) and compare (module docstring)."""
    version = source.schema_version()
    if version == 0:
        raise StoreError(f"{source.where} holds no provisioner database (no schema_version table)")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{source.where} has schema version {version}, newer than this program's {SCHEMA_VERSION}: "
                         "upgrade the provisioner package")
    current = target.schema_version()
    if current > version:
        raise StoreError(f"{target.where} is at schema {current}, ahead of the source's {version}: bring the source "
                         "up first (`provisioner db migrate` with a config pointing at it), then copy")
    target.migrate(target=version)
    tables = source.tables()
    missing = sorted(set(tables) - set(target.tables()))
    if missing:
        raise StoreError(f"{target.where} lacks table(s) {', '.join(missing)} at schema {version}: the source has "
                         "tables this program does not create; copy with the program that made them")
    layout = {t: source.columns(t) for t in tables}
    with target._tx() as conn:
        if not replace:
            busy = [t for t in target.tables() if not _is_fresh(conn, t)]
            if busy:
                raise StoreError(f"{target.where} is not empty (rows in {', '.join(busy)}): copy into an empty "
                                 "database, or pass --replace to delete what is there (in the same transaction)")
        for table in target.tables():
            conn.execute(f"DELETE FROM {table}")
        for table in tables:
            columns = layout[table]
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})")
            batch: list[tuple] = []
            for row in _rows(source, table, columns):
                batch.append(row)
                if len(batch) >= BATCH:
                    conn.executemany(sql, batch)
                    batch.clear()
            if batch:
                conn.executemany(sql, batch)
        if target.url:
            for table in tables:
                for column in conn.identity_columns(table):
                    conn.reset_identity(table, column)
    checks = []
    for table in tables:
        columns = layout[table]
        n_src, sum_src = table_check(source, table, columns)
        n_dst, sum_dst = table_check(target, table, columns)
        checks.append(TableCheck(table, n_src, n_dst, sum_src, sum_dst))
    report_version = version
    if all(c.ok for c in checks) and version < SCHEMA_VERSION:
        target.migrate()
    return CopyReport(source.where, target.where, report_version, target.schema_version(), tuple(checks))
