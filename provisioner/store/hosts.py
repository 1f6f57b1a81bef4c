"""Store mixin: the host registry (MAC -> name, pool, disk, firmware)."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterable, Mapping

from provisioner.model import Host, ValidationError
from provisioner.store.base import ConflictError, NotFoundError, now


def _host_from_row(row: sqlite3.Row) -> Host:
    return Host(mac=row["mac"], name=row["name"], pool=row["pool"], disk=row["disk"],
                firmware=row["firmware"], ip=row["ip"], notes=row["notes"])


class HostsMixin:
    """Host records; every change writes a host.* event in the same transaction."""

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
            # A live attempt must not come back to life if the MAC is registered again later.
            self._disarm_live(conn, mac, {"reason": "host removed"})
        return host
