"""Reads of the pool shared by the threads of a wave (docs/waves.md "Running a wave").

Every waiting step polls `driver.hosts()` (five XAPI calls: docs/xapi.md "Connections") every poll interval, every
host of a wave reads `driver.vms()` (five calls, the biggest records of the pool) as it starts its evacuation, and
every host's CHECK asks each member to answer (members.py: one call per member); N hosts doing so on their own
multiply that load on the master by N for the same answer. SharedReads hands each thread a driver whose hosts(),
vms() and shared(key, read) join the read another thread of the wave has under way, or take its answer, while that
read started less than `max_age` seconds ago; otherwise the thread reads itself, and the others join it.

Any other call (host.disable, VM.pool_migrate, host.reboot, ...; a raw `call` unless it is a `get_*` getter) goes
straight through and, once it returned, makes every read started before it unusable (a generation count): a thread
never sees the pool as it was before a change made through this wave's drivers, not even from a read that was
already under way when the change was made.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

READS = frozenset({"hosts", "vms"})
"""The driver reads that are shared; every other driver method changes something or is read fresh."""
FRESH = frozenset({"precheck_facts", "pool_info", "pbds", "relogin_master",
                   "evacuation_blockers", "memory_needs", "url", "trust", "timeout",
                   # XAPI's checks and reads that change nothing (docs/xapi.md): host.assert_can_evacuate,
                   # VM.assert_can_boot_here, the tasks, pinning devices, facts and update levels read
                   "assert_can_evacuate", "assert_can_boot_here", "running_tasks", "pinning_devices",
                   "management_network", "local_disks", "join_facts", "safe_to_upgrade", "dom0_memory_after_upgrade",
                   "server_key_bits", "repositories", "pool_repositories", "update_level", "host_operations",
                   "server_certificate"})
"""Methods and attributes that neither use nor drop the shared reads."""


class _Read:
    """One read under way or done: when it started, in which generation, and its answer once done."""

    def __init__(self, started: float, generation: int):
        self.started, self.generation = started, generation
        self.done = threading.Event()
        self.value: Any = None
        self.failed = False


class Sessions:
    """Forks of the run's driver kept logged in for the threads of its waves (each host's thread, each migration
    worker: docs/waves.md "Running a wave"): a thread takes an idle one or a new fork, and gives it back when done,
    instead of a login and a logout per thread (a TLS connection and a call each, for every host and every VM of
    every wave). A session the master forgot (its restart) is logged in again by the driver's own call."""

    def __init__(self, driver: Any):
        self.driver, self.idle, self.lock, self.closed = driver, [], threading.Lock(), False

    def take(self) -> Any:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        return self.driver.fork()

    def give_back(self, driver: Any) -> None:
        with self.lock:
            if not self.closed:
                self.idle.append(driver)
                return
        driver.close()

    def close(self) -> None:
        """Log every idle session out; one given back later is logged out then."""
        with self.lock:
            self.closed, idle, self.idle = True, self.idle, []
        for driver in idle:
            driver.close()


class SharedReads:
    """The wave's shared reads (one per driver method in READS), their lock and the generation of changes; the
    run's Sessions its threads' drivers come from (None: a fork of their own each)."""

    def __init__(self, max_age: float, sessions: Sessions | None = None):
        self.max_age, self.sessions = max_age, sessions
        self.lock = threading.Lock()
        self.generation = 0
        self.reads: dict[str, _Read] = {}

    def read(self, driver: Any, method: str) -> Any:
        return self.run(method, getattr(driver, method))

    def run(self, key: str, read: Callable[[], Any]) -> Any:
        """read()'s answer, shared under `key` by the threads of the wave as described above."""
        with self.lock:
            found = self.reads.get(key)
            usable = (found is not None and not found.failed and found.generation == self.generation
                      and time.monotonic() - found.started <= self.max_age)
            if not usable:
                found = self.reads[key] = _Read(time.monotonic(), self.generation)
        if usable:
            found.done.wait()  # outside the lock: a slow master must not hold the other threads' own calls
            if not found.failed:
                return found.value
            return read()  # the read it joined failed: its own call, its own error
        try:
            found.value = read()
            return found.value
        except BaseException:
            found.failed = True
            raise
        finally:
            found.done.set()

    def drop(self) -> None:
        """A change was made: no read started before now may serve anyone."""
        with self.lock:
            self.generation += 1

    def wrap(self, driver: Any) -> "SharingDriver":
        return SharingDriver(driver, self)

    def session(self, driver: Any) -> "SharingDriver":
        """A driver of its own for a thread of the wave: a session from the run's Sessions, or a fork of `driver`."""
        if self.sessions is None:
            return SharingDriver(driver.fork(), self)
        return SharingDriver(self.sessions.take(), self, pooled=True)


class SharingDriver:
    """A driver whose hosts() and vms() are the wave's shared reads; anything else is the wrapped driver's."""

    def __init__(self, driver: Any, shared: SharedReads, pooled: bool = False):
        self._driver, self._shared, self._pooled = driver, shared, pooled

    def hosts(self) -> Any:
        return self._shared.read(self._driver, "hosts")

    def vms(self) -> Any:
        return self._shared.read(self._driver, "vms")

    def fork(self) -> "SharingDriver":
        return self._shared.session(self._driver)

    def close(self) -> None:
        """Its session goes back to the run's Sessions when it came from there, else it is logged out."""
        if self._pooled:
            self._shared.sessions.give_back(self._driver)
        else:
            self._driver.close()

    def shared(self, key: str, read: Callable[[], Any]) -> Any:
        """A read made of several calls (members.py: does every member answer?), shared by the wave's threads."""
        return self._shared.run(key, read)

    def call(self, method: str, *args: Any) -> Any:
        """A raw call: a getter (`<class>.get_*`: XAPI's generated field getters, get_record, get_all_records,
        get_by_uuid, and messages such as host.get_servertime, all read-only) neither uses nor drops the shared
        reads; any other method is a change and drops them."""
        if method.rsplit(".", 1)[-1].startswith("get_"):
            return self._driver.call(method, *args)
        try:
            return self._driver.call(method, *args)
        finally:
            self._shared.drop()

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
