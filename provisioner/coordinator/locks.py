"""Flow locks: an exclusive flock per pool (upgrade runs) and per host (lab reinstalls) under <db dir>/locks/.

A process holds the lock while one of its threads drives that pool's run or that host's reinstall, so two
processes sharing one store (`serve` and the CLI) never drive the same flow at once. The kernel releases a flock
even on kill -9, so a crashed driver never leaves a flow locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from provisioner.store import ConflictError, Store


class FlowLock:
    """An exclusive flock on <db dir>/locks/<name>.lock; ConflictError naming the holder's pid when taken."""

    def __init__(self, store: Store, name: str, busy: str):
        self.path = Path(store.data_dir) / "locks" / f"{name}.lock"
        self.busy = busy  # the ConflictError's message; "{pid}" is the holder
        self._fd: int | None = None

    def acquire(self) -> "FlowLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConflictError(self.busy.format(pid=holder)) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class PoolLock(FlowLock):
    """Held while a thread or process drives the pool's upgrade run."""

    def __init__(self, store: Store, pool: str):
        super().__init__(store, f"pool-{pool}", f"pool {pool} is being upgraded by another process (pid {{pid}}); "
                                                "follow it with `provisioner upgrade status --follow`")


class HostLock(FlowLock):
    """Held while a thread or process drives the host's lab reinstall."""

    def __init__(self, store: Store, mac: str):
        super().__init__(store, f"host-{mac.replace(':', '-')}",
                         f"host {mac} is being reinstalled by another process (pid {{pid}}); "
                         "follow it with `GET /api/v1/hosts/<mac>/reinstall` or the events")


def lock_holder(store: Store, pool: str) -> int | None:
    """The pid of the process driving `pool` (holding its lock file), or None: read from /proc/locks, so asking
    never takes the lock (taking it, even for an instant, could make a real `upgrade start` fail)."""
    path = PoolLock(store, pool).path
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 3403 00:2a:1234 0 EOF"; waiters have "->" after the id
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == ident:
            return int(parts[4])
    return None
