"""The events table as a bounded log: unauthenticated noise is sampled, failed writes are dropped, old rows pruned.

Issue 15 findings 3 and 4: every 404, unknown token, bad script stage or malformed TFTP name wrote a row
(~1.3 GB per hour from one client; 20,000 packets, 20,513 rows), and a full disk then broke boots. So:
- NOISE (events no authenticated party caused: no MAC, no run, a family in NOISE_FAMILIES) goes through a
  per-(kind, client) and a per-kind token bucket; what the buckets refuse is counted, and flush_sampled()
  writes one summary row per (kind, reason) standing for `count` events (with the top clients);
- a noise event that cannot be written (disk full, read-only, locked) is dropped and counted, never raised;
- prune_events() enforces config events_max_age_days / events_max_rows, noise first; audit rows (anything
  with a MAC or run, xapi.*, attempt.*, run/step/host/reinstall) live AUDIT_AGE_FACTOR times longer; rows of
  an active run, an active reinstall or a live attempt are never deleted (the run journal is events rows).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterator, Mapping

from provisioner import states
from provisioner.store.errors import BUSY_ERRORS, DB_ERRORS

log = logging.getLogger(__name__)

NOISE_FAMILIES = frozenset({"tftp", "http", "boot", "auth", "ui"})
NOISE_KINDS = frozenset({"attempt.unknown_token"})
AUDIT_AGE_FACTOR = 4  # audit rows are kept this many times events_max_age_days
PRUNE_BATCH = 5000  # rows per DELETE transaction: the write lock is held for milliseconds, not seconds
TOP_CLIENTS = 10  # addresses named in a summary row

_NOISE_SQL = ("(mac IS NULL AND run_id IS NULL AND (" + " OR ".join(
    [f"kind LIKE '{f}.%'" for f in sorted(NOISE_FAMILIES)] + [f"kind = '{k}'" for k in sorted(NOISE_KINDS)]) + "))")
_PROTECTED_SQL = (
    "(run_id IN (SELECT id FROM runs WHERE state NOT IN ({runs}))"
    " OR mac IN (SELECT mac FROM reinstalls WHERE step NOT IN ({ri}))"
    " OR mac IN (SELECT mac FROM attempts WHERE state IN ({live})))").format(
    runs=", ".join(f"'{s}'" for s in sorted(states.RUN_TERMINAL)),
    ri=", ".join(f"'{s}'" for s in sorted(states.REINSTALL_TERMINAL)),
    live=", ".join(f"'{s}'" for s in sorted(states.ATTEMPT_LIVE)))


def is_noise(kind: str, mac: str | None = None, run_id: str | None = None) -> bool:
    """True for events no authenticated party caused (sampled, best effort, pruned first)."""
    return mac is None and run_id is None and (kind.partition(".")[0] in NOISE_FAMILIES or kind in NOISE_KINDS)


class _Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float):
        self.tokens, self.stamp = tokens, stamp


class NoiseBudget:
    """Token buckets per (kind, client) and per kind; what they refuse is tallied for the summary rows.

    Defaults: one address may write 20 rows of a kind at once, then one per 5 s; all addresses together
    500 of a kind, then 50 per second. A PXE boot writes a handful of each kind, far below both.
    """

    MAX_CLIENTS = 10_000  # per-client buckets kept; beyond, the oldest are forgotten (spoofed UDP sources)

    def __init__(self, *, per_client: tuple[int, float] = (20, 0.2), per_kind: tuple[int, float] = (500, 50.0),
                 clock: Callable[[], float] = time.monotonic):
        self.per_client, self.per_kind, self.clock = per_client, per_kind, clock
        self.lock = threading.Lock()
        self.clients: dict[tuple[str, str], _Bucket] = {}
        self.kinds: dict[str, _Bucket] = {}
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}  # (kind, reason) -> count, bytes, clients
        self.sampled: Counter[str] = Counter()  # kind -> events folded into summaries (for /metrics)
        self.dropped: Counter[str] = Counter()  # kind -> events that could not be written (for /metrics)

    def _take(self, table: dict, key: Any, burst: int, rate: float, now: float) -> bool:
        bucket = table.get(key)
        if bucket is None:
            if table is self.clients and len(table) >= self.MAX_CLIENTS:
                del table[next(iter(table))]
            bucket = table[key] = _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def admit(self, kind: str, details: Mapping[str, Any]) -> bool:
        """True: write this event; False: it is folded into the next summary of its kind."""
        client = str(details.get("client") or details.get("client_ip") or "-")[:64]
        with self.lock:
            now = self.clock()
            if (self._take(self.clients, (kind, client), *self.per_client, now)
                    and self._take(self.kinds, kind, *self.per_kind, now)):
                return True
            count = details.get("count") if isinstance(details.get("count"), int) else 1
            entry = self.pending.setdefault((kind, str(details.get("reason") or "")[:64]),
                                            {"count": 0, "bytes": 0, "clients": Counter()})
            entry["count"] += count
            entry["bytes"] += details.get("bytes") if isinstance(details.get("bytes"), int) else 0
            entry["clients"][client] += count
            self.sampled[kind] += count
            return False

    def take_pending(self) -> list[tuple[str, dict[str, Any]]]:
        """The summary rows due: (kind, details with sampled=True, count, bytes, reason, top clients)."""
        with self.lock:
            pending, self.pending = self.pending, {}
        rows = []
        for (kind, reason), entry in sorted(pending.items()):
            details: dict[str, Any] = {"sampled": True, "count": entry["count"],
                                       "clients": dict(entry["clients"].most_common(TOP_CLIENTS)),
                                       "distinct_clients": len(entry["clients"])}
            if reason:
                details["reason"] = reason
            if entry["bytes"]:
                details["bytes"] = entry["bytes"]
            rows.append((kind, details))
        return rows



class EventsMixin:
    """add_event / events / flush_sampled / prune_events over the events table (StoreBase supplies _tx, _event)."""

    noise: NoiseBudget

    def add_event(self, kind: str, *, mac: str | None = None, run_id: str | None = None,
                  details: Mapping[str, Any] | None = None) -> None:
        """One event row in its own transaction. Noise is sampled (NoiseBudget) and best effort: a write that
        fails (disk full, read-only, corrupt) is dropped and counted. Other kinds raise as before: the run
        journal must be on disk before the change it announces."""
        details = dict(details or {})
        noise = is_noise(kind, mac, run_id)
        if noise and not self.noise.admit(kind, details):
            return
        try:
            with self._tx() as conn:  # type: ignore[attr-defined]
                self._event(conn, kind, mac=mac, run_id=run_id, details=details)  # type: ignore[attr-defined]
        except (*DB_ERRORS, OSError) as err:
            if not noise:
                raise
            self._dropped(kind, err)

    @contextlib.contextmanager
    def impatient(self) -> Iterator[None]:
        """Writes on this thread fail at once ("database is locked") instead of waiting busy_timeout for the lock:
        the TFTP decision thread tries a fetch record this way and queues it when another writer holds the lock.
        (PostgreSQL: the write transaction tries the write lock instead of waiting for it: store/postgres.py.)"""
        if getattr(self, "url", None):
            local = self._local  # type: ignore[attr-defined]
            local.impatient = True
            try:
                yield
            finally:
                local.impatient = False
            return
        conn = self._connect()  # type: ignore[attr-defined]
        patience = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute("PRAGMA busy_timeout=0")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(patience)}")

    def fetch_event_now(self, attempt: Any, details: Mapping[str, Any], *, boot_client: str | None = None) -> bool:
        """Write one fetch record at once if no other writer holds the lock (impatient); False: nothing written
        (locked, or the disk is full), the caller queues it instead."""
        try:
            with self.impatient():
                self.add_fetch_event(attempt, details, boot_client=boot_client,  # type: ignore[attr-defined]
                                     best_effort=False)
        except (*BUSY_ERRORS, OSError):
            return False
        return True

    def note_dropped(self, kind: str) -> int:
        """Count one event that was not written (a full queue, a failed write); returns the total dropped."""
        with self.noise.lock:
            self.noise.dropped[kind] += 1
            return sum(self.noise.dropped.values())

    def _dropped(self, kind: str, err: BaseException) -> None:
        if self.note_dropped(kind) == 1:  # one line, not one per packet: the counts are in /metrics
            log.error("could not write a %s event to %s (%s): noise events are dropped and counted",
                      kind, getattr(self, "where", "?"), err)

    def flush_sampled(self) -> int:
        """Write the summary rows of the sampled noise (best effort); returns how many were written."""
        written = 0
        for kind, details in self.noise.take_pending():
            try:
                with self._tx() as conn:  # type: ignore[attr-defined]
                    self._event(conn, kind, details=details)  # type: ignore[attr-defined]
                written += 1
            except (*DB_ERRORS, OSError) as err:
                self._dropped(kind, err)
        return written

    def event_counters(self) -> dict[str, dict[str, int]]:
        """{"sampled": kind -> count, "dropped": kind -> count} since this process started (for /metrics)."""
        with self.noise.lock:
            return {"sampled": dict(self.noise.sampled), "dropped": dict(self.noise.dropped)}

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
        rows = self._connect().execute(sql, args).fetchall()  # type: ignore[attr-defined]
        return [{**dict(row), "details": json.loads(row["details"])} for row in rows]

    def last_event_id(self) -> int:
        """The highest event id so far (0 for none): a reader scans only what came after it (boot/downloads.py)."""
        row = self._connect().execute("SELECT MAX(id) FROM events").fetchone()  # type: ignore[attr-defined]
        return int(row[0] or 0)

    def prune_events(self, *, max_age_days: int, max_rows: int, now: _dt.datetime | None = None) -> int:
        """Delete old noise (> max_age_days), old audit rows (> AUDIT_AGE_FACTOR x that), then the oldest rows,
        noise first, until at most max_rows remain; never rows of an active run / reinstall / live attempt.
        In PRUNE_BATCH-row transactions. Returns the rows deleted."""
        moment = now or _dt.datetime.now(_dt.timezone.utc)
        noise_cut = (moment - _dt.timedelta(days=max_age_days)).isoformat(timespec="milliseconds")
        audit_cut = (moment - _dt.timedelta(days=max_age_days * AUDIT_AGE_FACTOR)).isoformat(timespec="milliseconds")
        deleted = self._delete_where(f"{_NOISE_SQL} AND ts < ?", [noise_cut])
        deleted += self._delete_where(f"NOT {_NOISE_SQL} AND ts < ? AND NOT {_PROTECTED_SQL}", [audit_cut])
        for which in (_NOISE_SQL, f"NOT {_NOISE_SQL} AND NOT {_PROTECTED_SQL}"):
            excess = self._connect().execute("SELECT COUNT(*) FROM events").fetchone()[0] - max_rows  # type: ignore
            if excess <= 0:
                break
            deleted += self._delete_where(which, [], limit=excess)
        if deleted:
            log.info("pruned %d event rows from %s", deleted, getattr(self, "where", "?"))
        return deleted

    def _delete_where(self, where: str, args: list[Any], *, limit: int | None = None) -> int:
        deleted = 0
        while limit is None or deleted < limit:
            batch = PRUNE_BATCH if limit is None else min(PRUNE_BATCH, limit - deleted)
            with self._tx() as conn:  # type: ignore[attr-defined]
                n = conn.execute(f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE {where} "
                                 "ORDER BY id LIMIT ?)", [*args, batch]).rowcount
            deleted += n
            if n < batch:
                break
        return deleted
