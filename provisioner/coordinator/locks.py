"""Flow leases: one driver per pool (upgrade runs) and per host (lab reinstalls), across processes AND servers.

A lease row in the store (store/leases.py, migration 14) replaces the lock files of before: several `serve` on
one PostgreSQL database (issue 22) cannot share a flock, but they share the store. The driving process renews
its lease every ttl/3 seconds on a thread; if it dies (kill -9, machine gone) the lease expires after at most
`lease_ttl_s` and another server's watcher (FlowService.adopt_expired) takes it and resumes the flow from the
store; a process of the same machine takes it at once when the kernel says its owner's pid is gone (a restarted
`serve` after kill -9). If renewing fails for longer than the ttl (database unreachable) or another server took the lease, the
lock's `lost` event is set and the flow stops at its next wait or step boundary: two drivers never act at once.
A lock released cleanly deletes its row: a flow stopped on purpose is resumed by `upgrade resume` or at the
next `serve` start, as before (docs/store.md "Leases").
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time

from provisioner.store import ConflictError, Store
from provisioner.store.errors import DB_ERRORS

log = logging.getLogger(__name__)
DEFAULT_TTL_S = 15.0
_serial = itertools.count(1)


def process_owner() -> str:
    """This process's name in lease rows: host name and pid (read when asked, never at import)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_pid(owner: str) -> int | None:
    """The pid in an owner string made by FlowLock ("host:pid:n"), or None."""
    parts = owner.split(":")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def _dead_here(owner: str) -> bool:
    """True when `owner` names a process of THIS machine that no longer exists (the kernel says so): its lease
    can be taken at once, as the kernel released a flock of a dead process before leases (e.g. serve restarted
    after kill -9)."""
    host, _, rest = owner.partition(":")
    pid = owner_pid(owner)
    if host != socket.gethostname() or pid is None or not rest:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class FlowLock:
    """acquire() takes the lease `name` or raises ConflictError (naming the holder); a thread renews it until
    release(). `lost` is set when the lease could not be kept (see the module docstring)."""

    def __init__(self, store: Store, name: str, busy: str, *, ttl: float = DEFAULT_TTL_S):
        self.store, self.name, self.busy, self.ttl = store, name, busy, float(ttl)
        self.owner = f"{process_owner()}:{next(_serial)}"  # unique per acquisition, even within one process
        self.lost = threading.Event()
        self.taken_over: str | None = None  # the previous owner whose expired lease acquire() took
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "FlowLock":
        lease, holder = self.store.take_lease(self.name, self.owner, self.ttl)
        if lease is None and _dead_here(holder.owner):  # a crashed process of this machine: no need to wait
            lease, holder = self.store.take_lease(self.name, self.owner, self.ttl, dead_owner=holder.owner)
        if lease is None:
            pid = owner_pid(holder.owner)
            raise ConflictError(self.busy.format(holder=holder.owner, pid=pid if pid is not None else holder.owner))
        self.taken_over = lease.previous_owner
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.store.renew_lease(self.name, self.owner, self.ttl):
                    self._lose("taken over by another server")
                    return
                last_ok = time.monotonic()
            except DB_ERRORS as exc:  # the database is unreachable: keep trying until the lease has run out
                log.warning("lease %s not renewed: %s", self.name, exc)
                if time.monotonic() - last_ok >= self.ttl:
                    self._lose(f"not renewed for {self.ttl:.0f} s: {exc}")
                    return

    def _lose(self, why: str) -> None:
        log.error("lease %s lost (%s): the flow stops at its next wait or step boundary", self.name, why)
        try:  # the event first: whoever sees `lost` finds it recorded
            self.store.add_event("lease.lost", details={"lease": self.name, "owner": self.owner, "reason": why})
        except DB_ERRORS:
            pass
        finally:
            self.lost.set()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None
        if not self.lost.is_set():
            try:
                self.store.release_lease(self.name, self.owner)
            except DB_ERRORS as exc:  # it expires by itself
                log.warning("lease %s not released (it expires in %.0f s): %s", self.name, self.ttl, exc)


class StopOrLost:
    """Set when the service stops OR the flow's lease is lost: what a flow's clock waits on (service.py)."""

    def __init__(self, service: threading.Event, lost: threading.Event):
        self.service, self.lost = service, lost

    def is_set(self) -> bool:
        return self.service.is_set() or self.lost.is_set()

    def wait(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.service.wait(min(left, 0.5))
        return True


def pool_lease(pool: str) -> str:
    return f"pool-{pool}"


def host_lease(mac: str) -> str:
    return f"host-{mac.replace(':', '-')}"


class PoolLock(FlowLock):
    """Held while a thread or process drives the pool's upgrade run."""

    def __init__(self, store: Store, pool: str, *, ttl: float = DEFAULT_TTL_S):
        super().__init__(store, pool_lease(pool), f"pool {pool} is being upgraded by another process (pid {{pid}}, "
                                                  "lease owner {holder}); follow it with "
                                                  "`provisioner upgrade status --follow`", ttl=ttl)


class HostLock(FlowLock):
    """Held while a thread or process drives the host's lab reinstall."""

    def __init__(self, store: Store, mac: str, *, ttl: float = DEFAULT_TTL_S):
        super().__init__(store, host_lease(mac),
                         f"host {mac} is being reinstalled by another process (pid {{pid}}, lease owner {{holder}}); "
                         "follow it with `GET /api/v1/hosts/<mac>/reinstall` or the events", ttl=ttl)


def lock_holder(store: Store, pool: str) -> str | None:
    """The owner ("host:pid:n") of the live lease on `pool`'s run, or None when no process drives it."""
    lease = store.lease_holder(pool_lease(pool))
    return lease.owner if lease else None
