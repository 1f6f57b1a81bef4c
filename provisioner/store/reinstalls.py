"""Store mixin: lab reinstall-and-join flows, each step change checked against provisioner.states with its event.

A reinstall row is committed BEFORE each action of the flow (host.destroy, arming, pool.join), so a restarted
flow knows where it was. Its `attempt_id` marks that attempt as a fresh-install attempt (the only kind for which
the boot endpoint renders fresh-install.xml); attempt and link are written in ONE transaction. The root-password
hash is a crypt(3) string, never in a repr, an event or as_dict(), and cleared once served or when the flow ends.
The VM disks the operator accepted to lose (--accept-data-loss) are journaled as a `reinstall.data_lost` event
in the transaction that commits the flow, before anything is wiped; data_lost() reads them back for reports.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from provisioner import states
from provisioner.model import Attempt
from provisioner.store.base import ConflictError, NotFoundError, now

_UPDATABLE = ("new_uuid", "reason", "old_uuid", "host_fingerprint")


@dataclass(frozen=True)
class Reinstall:
    id: int
    mac: str
    pool: str
    media: str
    step: str
    host_name: str
    old_uuid: str | None
    old_pool: str | None
    new_uuid: str | None
    host_url: str
    network: Mapping[str, Any]
    root_password_hash: str | None = field(repr=False)
    attempt_id: int | None
    reason: str | None
    created_at: str
    updated_at: str
    host_fingerprint: str | None = None  # SHA-256 of the new host's certificate, pinned before its first login

    def as_dict(self) -> dict[str, Any]:
        """Everything but the root-password hash (what the CLI, the API and the events may show)."""
        data = asdict(self)
        data.pop("root_password_hash")
        data["network"] = dict(self.network)
        return data


def _reinstall(row: sqlite3.Row) -> Reinstall:
    data = {k: row[k] for k in row.keys()}
    data["network"] = json.loads(data["network"])
    return Reinstall(**data)


class ReinstallsMixin:
    """reinstalls rows (the attempts they arm go through AttemptsMixin._insert_attempt)."""

    def create_reinstall(self, mac: str, pool: str, media: str, *, host_name: str, forget_first: bool,
                         old_uuid: str | None, old_pool: str | None, host_url: str, network: Mapping[str, Any],
                         root_password_hash: str, data_lost: list[Mapping[str, Any]] = ()) -> Reinstall:
        """A new flow at step FORGET (forget_first) or ARM; ConflictError while the host has one in progress.
        `data_lost`: the local disks the fresh install will wipe, accepted by the operator (journaled here)."""
        first = states.RI_FORGET if forget_first else states.RI_ARM
        states.check_transition(states.REINSTALL, None, first)
        with self._tx() as conn:
            active = conn.execute("SELECT id, step FROM reinstalls WHERE mac = ? AND step NOT IN (?, ?)",
                                  (mac, states.RI_DONE, states.RI_FAILED)).fetchone()
            if active is not None:
                raise ConflictError(f"host {mac} already has reinstall {active['id']} at step {active['step']}: "
                                    "resume it (run the same reinstall command again)")
            stamp = now()
            cursor = conn.execute(
                "INSERT INTO reinstalls (mac, pool, media, step, host_name, old_uuid, old_pool, host_url, network, "
                "root_password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (mac, pool, media, first, host_name, old_uuid, old_pool, host_url, json.dumps(dict(network)),
                 root_password_hash, stamp, stamp))
            row = conn.execute("SELECT * FROM reinstalls WHERE id = ?", (cursor.lastrowid,)).fetchone()
            found = _reinstall(row)
            self._event(conn, f"reinstall.{first}", mac=mac, details={
                "reinstall": found.id, "pool": pool, "media": media, "host": host_name, "old_uuid": old_uuid,
                "old_pool": old_pool, "host_url": host_url})
            if data_lost:
                self._event(conn, "reinstall.data_lost", mac=mac, details={
                    "reinstall": found.id, "accepted": True, "disks": [dict(d) for d in data_lost]})
            return found

    def data_lost(self, reinstall: Reinstall) -> list[dict[str, Any]]:
        """The local disks this reinstall wipes (accepted with --accept-data-loss when it was committed), [] if none."""
        for event in self.events(mac=reinstall.mac, kind="reinstall.data_lost"):
            if event["details"].get("reinstall") == reinstall.id:
                return list(event["details"].get("disks", []))
        return []

    def get_reinstall(self, reinstall_id: int) -> Reinstall | None:
        row = self._connect().execute("SELECT * FROM reinstalls WHERE id = ?", (reinstall_id,)).fetchone()
        return _reinstall(row) if row else None

    def active_reinstall(self, mac: str) -> Reinstall | None:
        """The host's reinstall in progress (not DONE/FAILED), or None."""
        row = self._connect().execute("SELECT * FROM reinstalls WHERE mac = ? AND step NOT IN (?, ?)",
                                      (mac, states.RI_DONE, states.RI_FAILED)).fetchone()
        return _reinstall(row) if row else None

    def active_reinstalls(self) -> list[Reinstall]:
        """Every reinstall in progress (not DONE/FAILED), oldest first: what `serve` drives again at start-up."""
        rows = self._connect().execute("SELECT * FROM reinstalls WHERE step NOT IN (?, ?) ORDER BY id",
                                       (states.RI_DONE, states.RI_FAILED)).fetchall()
        return [_reinstall(r) for r in rows]

    def list_reinstalls(self, mac: str | None = None, *, limit: int = 100) -> list[Reinstall]:
        if mac is None:
            rows = self._connect().execute("SELECT * FROM reinstalls ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._connect().execute("SELECT * FROM reinstalls WHERE mac = ? ORDER BY id DESC LIMIT ?",
                                           (mac, limit))
        return [_reinstall(r) for r in rows.fetchall()]

    def reinstall_for_attempt(self, attempt_id: int) -> Reinstall | None:
        """The reinstall that armed this attempt (None: an ordinary upgrade attempt)."""
        row = self._connect().execute("SELECT * FROM reinstalls WHERE attempt_id = ?", (attempt_id,)).fetchone()
        return _reinstall(row) if row else None

    def set_reinstall_step(self, reinstall_id: int, new: str | None, *, details: Mapping[str, Any] | None = None,
                           **updates: Any) -> Reinstall:
        """Move to step `new` (None: keep it, only update fields); the hash is dropped when the flow ends."""
        unknown = set(updates) - set(_UPDATABLE)
        if unknown:
            raise ValueError(f"reinstall fields {sorted(unknown)} cannot be changed")
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM reinstalls WHERE id = ?", (reinstall_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no reinstall {reinstall_id}")
            old = row["step"]
            step = old if new is None else new
            if step != old:
                states.check_transition(states.REINSTALL, old, step)
            sets = "".join(f", {k} = ?" for k in updates)
            if step in states.REINSTALL_TERMINAL:
                sets += ", root_password_hash = NULL"
            cursor = conn.execute(f"UPDATE reinstalls SET step = ?, updated_at = ?{sets} WHERE id = ? AND step = ?",
                                  (step, now(), *updates.values(), reinstall_id, old))
            if cursor.rowcount != 1:
                raise ConflictError(f"reinstall {reinstall_id} changed step concurrently (expected {old})")
            if step != old:
                self._event(conn, f"reinstall.{step}", mac=row["mac"], details={
                    "reinstall": reinstall_id, "from": old, "to": step, **updates, **(details or {})})
            return _reinstall(conn.execute("SELECT * FROM reinstalls WHERE id = ?", (reinstall_id,)).fetchone())

    def arm_reinstall_attempt(self, reinstall_id: int, token: str, *, max_runs: int = 1) -> tuple[Reinstall, Attempt]:
        """ARM -> INSTALLING: create the fresh-install attempt and link it, in one transaction.

        Never arms twice: a reinstall that already has an attempt is refused (ConflictError), so a resumed flow
        can never open a second fresh-install window after the first one was used.
        """
        states.check_transition(states.REINSTALL, states.RI_ARM, states.RI_INSTALLING)
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM reinstalls WHERE id = ?", (reinstall_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no reinstall {reinstall_id}")
            if row["step"] != states.RI_ARM or row["attempt_id"] is not None:
                raise ConflictError(f"reinstall {reinstall_id} is at step {row['step']} (attempt "
                                    f"{row['attempt_id']}): it is armed once, never again")
            attempt = self._insert_attempt(conn, row["mac"], row["media"], token, max_runs=max_runs, run_id=None,
                                           window_until=None, kind="fresh-install")
            conn.execute("UPDATE reinstalls SET step = ?, attempt_id = ?, updated_at = ? WHERE id = ? AND step = ?",
                         (states.RI_INSTALLING, attempt.id, now(), reinstall_id, states.RI_ARM))
            self._event(conn, f"reinstall.{states.RI_INSTALLING}", mac=row["mac"], details={
                "reinstall": reinstall_id, "from": states.RI_ARM, "to": states.RI_INSTALLING, "attempt": attempt.id})
            found = _reinstall(conn.execute("SELECT * FROM reinstalls WHERE id = ?", (reinstall_id,)).fetchone())
        return found, attempt

    def clear_reinstall_hash(self, reinstall_id: int) -> None:
        """Forget the root-password hash (the answer file that needed it was served)."""
        with self._tx() as conn:
            conn.execute("UPDATE reinstalls SET root_password_hash = NULL, updated_at = ? WHERE id = ?",
                         (now(), reinstall_id))
