"""Store mixin: flow leases (migration 14): which server process drives a pool's run or a host's reinstall.

A lease is a row (name, owner, expires_at) taken in a write transaction, so two servers on one database can never
both hold it; its owner renews it while it drives the flow, and a server that finds it expired (the owner died:
kill -9, its machine gone) may take it and resume the flow from the store. Time is the database's clock (PostgreSQL:
clock_timestamp(); SQLite: this machine's, the only one that can open the file), so servers need not agree on
theirs. Taking over writes a `lease.taken` event naming the previous owner (docs/store.md "Leases").
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from provisioner.store.base import now


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str
    expires_at: float  # seconds since the epoch, database clock
    acquired_at: str
    renewed_at: str
    previous_owner: str | None = None  # take_lease(): whose expired lease was taken over

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lease(row: Any, previous: str | None = None) -> Lease:
    return Lease(name=row["name"], owner=row["owner"], expires_at=float(row["expires_at"]),
                 acquired_at=row["acquired_at"], renewed_at=row["renewed_at"], previous_owner=previous)


class LeasesMixin:
    """take / renew / release / read flow leases; all decisions inside one write transaction."""

    def db_clock(self, conn: Any = None) -> float:
        """Seconds since the epoch on the database's clock."""
        if getattr(self, "url", None):
            return (conn or self._connect()).clock()  # type: ignore[attr-defined]
        return time.time()

    def take_lease(self, name: str, owner: str, ttl: float, *,
                   dead_owner: str | None = None) -> tuple[Lease | None, Lease | None]:
        """(the lease now ours, None) when free, expired, already ours or held by `dead_owner` (a holder the caller
        KNOWS is dead: a process of this machine that no longer exists); (None, the live holder's) otherwise."""
        with self._tx() as conn:  # type: ignore[attr-defined]
            clock = self.db_clock(conn)
            row = conn.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
            stamp = now()
            if row is None:
                conn.execute("INSERT INTO leases (name, owner, expires_at, acquired_at, renewed_at) "
                             "VALUES (?, ?, ?, ?, ?)", (name, owner, clock + ttl, stamp, stamp))
                previous = None
            elif row["owner"] in (owner, dead_owner) or float(row["expires_at"]) <= clock:
                previous = None if row["owner"] == owner else row["owner"]
                conn.execute("UPDATE leases SET owner = ?, expires_at = ?, acquired_at = ?, renewed_at = ? "
                             "WHERE name = ?", (owner, clock + ttl,
                                                row["acquired_at"] if previous is None else stamp, stamp, name))
                if previous is not None:
                    self._event(conn, "lease.taken", details={  # type: ignore[attr-defined]
                        "lease": name, "owner": owner, "previous_owner": previous,
                        "expired_for_s": round(clock - float(row["expires_at"]), 3)})
            else:
                return None, _lease(row)
            return _lease(conn.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone(), previous), None

    def renew_lease(self, name: str, owner: str, ttl: float) -> bool:
        """Push the expiry ttl seconds ahead; False when the lease is no longer ours (taken over: stop driving)."""
        with self._tx() as conn:  # type: ignore[attr-defined]
            clock = self.db_clock(conn)
            cursor = conn.execute("UPDATE leases SET expires_at = ?, renewed_at = ? WHERE name = ? AND owner = ?",
                                  (clock + ttl, now(), name, owner))
            return cursor.rowcount == 1

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease back (only if still ours)."""
        with self._tx() as conn:  # type: ignore[attr-defined]
            conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    def lease_holder(self, name: str) -> Lease | None:
        """The live (unexpired) lease of `name`, or None."""
        conn = self._connect()  # type: ignore[attr-defined]
        row = conn.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
        if row is None or float(row["expires_at"]) <= self.db_clock(conn):
            return None
        return _lease(row)

    def expired_leases(self) -> list[Lease]:
        """Leases whose owner stopped renewing them (died without releasing): flows another server may adopt."""
        conn = self._connect()  # type: ignore[attr-defined]
        clock = self.db_clock(conn)
        rows = conn.execute("SELECT * FROM leases WHERE expires_at <= ? ORDER BY name", (clock,)).fetchall()
        return [_lease(row) for row in rows]
