"""Store mixin: pools (XAPI credentials), upgrade runs and their per-host steps, each change with its event.

The coordinator commits a run's state and a host's step here BEFORE the XAPI call the step makes, so a
restarted coordinator knows exactly where it was. Every change is checked against provisioner.states.
The pool password is stored for the coordinator's logins only: it is never in a repr, an event or as_dict().
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from provisioner import states
from provisioner.store.base import ConflictError, NotFoundError, now


@dataclass(frozen=True)
class PoolRecord:
    name: str
    url: str
    username: str
    password: str = field(repr=False)
    created_at: str = ""
    updated_at: str = ""
    boot_method: str = "network-first"  # its hosts' default (model.BOOT_METHODS)
    tls_fingerprint: str | None = None  # pinned SHA-256 of its master's certificate (xapi_tls.py) ...
    tls_ca: str | None = field(default=None, repr=False)  # ... or the PEM of the CA that signs it

    def as_dict(self) -> dict[str, Any]:
        """Everything but the password (what the CLI, the API and the events may show)."""
        data = asdict(self)
        data.pop("password")
        data["trust"] = "fingerprint" if self.tls_fingerprint else "ca" if self.tls_ca else "system"
        return data


@dataclass(frozen=True)
class Run:
    id: str
    pool: str
    media: str
    state: str
    stop_on_failure: bool
    abort_requested: bool
    reason: str | None
    created_at: str
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunHost:
    run_id: str
    mac: str
    position: int
    name: str
    uuid: str
    role: str  # "master" | "member"
    step: str
    before_version: str | None
    before_boot_time: str | None
    attempt_id: int | None
    reason: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trust_details(fingerprint: str | None, ca: str | None, source: str | None) -> dict[str, Any]:
    kind = "fingerprint" if fingerprint else "ca" if ca else "system"
    return {"trust": kind, "fingerprint": fingerprint, **({"trust_source": source} if source else {})}


def _pool(row: sqlite3.Row) -> PoolRecord:
    return PoolRecord(**{k: row[k] for k in row.keys()})


def _run(row: sqlite3.Row) -> Run:
    data = {k: row[k] for k in row.keys()}
    data["stop_on_failure"], data["abort_requested"] = bool(data["stop_on_failure"]), bool(data["abort_requested"])
    return Run(**data)


def _run_host(row: sqlite3.Row) -> RunHost:
    return RunHost(**{k: row[k] for k in row.keys()})


_HOST_UPDATABLE = ("before_version", "before_boot_time", "attempt_id", "reason")


class RunsMixin:
    """pools, runs and run_hosts rows."""

    # --- pools ---

    def add_pool(self, name: str, url: str, username: str, password: str, *, tls_fingerprint: str | None = None,
                 tls_ca: str | None = None, trust_source: str | None = None) -> PoolRecord:
        """Add or replace a pool's connection details and certificate trust (event without the password)."""
        with self._tx() as conn:
            stamp = now()
            conn.execute(
                "INSERT INTO pools (name, url, username, password, created_at, updated_at, tls_fingerprint, tls_ca) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET url = excluded.url, username = excluded.username, "
                "password = excluded.password, updated_at = excluded.updated_at, "
                "tls_fingerprint = excluded.tls_fingerprint, tls_ca = excluded.tls_ca",
                (name, url, username, password, stamp, stamp, tls_fingerprint, tls_ca))
            self._event(conn, "pool.added", details={"pool": name, "url": url, "username": username,
                                                     **_trust_details(tls_fingerprint, tls_ca, trust_source)})
            return _pool(conn.execute("SELECT * FROM pools WHERE name = ?", (name,)).fetchone())

    def set_pool_trust(self, name: str, *, tls_fingerprint: str | None, tls_ca: str | None,
                       trust_source: str) -> PoolRecord:
        """Change how the pool's certificate is trusted (`pools trust`); the event keeps old and new fingerprint."""
        with self._tx() as conn:
            row = conn.execute("SELECT tls_fingerprint FROM pools WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no pool named {name!r} (see `provisioner pools add`)")
            conn.execute("UPDATE pools SET tls_fingerprint = ?, tls_ca = ?, updated_at = ? WHERE name = ?",
                         (tls_fingerprint, tls_ca, now(), name))
            self._event(conn, "pool.trust", details={"pool": name, "old_fingerprint": row["tls_fingerprint"],
                                                     **_trust_details(tls_fingerprint, tls_ca, trust_source)})
            return _pool(conn.execute("SELECT * FROM pools WHERE name = ?", (name,)).fetchone())

    def set_pool_boot_method(self, name: str, method: str) -> PoolRecord:
        """The default boot method of the pool's hosts (the caller validated it)."""
        with self._tx() as conn:
            row = conn.execute("SELECT boot_method FROM pools WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no pool named {name!r} (see `provisioner pools add`)")
            conn.execute("UPDATE pools SET boot_method = ?, updated_at = ? WHERE name = ?", (method, now(), name))
            self._event(conn, "pool.boot_method", details={"pool": name, "boot_method": [row["boot_method"], method]})
            return _pool(conn.execute("SELECT * FROM pools WHERE name = ?", (name,)).fetchone())

    def get_pool(self, name: str) -> PoolRecord | None:
        row = self._connect().execute("SELECT * FROM pools WHERE name = ?", (name,)).fetchone()
        return _pool(row) if row else None

    def list_pools(self) -> list[PoolRecord]:
        return [_pool(r) for r in self._connect().execute("SELECT * FROM pools ORDER BY name").fetchall()]

    # --- runs ---

    def create_run(self, run_id: str, pool: str, media: str, *, stop_on_failure: bool,
                   hosts: Iterable[Mapping[str, Any]]) -> Run:
        """A PRECHECK run with its hosts (PENDING, in upgrade order); ConflictError if the pool has an active run."""
        states.check_transition(states.RUN, None, states.RUN_PRECHECK)
        states.check_transition(states.HOST, None, states.STEP_PENDING)
        with self._tx() as conn:
            active = conn.execute("SELECT id, state FROM runs WHERE pool = ? AND state NOT IN (?, ?, ?, ?)",
                                  (pool, *sorted(states.RUN_TERMINAL))).fetchone()
            if active is not None:
                raise ConflictError(f"pool {pool} already has run {active['id']} in state {active['state']}: "
                                    "resume or abort it first")
            stamp = now()
            conn.execute("INSERT INTO runs (id, pool, media, state, stop_on_failure, abort_requested, reason, "
                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 0, NULL, ?, ?)",
                         (run_id, pool, media, states.RUN_PRECHECK, int(stop_on_failure), stamp, stamp))
            for position, h in enumerate(hosts):
                conn.execute("INSERT INTO run_hosts (run_id, mac, position, name, uuid, role, step, updated_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (run_id, h["mac"], position, h["name"], h["uuid"], h["role"], states.STEP_PENDING,
                              stamp))
            self._event(conn, "run.precheck", run_id=run_id, details={"pool": pool, "media": media})
            return _run(conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def get_run(self, run_id: str) -> Run | None:
        row = self._connect().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def list_runs(self, pool: str | None = None, *, active_only: bool = False) -> list[Run]:
        sql, args = "SELECT * FROM runs WHERE 1 = 1", []
        if pool is not None:
            sql += " AND pool = ?"
            args.append(pool)
        if active_only:
            sql += " AND state NOT IN (?, ?, ?, ?)"
            args += sorted(states.RUN_TERMINAL)
        return [_run(r) for r in self._connect().execute(sql + " ORDER BY created_at DESC, id", args).fetchall()]

    def set_run_state(self, run_id: str, new: str, *, reason: str | None = None) -> Run:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no run {run_id}")
            old = row["state"]
            states.check_transition(states.RUN, old, new)
            cursor = conn.execute("UPDATE runs SET state = ?, reason = COALESCE(?, reason), updated_at = ? "
                                  "WHERE id = ? AND state = ?", (new, reason, now(), run_id, old))
            if cursor.rowcount != 1:
                raise ConflictError(f"run {run_id} changed state concurrently")
            self._event(conn, f"run.{new}", run_id=run_id, details={"from": old, "to": new, "reason": reason})
            return _run(conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def request_abort(self, run_id: str) -> Run:
        with self._tx() as conn:
            conn.execute("UPDATE runs SET abort_requested = 1, updated_at = ? WHERE id = ?", (now(), run_id))
            self._event(conn, "run.abort_requested", run_id=run_id)
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no run {run_id}")
            return _run(row)

    # --- run hosts ---

    def run_hosts(self, run_id: str) -> list[RunHost]:
        rows = self._connect().execute("SELECT * FROM run_hosts WHERE run_id = ? ORDER BY position", (run_id,))
        return [_run_host(r) for r in rows.fetchall()]

    def get_run_host(self, run_id: str, mac: str) -> RunHost:
        row = self._connect().execute("SELECT * FROM run_hosts WHERE run_id = ? AND mac = ?",
                                      (run_id, mac)).fetchone()
        if row is None:
            raise NotFoundError(f"host {mac} is not part of run {run_id}")
        return _run_host(row)

    def set_host_step(self, run_id: str, mac: str, new: str | None, *, details: Mapping[str, Any] | None = None,
                      **updates: Any) -> RunHost:
        """Move a host to step `new` (None: keep the step, only update fields), checked against the table."""
        unknown = set(updates) - set(_HOST_UPDATABLE)
        if unknown:
            raise ValueError(f"run host fields {sorted(unknown)} cannot be changed")
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM run_hosts WHERE run_id = ? AND mac = ?", (run_id, mac)).fetchone()
            if row is None:
                raise NotFoundError(f"host {mac} is not part of run {run_id}")
            old = row["step"]
            step = old if new is None else new
            if new is not None and new != old:
                states.check_transition(states.HOST, old, new)
            sets = ", ".join(f"{k} = ?" for k in updates)
            conn.execute(f"UPDATE run_hosts SET step = ?, {sets + ', ' if sets else ''}updated_at = ? "
                         "WHERE run_id = ? AND mac = ? AND step = ?",
                         (step, *updates.values(), now(), run_id, mac, old))
            if new is not None and new != old:
                self._event(conn, f"step.{new}", mac=mac, run_id=run_id,
                            details={"host": row["name"], "from": old, "to": new, **updates, **(details or {})})
            return _run_host(conn.execute("SELECT * FROM run_hosts WHERE run_id = ? AND mac = ?",
                                          (run_id, mac)).fetchone())
