"""The event writer: one thread that owns every store write the TFTP decision thread would otherwise wait for.

Issue 15 finding 3: during a 300,000-row import every TFTP request (static pxelinux.0 included) stalled 6.6 s,
because the one deciding thread waited on SQLite's write lock for an event or a fetch record. Reads do not
wait (WAL: readers never block behind a writer), so the decision thread reads the store directly and hands
its writes (TFTP events, boot.* events, attempt fetch records) to this queue. The same thread writes the
summaries of sampled noise (store.flush_sampled) and enforces retention (store.prune_events).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Mapping

from provisioner.store import Store

log = logging.getLogger(__name__)

FLUSH_SECONDS = 10.0  # how often summaries of sampled noise are written
PRUNE_SECONDS = 600.0  # how often retention runs (and once at start)


def _attempt_id(attempt: Any) -> Any:
    return getattr(attempt, "id", attempt)


class EventWriter:
    """A bounded queue drained by its own thread; a full queue sheds the write (counted), never blocks the caller."""

    def __init__(self, store: Store, *, max_age_days: int, max_rows: int, maxsize: int = 10_000,
                 flush_seconds: float = FLUSH_SECONDS, prune_seconds: float = PRUNE_SECONDS):
        self.store, self.max_age_days, self.max_rows = store, max_age_days, max_rows
        self.flush_seconds, self.prune_seconds = flush_seconds, prune_seconds
        self.dropped = 0
        # Fetch records handed in, shed (full queue) and written: each counter has one writing thread.
        self._fetches_in = self._fetches_shed = self._fetches_out = 0
        # Unbounded queue, bound enforced in _put: the first binding fetch record of an attempt always gets in.
        self.maxsize = maxsize
        self._queue: queue.Queue = queue.Queue()
        self._binding_queued: set = set()  # attempt ids whose first boot_client record is queued (one per arming)
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()

    # --- what callers hand in (never blocks) ---

    def _put(self, item: tuple) -> None:
        binding = item[0] == "fetch" and item[3] is not None and _attempt_id(item[1]) not in self._binding_queued
        if binding:
            # Never shed: it binds the attempt to the booting host (without it the host's answer file is refused).
            self._binding_queued.add(_attempt_id(item[1]))
            self._queue.put_nowait(item)
            return
        if self._queue.qsize() < self.maxsize:
            self._queue.put_nowait(item)
        else:
            self.dropped += 1  # a flood: shed events rather than memory or the caller's time
            if item[0] == "fetch":
                self._fetches_shed += 1
            self.store.note_dropped(item[1] if item[0] == "event" else "attempt.fetch")

    def tftp_event(self, kind: str, client_ip: Any, filename: Any, details: Any) -> None:
        """TftpService's on_event: kind "sent" becomes a `tftp.sent` row (sampled like any noise)."""
        self._put(("event", f"tftp.{kind}", None, None, {"client": client_ip, "file": str(filename)[:200],
                                                         **(details or {})}))

    def add_event(self, kind: str, *, mac: str | None = None, run_id: str | None = None,
                  details: Mapping[str, Any] | None = None) -> None:
        self._put(("event", kind, mac, run_id, dict(details or {})))

    def add_fetch_event(self, attempt: Any, details: Mapping[str, Any], *, boot_client: str | None = None) -> None:
        self._fetches_in += 1
        self._put(("fetch", attempt, dict(details), boot_client))

    @property
    def fetches_pending(self) -> int:
        """Fetch records queued and not yet written (DecisionStore never lets a new one overtake them)."""
        return self._fetches_in - self._fetches_shed - self._fetches_out

    # --- the writing thread ---

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_seconds
        next_prune = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=max(0.01, min(next_flush, next_prune) - time.monotonic()))
            except queue.Empty:
                item = ()
            if item is None:
                self._flush()
                self._queue.task_done()
                return
            if item:
                self._write(item)
                self._queue.task_done()
            now = time.monotonic()
            if now >= next_flush:
                self._flush()
                next_flush = now + self.flush_seconds
            if now >= next_prune:
                self.prune()
                next_prune = now + self.prune_seconds

    def _write(self, item: tuple) -> None:
        try:
            if item[0] == "event":
                self.store.add_event(item[1], mac=item[2], run_id=item[3], details=item[4])
            else:
                try:
                    self.store.add_fetch_event(item[1], item[2], boot_client=item[3])
                finally:
                    self._fetches_out += 1
        except Exception as exc:  # disk full, locked for 30 s, a bug: drop this one, never the writer
            self.store.note_dropped(item[1] if item[0] == "event" else "attempt.fetch")
            log.warning("could not record %s: %s", item[1] if item[0] == "event" else "a fetch", exc)

    def _flush(self) -> None:
        try:
            self.store.flush_sampled()
        except Exception:
            log.exception("could not write the summaries of sampled events")

    def prune(self) -> int:
        """Enforce events_max_age_days / events_max_rows now; the rows deleted (0 when it failed)."""
        try:
            return self.store.prune_events(max_age_days=self.max_age_days, max_rows=self.max_rows)
        except Exception:
            log.exception("could not prune the events table")
            return 0

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class DecisionStore:
    """The store as the TFTP decision thread sees it: reads go to the store (WAL readers never wait), events go
    to the EventWriter's queue, and a fetch record is written at once if the write lock is free (busy_timeout 0:
    the attempt's boot_client is then set before the host can ask for its answer file), else queued, in order."""

    def __init__(self, store: Store, writer: EventWriter):
        self._store, self._writer = store, writer

    def add_event(self, kind: str, *, mac: str | None = None, run_id: str | None = None,
                  details: Mapping[str, Any] | None = None) -> None:
        self._writer.add_event(kind, mac=mac, run_id=run_id, details=details)

    def add_fetch_event(self, attempt: Any, details: Mapping[str, Any], *, boot_client: str | None = None) -> None:
        # Never overtake a queued record (the first boot_client must win); locked or full: the writer retries it.
        if not self._writer.fetches_pending and self._store.fetch_event_now(attempt, details, boot_client=boot_client):
            return
        self._writer.add_fetch_event(attempt, details, boot_client=boot_client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)  # reads: get_host, current_attempt, get_media, ...
