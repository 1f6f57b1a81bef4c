"""Store mixin: installer attempts, changed only by compare-and-set inside one transaction with their event.

The rules (who may open, close or count a window) live in provisioner.boot.attempts; this module owns the SQL
and guarantees that every state change is checked against provisioner.states and logged atomically.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from provisioner import states
from provisioner.model import Attempt
from provisioner.store.base import ConflictError, NotFoundError, StoreError, now
from provisioner.store.errors import BUSY_ERRORS
from provisioner.store.reinstalls import ReinstallsMixin

_UPDATABLE = ("runs", "exit_code")


@dataclass(frozen=True)
class AttemptChange:
    """What a decide-callback wants done to one attempt, inside the transaction that read it.

    `state` None keeps the state (e.g. count a run, or only log a refusal); `event` defaults to
    "attempt.<new state>"; `updates` may set `runs` and `exit_code`.
    """

    state: str | None = None
    updates: Mapping[str, Any] = field(default_factory=dict)
    event: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def _attempt_from_row(row: sqlite3.Row) -> Attempt:
    return Attempt(id=row["id"], mac=row["mac"], media=row["media"], token=row["token"], state=row["state"],
                   max_runs=row["max_runs"], runs=row["runs"], run_id=row["run_id"],
                   window_until=row["window_until"], exit_code=row["exit_code"], created_at=row["created_at"],
                   updated_at=row["updated_at"], started_at=row["started_at"], finished_at=row["finished_at"],
                   boot_client=row["boot_client"])


class AttemptsMixin(ReinstallsMixin):
    """Attempt rows: arm (supersede), compare-and-set transitions, counters; each with its event row.

    (Reinstall rows come along as a base class: a reinstall arms its fresh-install attempt in one transaction.)
    """

    # --- reads ---

    def get_attempt(self, attempt_id: int) -> Attempt | None:
        row = self._connect().execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
        return _attempt_from_row(row) if row else None

    def attempt_by_token(self, token: str) -> Attempt | None:
        row = self._connect().execute("SELECT * FROM attempts WHERE token = ?", (token,)).fetchone()
        return _attempt_from_row(row) if row else None

    def current_attempt(self, mac: str) -> Attempt | None:
        """The newest attempt of `mac` (live or not): the one the boot policy looks at."""
        row = self._connect().execute(
            "SELECT * FROM attempts WHERE mac = ? ORDER BY id DESC LIMIT 1", (mac,)).fetchone()
        return _attempt_from_row(row) if row else None

    def list_attempts(self, mac: str | None = None, *, limit: int = 100) -> list[Attempt]:
        if mac is None:
            rows = self._connect().execute("SELECT * FROM attempts ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._connect().execute(
                "SELECT * FROM attempts WHERE mac = ? ORDER BY id DESC LIMIT ?", (mac, limit))
        return [_attempt_from_row(row) for row in rows.fetchall()]

    # --- writes ---

    def arm_attempt(self, mac: str, media: str, token: str, *, max_runs: int, run_id: str | None = None,
                    window_until: str | None = None) -> Attempt:
        """Create an ARMED attempt; an older ARMED one of the host becomes EXPIRED in the same transaction.

        Refuses (ConflictError) while an installer is running (STARTED): arming then would reinstall the
        host right after that run. NotFoundError if the host or the media is not registered.
        """
        with self._tx() as conn:
            return self._insert_attempt(conn, mac, media, token, max_runs=max_runs, run_id=run_id,
                                        window_until=window_until)

    def _insert_attempt(self, conn: sqlite3.Connection, mac: str, media: str, token: str, *, max_runs: int,
                        run_id: str | None, window_until: str | None, kind: str = "upgrade") -> Attempt:
        """arm_attempt() inside the caller's transaction (a reinstall links its attempt in the same one)."""
        if conn.execute("SELECT 1 FROM hosts WHERE mac = ?", (mac,)).fetchone() is None:
            raise NotFoundError(f"no host with MAC {mac} is registered")
        if conn.execute("SELECT 1 FROM media WHERE name = ?", (media,)).fetchone() is None:
            raise NotFoundError(f"no media named {media!r}")
        superseded = None
        for row in conn.execute("SELECT * FROM attempts WHERE mac = ? AND state IN (?, ?)",
                                (mac, states.ARMED, states.STARTED)).fetchall():
            old = _attempt_from_row(row)
            if old.state == states.STARTED:
                raise ConflictError(
                    f"an installer is running on {mac} (attempt {old.id}, started {old.started_at}); wait "
                    "for it to report, or disarm it first if it died")
            self._set_state(conn, old, states.EXPIRED, details={"superseded": True})
            superseded = old.id
        states.check_transition(states.ATTEMPT, None, states.ARMED)
        stamp = now()
        cursor = conn.execute(
            "INSERT INTO attempts (mac, media, token, state, max_runs, runs, run_id, window_until, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (mac, media, token, states.ARMED, max_runs, run_id, window_until, stamp, stamp),
        )
        attempt = _attempt_from_row(conn.execute("SELECT * FROM attempts WHERE id = ?", (cursor.lastrowid,)).fetchone())
        self._event(conn, "attempt.armed", mac=mac, run_id=run_id, details={
            "attempt": attempt.id, "media": media, "max_runs": max_runs, "window_until": window_until,
            "supersedes": superseded, "kind": kind})
        return attempt

    def add_fetch_event(self, attempt: Attempt, details: Mapping[str, Any], *, boot_client: str | None = None,
                        best_effort: bool = True) -> None:
        """One `attempt.fetch` event; with `boot_client`, also remember where the boot config went. One transaction:
        this runs on the TFTP loop's path for armed hosts. The FIRST boot-config fetcher stays: it is the address
        the attempt's answer file and scripts are bound to (provisioner.boot.attempts.admits), a later one cannot rebind.
        Best effort (issue 15): a record that cannot be written (disk full, read-only) is dropped and counted, never
        raised into a boot answer; the TFTP thread queues it (eventwriter.DecisionStore), in arrival order."""
        try:
            with self._tx() as conn:
                if boot_client is not None:
                    conn.execute("UPDATE attempts SET boot_client = ? WHERE id = ? AND boot_client IS NULL",
                                 (boot_client, attempt.id))
                self._event(conn, "attempt.fetch", mac=attempt.mac, run_id=attempt.run_id, details=details)
        except (*BUSY_ERRORS, OSError) as err:
            if not best_effort:
                raise
            self._dropped("attempt.fetch", err)  # type: ignore[attr-defined]

    def live_attempt_for_client(self, client: str) -> Attempt | None:
        """The newest live attempt whose boot config went to `client` (or whose host has that IP)."""
        row = self._connect().execute(
            "SELECT a.* FROM attempts a JOIN hosts h ON h.mac = a.mac WHERE a.state IN (?, ?) "
            "AND (a.boot_client = ? OR h.ip = ?) ORDER BY a.id DESC LIMIT 1",
            (states.ARMED, states.STARTED, client, client)).fetchone()
        return _attempt_from_row(row) if row else None

    def count_attempt_events(self, attempt: Attempt, kind: str, *, cap: int) -> int:
        """How many `kind` events name this attempt, counted no further than `cap` (a per-attempt event budget)."""
        row = self._connect().execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE mac = ? AND kind = ? "
            "AND CAST(json_extract(details, '$.attempt') AS TEXT) = ? LIMIT ?) AS capped",
            (attempt.mac, kind, str(attempt.id), cap)).fetchone()
        return int(row[0])

    def change_attempt(self, *, decide: Callable[[Attempt], AttemptChange | None], token: str | None = None,
                       attempt_id: int | None = None) -> tuple[Attempt | None, AttemptChange | None]:
        """Read one attempt (by token or id), let `decide` look at it, apply its change: all in one transaction.

        Returns (attempt after the change, the change applied) or (None, None) when no such attempt exists.
        Because the transaction holds the write lock from the read on, two concurrent callers can never
        both see the old state (the compare-and-set in _set_state double-checks it anyway).
        """
        if (token is None) == (attempt_id is None):
            raise TypeError("change_attempt needs exactly one of token= or attempt_id=")
        with self._tx() as conn:
            if token is not None:
                row = conn.execute("SELECT * FROM attempts WHERE token = ?", (token,)).fetchone()
            else:
                row = conn.execute("SELECT * FROM attempts WHERE id = ?", (attempt_id,)).fetchone()
            if row is None:
                return None, None
            attempt = _attempt_from_row(row)
            change = decide(attempt)
            if change is None:
                return attempt, None
            unknown = set(change.updates) - set(_UPDATABLE)
            if unknown:
                raise StoreError(f"attempt fields {sorted(unknown)} cannot be changed")
            if change.updates:
                sets = ", ".join(f"{column} = ?" for column in change.updates)
                stamp = now()
                conn.execute(f"UPDATE attempts SET {sets}, updated_at = ? WHERE id = ?",
                             (*change.updates.values(), stamp, attempt.id))
                attempt = replace(attempt, **change.updates, updated_at=stamp)
            if change.state is not None and change.state != attempt.state:
                attempt = self._set_state(conn, attempt, change.state, event=change.event, details=change.details)
            elif change.event:
                self._event(conn, change.event, mac=attempt.mac, run_id=attempt.run_id,
                            details={"attempt": attempt.id, "state": attempt.state, **change.details})
        return attempt, change

    def disarm_attempts(self, mac: str, *, details: Mapping[str, Any] | None = None) -> list[Attempt]:
        """Move every live (ARMED or STARTED) attempt of `mac` to DISARMED; returns the changed ones."""
        with self._tx() as conn:
            return self._disarm_live(conn, mac, details or {})

    # --- helpers used inside other transactions ---

    def _disarm_live(self, conn: sqlite3.Connection, mac: str, details: Mapping[str, Any]) -> list[Attempt]:
        rows = conn.execute("SELECT * FROM attempts WHERE mac = ? AND state IN (?, ?) ORDER BY id",
                            (mac, states.ARMED, states.STARTED)).fetchall()
        return [self._set_state(conn, _attempt_from_row(row), states.DISARMED, details=details) for row in rows]

    def _set_state(self, conn: sqlite3.Connection, attempt: Attempt, new: str, *, event: str | None = None,
                   details: Mapping[str, Any] | None = None) -> Attempt:
        """Compare-and-set attempt.state -> new (checked against the table) plus its event row."""
        states.check_transition(states.ATTEMPT, attempt.state, new)
        stamp = now()
        started = stamp if new == states.STARTED else attempt.started_at
        finished = stamp if new in states.ATTEMPT_TERMINAL else attempt.finished_at
        cursor = conn.execute(
            "UPDATE attempts SET state = ?, updated_at = ?, started_at = ?, finished_at = ? "
            "WHERE id = ? AND state = ?",
            (new, stamp, started, finished, attempt.id, attempt.state),
        )
        if cursor.rowcount != 1:
            raise ConflictError(f"attempt {attempt.id} changed state concurrently (expected {attempt.state})")
        self._event(conn, event or f"attempt.{new}", mac=attempt.mac, run_id=attempt.run_id,
                    details={"attempt": attempt.id, "from": attempt.state, "to": new, **(details or {})})
        return replace(attempt, state=new, updated_at=stamp, started_at=started, finished_at=finished)
