"""Store mixin: the host registry (MAC -> name, pool, disk, firmware, boot MAC, boot method, BMC).

The BMC password column holds only what provisioner.credentials.encrypt made (the registry encrypts before it
calls here); a Host read back says only bmc_password_set, and no event carries the column."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any, Callable, Iterable, Mapping

from provisioner.model import Host, ValidationError, normalize_mac
from provisioner.store.base import ConflictError, NotFoundError, now


KEEP = object()
"""update_host's bmc_password default: leave the stored (encrypted) password as it is."""

_COLUMNS = ("mac", "name", "pool", "disk", "firmware", "ip", "notes", "boot_mac", "multipath", "boot_method",
            "bmc_kind", "bmc_address", "bmc_username", "bmc_system_id", "site")


def _host_from_row(row: sqlite3.Row) -> Host:
    return Host(mac=row["mac"], name=row["name"], pool=row["pool"], disk=row["disk"],
                firmware=row["firmware"], ip=row["ip"], notes=row["notes"], boot_mac=row["boot_mac"],
                multipath=bool(row["multipath"]), boot_method=row["boot_method"], bmc_kind=row["bmc_kind"],
                bmc_address=row["bmc_address"], bmc_username=row["bmc_username"],
                bmc_system_id=row["bmc_system_id"], bmc_password_set=row["bmc_password"] is not None,
                site=row["site"])


def _values(host: Host) -> list[Any]:
    return [int(host.multipath) if c == "multipath" else getattr(host, c) for c in _COLUMNS]


class HostsMixin:
    """Host records; every change writes a host.* event in the same transaction."""

    @staticmethod
    def _check_unique(conn: sqlite3.Connection, host: Host, *, replacing: str | None = None) -> None:
        if replacing is None and conn.execute("SELECT 1 FROM hosts WHERE mac = ?", (host.mac,)).fetchone():
            raise ConflictError(f"a host with MAC {host.mac} is already registered")
        # A MAC names one host whichever column holds it: the boot server looks both up (host_for_boot).
        for mine, what in ((host.mac, "MAC"), (host.boot_mac, "boot MAC")):
            if mine is None:
                continue
            row = conn.execute("SELECT mac, boot_mac FROM hosts WHERE (mac = ? OR boot_mac = ?) AND mac != ?",
                               (mine, mine, host.mac)).fetchone()
            if row and not (what == "MAC" and row["mac"] == mine):
                theirs = "MAC" if row["mac"] == mine else "boot MAC"
                raise ConflictError(f"{what} {mine} is already the {theirs} of host {row['mac']}")
        row = conn.execute("SELECT mac FROM hosts WHERE pool = ? AND name = ?", (host.pool, host.name)).fetchone()
        if row and row["mac"] != replacing:
            raise ConflictError(f"pool {host.pool!r} already has a host named {host.name!r} (MAC {row['mac']})")

    @staticmethod
    def _insert_host(conn: sqlite3.Connection, host: Host, bmc_password: str | None) -> Host:
        stamp = now()
        if host.bmc_kind is None:
            bmc_password = None
        conn.execute(
            f"INSERT INTO hosts ({', '.join(_COLUMNS)}, bmc_password, created_at, updated_at) "
            f"VALUES ({', '.join('?' * (len(_COLUMNS) + 3))})",
            (*_values(host), bmc_password, stamp, stamp),
        )
        return dataclasses.replace(host, bmc_password_set=bmc_password is not None)

    def add_host(self, host: Host, *, bmc_password: str | None = None) -> Host:
        """Insert one host; `bmc_password` is the encrypted value to keep (credentials.encrypt), if any."""
        with self._tx() as conn:
            self._check_unique(conn, host)
            host = self._insert_host(conn, host, bmc_password)
            self._event(conn, "host.added", mac=host.mac, details=host.as_dict())
        return host

    def add_hosts(self, hosts: Iterable[Host], *, source: str = "import",
                  bmc_passwords: Mapping[str, str] | None = None) -> list[Host]:
        """Insert all hosts or none (the caller has validated them and checked duplicates within the batch);
        `bmc_passwords` maps a MAC to its encrypted BMC password."""
        added = []
        with self._tx() as conn:
            for host in hosts:
                self._check_unique(conn, host)
                host = self._insert_host(conn, host, (bmc_passwords or {}).get(host.mac))
                self._event(conn, "host.added", mac=host.mac, details={**host.as_dict(), "source": source})
                added.append(host)
        return added

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

    def host_for_boot(self, mac: str) -> Host | None:
        """The host that network-boots with `mac` (canonical): the one whose MAC or boot MAC it is."""
        row = self._connect().execute("SELECT * FROM hosts WHERE mac = ? OR boot_mac = ? ORDER BY mac = ? DESC",
                                      (mac, mac, mac)).fetchone()
        return _host_from_row(row) if row else None

    def bmc_password(self, mac: str) -> str | None:
        """The stored (encrypted) BMC password of host `mac`, for the BMC client only; None when none is set."""
        row = self._connect().execute("SELECT bmc_password FROM hosts WHERE mac = ?", (mac,)).fetchone()
        return row["bmc_password"] if row else None

    def list_hosts(self, pool: str | None = None) -> list[Host]:
        if pool is None:
            rows = self._connect().execute("SELECT * FROM hosts ORDER BY pool, name").fetchall()
        else:
            rows = self._connect().execute("SELECT * FROM hosts WHERE pool = ? ORDER BY name", (pool,)).fetchall()
        return [_host_from_row(row) for row in rows]

    def update_host(self, mac: str, changes: Mapping[str, Any] | Callable[[Host], Mapping[str, Any]], *,
                    bmc_password: Any = KEEP) -> Host:
        """Apply `changes` (or changes computed from the current record) atomically; the MAC cannot change.

        `bmc_password`: KEEP, None (remove it) or the new encrypted value; a host left without a BMC keeps none."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM hosts WHERE mac = ?", (mac,)).fetchone()
            if row is None:
                raise NotFoundError(f"no host with MAC {mac} is registered")
            old = _host_from_row(row)
            changes = dict(changes(old) if callable(changes) else changes)
            if "mac" in changes and changes["mac"] != mac:
                try:
                    same = normalize_mac(changes["mac"]) == mac
                except ValidationError:
                    same = False
                if not same:
                    raise ValidationError("cannot be changed; remove the host and add it again", "mac")
                changes.pop("mac")
            new = old.with_changes(changes)
            self._check_unique(conn, new, replacing=mac)
            if bmc_password is KEEP:
                bmc_password = row["bmc_password"]
            if new.bmc_kind is None:
                bmc_password = None
            new = dataclasses.replace(new, bmc_password_set=bmc_password is not None)
            conn.execute(
                f"UPDATE hosts SET {', '.join(f'{c} = ?' for c in _COLUMNS[1:])}, bmc_password = ?, updated_at = ? "
                "WHERE mac = ?",
                (*_values(new)[1:], bmc_password, now(), mac),
            )
            diff = {k: [getattr(old, k), v] for k, v in new.as_dict().items() if getattr(old, k) != v}
            if bmc_password not in (None, row["bmc_password"]) and old.bmc_password_set:
                diff["bmc_password"] = "changed"  # never the value, nor its ciphertext
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
