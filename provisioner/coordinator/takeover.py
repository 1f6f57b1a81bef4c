"""Taking over flows from a server that died: adopt the flows whose lease expired and resume them from the store.

Issue 22: several `serve` on one PostgreSQL database; the one driving a pool's run is killed (kill -9, machine
gone) in the middle of a step. Its lease (coordinator/locks.py) stops being renewed and expires after lease_ttl_s;
every other server's watch() finds it within a third of that and the first to take the lease (one write
transaction: only one can) resumes the run from its last committed step. The steps read the world before acting,
so the step the dead server was in is re-checked, never blindly repeated (docs/store.md "Leases").
A lease whose flow already ended is simply dropped.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from provisioner import states
from provisioner.coordinator.locks import host_lease, pool_lease
from provisioner.store import ConflictError, NotFoundError

log = logging.getLogger(__name__)


def adopt_expired(service: Any) -> list[str]:
    """Resume (on `service`, a FlowService) every flow whose lease expired; the lease names adopted."""
    store = service.store
    adopted = []
    for lease in store.expired_leases():
        if service._stop.is_set():
            break
        try:
            if lease.name.startswith("pool-"):
                pool = lease.name[len("pool-"):]
                if pool_lease(pool) == lease.name and store.list_runs(pool, active_only=True):
                    service.resume(pool)
                    adopted.append(lease.name)
                    continue
            else:
                found = next((r for r in store.active_reinstalls() if host_lease(r.mac) == lease.name), None)
                if found is not None and found.step not in states.REINSTALL_WAITING:
                    service.drive_reinstall(found.id)
                    adopted.append(lease.name)
                    continue
            store.release_lease(lease.name, lease.owner)  # nothing left to drive: drop the dead row
        except ConflictError:
            continue  # another server was quicker, or this one drives it already
        except (NotFoundError, ValueError, OSError) as exc:
            log.warning("lease %s not adopted: %s", lease.name, exc)
    return adopted


def watch(service: Any, period: float) -> threading.Thread:
    """A daemon thread calling adopt_expired(service) every `period` seconds until the service stops."""

    def loop() -> None:
        while not service._stop.wait(period):
            try:
                for name in adopt_expired(service):
                    log.warning("took over %s: its driver stopped renewing its lease", name)
            except Exception:  # noqa: BLE001 - a store hiccup must not end the watch
                log.exception("lease watch failed; trying again in %.0f s", period)

    thread = threading.Thread(target=loop, name="lease-watch", daemon=True)
    thread.start()
    return thread
