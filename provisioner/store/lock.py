"""One `provisioner serve` per data directory: an flock on data_dir/serve.lock held for the process's life.

Issue 15 finding 11: two `serve` on one data dir both ran (two TFTP deciders, two coordinators resuming the
same runs). flock(2) is released by the kernel when the process dies, so a crash never leaves a stale lock;
the file holds the holder's PID, for the error message only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from provisioner.store.base import StoreError

LOCK_NAME = "serve.lock"


class DataDirBusy(StoreError):
    """Another process holds the data directory's serve lock; the message names it and what to do."""


class DataDirLock:
    """acquire() takes the lock or raises DataDirBusy; release() (or process exit) gives it back."""

    def __init__(self, data_dir: str | Path):
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"PID {holder}" if holder.isdigit() else "another process"
            raise DataDirBusy(f"data dir {self.path.parent} is in use by another `provisioner serve` ({who}, lock "
                              f"{self.path}): stop it first, or give this one its own data_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
