"""One read of the pool's hosts shared by the threads of a wave (docs/waves.md "Running a wave").

Every waiting step polls `driver.hosts()` (five XAPI calls: docs/xapi.md "Connections") every poll interval; N hosts
of a wave polling on their own multiply that load on the master by N for the same answer. SharedHosts hands each
thread a driver whose hosts() returns the wave's last read while it is younger than half a poll interval, and reads
again otherwise. Any other call (host.disable, VM.pool_migrate, host.reboot, ...) goes straight through and drops
the shared read, so a thread never sees the pool as it was before a change made through this wave's drivers.
"""

from __future__ import annotations

import threading
import time
from typing import Any

READS = frozenset({"hosts"})
"""The driver reads that are shared; every other driver method changes something or is read fresh."""
FRESH = frozenset({"precheck_facts", "pool_info", "vms", "pbds", "fork", "close", "relogin_master",
                   "evacuation_blockers", "memory_needs", "url", "trust", "timeout"})
"""Methods and attributes that neither use nor drop the shared read."""


class SharedHosts:
    """The wave's shared hosts() read: its value, when it was taken (time.monotonic()), and its lock."""

    def __init__(self, max_age: float):
        self.max_age = max_age
        self.lock = threading.Lock()
        self.value: Any = None
        self.taken = float("-inf")

    def read(self, driver: Any) -> Any:
        with self.lock:
            if time.monotonic() - self.taken <= self.max_age:
                return self.value
        value = driver.hosts()  # outside the lock: a slow master must not hold the other threads' own calls
        with self.lock:
            self.value, self.taken = value, time.monotonic()
        return value

    def drop(self) -> None:
        with self.lock:
            self.taken = float("-inf")

    def wrap(self, driver: Any) -> "SharingDriver":
        return SharingDriver(driver, self)


class SharingDriver:
    """A driver whose hosts() is the wave's shared read; anything else is the wrapped driver's."""

    def __init__(self, driver: Any, shared: SharedHosts):
        self._driver, self._shared = driver, shared

    def hosts(self) -> Any:
        return self._shared.read(self._driver)

    def fork(self) -> "SharingDriver":
        return SharingDriver(self._driver.fork(), self._shared)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._driver, name)
        if name in READS or name in FRESH or name.startswith("_") or not callable(found):
            return found

        def changing(*args: Any, **kw: Any) -> Any:
            try:
                return found(*args, **kw)
            finally:
                self._shared.drop()
        return changing
