"""RunService: drives each pool's upgrade run on a background thread of one process (`serve`, or the CLI).

One run per pool at a time, several pools in parallel. A run's progress lines become `run.progress` events, so
the web and the CLI can follow a run another thread or process is driving. stop() interrupts every run at its
next wait or step boundary (the step is committed, so the run is resumable); a run thread that crashes records
`run.crashed` and leaves the run resumable too. A per-pool lock file (flock, released by the kernel even on
kill -9) keeps two processes sharing one store from driving the same pool's run at once.
"""

from __future__ import annotations

import fcntl
import inspect
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from provisioner import progress, states
from provisioner.config import Config
from provisioner.coordinator import pools, runner
from provisioner.coordinator.steps import RealClock, Timeouts
from provisioner.store import ConflictError, NotFoundError, Run, RunHost, Store

log = logging.getLogger(__name__)
JOIN_SECONDS = 60.0  # stop(): an XAPI call in flight ends within its own timeout (pools.DEFAULT_TIMEOUT)
# the run options start_run takes (stop_on_failure, disable_ha_wlb, ...); other keywords of start() go to Runner
RUN_OPTIONS = frozenset(name for name, p in inspect.signature(runner.start_run).parameters.items()
                        if p.kind == p.KEYWORD_ONLY)


class Interrupted(Exception):
    """The service is stopping: the run thread leaves at its next wait or step boundary (run stays resumable)."""


class _StoppableClock:
    """The run's clock, whose sleep() ends early (raising Interrupted) when the service stops."""

    def __init__(self, inner: Any, stop: threading.Event):
        self.inner, self.stop = inner, stop

    def now(self) -> float:
        return self.inner.now()

    def sleep(self, seconds: float) -> None:
        real = self.inner.real(seconds) if hasattr(self.inner, "real") else seconds  # simulator Clock: sim seconds
        if self.stop.is_set() or self.stop.wait(real):
            raise Interrupted("service stopping")


class PoolLock:
    """An exclusive flock on <db dir>/locks/pool-<name>.lock, held while a thread or process drives that pool."""

    def __init__(self, store: Store, pool: str):
        self.path = Path(store.path).parent / "locks" / f"pool-{pool}.lock"
        self._fd: int | None = None

    def acquire(self) -> "PoolLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConflictError(f"pool {self.path.stem[5:]} is being upgraded by another process (pid {holder}); "
                                "follow it with `provisioner upgrade status --follow`") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def lock_holder(store: Store, pool: str) -> int | None:
    """The pid of the process driving `pool` (holding its lock file), or None: read from /proc/locks, so asking
    never takes the lock (taking it, even for an instant, could make a real `upgrade start` fail)."""
    path = Path(store.path).parent / "locks" / f"pool-{pool}.lock"
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


class _Worker:
    def __init__(self, pool: str, run_id: str, thread: threading.Thread, lock: PoolLock):
        self.pool, self.run_id, self.thread, self.lock = pool, run_id, thread, lock


class RunService:
    """Runs upgrade runs on background threads; the store is the only shared state (see the module docstring)."""

    def __init__(self, store: Store, config: Config, *, connect: Callable[..., Any] = pools.connect,
                 clock: Any = None, timeouts: Timeouts | None = None):
        self.store, self.config, self.connect = store, config, connect
        self.clock = clock or RealClock()
        self.timeouts = timeouts
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}   # pool -> its worker (alive or just finished)
        self._claimed: set[str] = set()          # pools between "start requested" and "thread started"

    # --- public API ---

    def start(self, pool: str, media: str, *, stop_on_failure: bool = False, **kw: Any) -> Run:
        """Plan and create a run (ConflictError if the pool has one), then drive it on a thread; returns at once.

        Keywords in RUN_OPTIONS (e.g. disable_ha_wlb, migrate_back) go to start_run, the others (say, on_commit)
        to the Runner."""
        options = {k: kw.pop(k) for k in list(kw) if k in RUN_OPTIONS}
        runner_kw = kw
        with self._claim(pool) as lock:
            driver = self.connect(self.store, pool)
            try:
                run = runner.start_run(self.store, pool, media, driver, stop_on_failure=stop_on_failure, **options)
            except BaseException:
                _close(driver)
                raise
            self._launch(pool, run.id, driver, lock, runner_kw)
            return run

    def resume(self, pool: str, **runner_kw: Any) -> Run:
        """Drive the pool's run in progress again from its last committed step (NotFoundError when none)."""
        with self._claim(pool) as lock:
            run = runner.active_run(self.store, pool)
            self._launch(pool, run.id, self.connect(self.store, pool), lock, runner_kw)
            return run

    def resume_all(self) -> list[str]:
        """Resume every run not in a final state that no one drives; the ids resumed (skips are events)."""
        resumed = []
        for run in reversed(self.store.list_runs(active_only=True)):
            if self._stop.is_set():
                break
            try:
                resumed.append(self.resume(run.pool).id)
            except (ConflictError, NotFoundError, ValueError, OSError) as exc:
                self.store.add_event("run.resume_skipped", run_id=run.id, details={"error": str(exc)[:300]})
                log.warning("run %s not resumed: %s", run.id, exc)
        return resumed

    def abort(self, pool: str) -> Run:
        """Ask the pool's run to stop before its next destructive step; the thread driving it ends it ABORTED."""
        return runner.request_abort(self.store, pool)

    def running(self) -> list[str]:
        """Ids of the runs this service's threads are driving now."""
        with self._lock:
            return sorted(w.run_id for w in self._workers.values() if w.thread.is_alive())

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Wait up to `timeout` seconds for this service's thread on run_id; the run as stored (check .state)."""
        with self._lock:
            worker = next((w for w in self._workers.values() if w.run_id == run_id), None)
        if worker is not None:
            worker.thread.join(timeout)
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        return run

    def stop(self, timeout: float = JOIN_SECONDS) -> list[str]:
        """Interrupt every run at its next wait or step boundary and join the threads; the ids interrupted."""
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.thread.join(timeout)
        return [w.run_id for w in workers
                if (r := self.store.get_run(w.run_id)) is not None and r.state not in states.RUN_TERMINAL]

    # --- internals ---

    def _claim(self, pool: str) -> "_Claim":
        return _Claim(self, pool)

    def _launch(self, pool: str, run_id: str, driver: Any, lock: PoolLock, runner_kw: dict[str, Any]) -> None:
        thread = threading.Thread(target=self._drive, args=(run_id, driver, lock, dict(runner_kw)),
                                  name=f"run-{run_id}", daemon=True)
        with self._lock:
            self._workers[pool] = _Worker(pool, run_id, thread, lock)
        thread.start()

    def _drive(self, run_id: str, driver: Any, lock: PoolLock, runner_kw: dict[str, Any]) -> None:
        user_say = runner_kw.pop("say", None)
        user_commit = runner_kw.pop("on_commit", None)

        def say(line: str) -> None:
            self.store.add_event("run.progress", run_id=run_id, details={"line": line[:500]})
            if user_say is not None:
                user_say(line)

        def on_commit(rh: RunHost) -> None:
            if user_commit is not None:
                user_commit(rh)
            if self._stop.is_set():  # the step is committed: a resume runs it (steps are idempotent)
                raise Interrupted("service stopping")

        kw = {"clock": _StoppableClock(self.clock, self._stop), "timeouts": self.timeouts, **runner_kw,
              "say": say, "on_commit": on_commit}
        try:
            if self._stop.is_set():
                raise Interrupted("service stopping")
            final = runner.Runner(self.store, self.config, run_id, driver, **kw).run()
            log.info("run %s ended %s", run_id, final.state)
        except Interrupted:
            self.store.add_event("run.interrupted", run_id=run_id, details={"reason": "service stopping; resumable"})
        except Exception as exc:  # a bug or a lost store must not kill the server: record it, keep the run resumable
            log.exception("run %s crashed", run_id)
            self.store.add_event("run.crashed", run_id=run_id,
                                 details={"error": f"{type(exc).__name__}: {exc}"[:500], "resumable": True})
        finally:
            _close(driver)
            lock.release()


class _Claim:
    """Reserve a pool for start/resume: refuse if this service or another process drives it; undo on error."""

    def __init__(self, service: RunService, pool: str):
        self.service, self.pool = service, pool
        self.lock: PoolLock | None = None

    def __enter__(self) -> PoolLock:
        svc = self.service
        if svc._stop.is_set():
            raise ConflictError("the run service is stopping")
        with svc._lock:
            worker = svc._workers.get(self.pool)
            if self.pool in svc._claimed or (worker is not None and worker.thread.is_alive()):
                busy = worker.run_id if worker is not None and worker.thread.is_alive() else "a new run"
                raise ConflictError(f"pool {self.pool} is already being upgraded here ({busy}): "
                                    "abort it or wait for it to end")
            svc._claimed.add(self.pool)
        try:
            self.lock = PoolLock(svc.store, self.pool).acquire()
        except BaseException:
            with svc._lock:
                svc._claimed.discard(self.pool)
            raise
        return self.lock

    def __exit__(self, exc_type, exc, tb) -> None:
        with self.service._lock:
            self.service._claimed.discard(self.pool)
        if exc_type is not None and self.lock is not None:
            self.lock.release()


def _close(driver: Any) -> None:
    close = getattr(driver, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # closing a session the master already forgot is harmless
            log.debug("driver close failed", exc_info=True)


class ProgressReader:
    """Progress views (progress.run_view) of runs read from the store, whoever drives them (this process or not).

    Keeps each run's step events read so far, so following a run reads only the new events on each poll."""

    def __init__(self, store: Store):
        self.store = store
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._last: dict[str, int] = {}

    def step_events(self, run_id: str) -> list[dict[str, Any]]:
        seen = self._events.setdefault(run_id, [])
        while True:
            batch = self.store.events(run_id=run_id, since_id=self._last.get(run_id, 0))
            if not batch:
                return seen
            self._last[run_id] = batch[-1]["id"]
            seen += [e for e in batch if e["kind"].startswith("step.")]

    def view(self, run_id: str, now: float | None = None) -> dict[str, Any]:
        """The run's report with per-host step / elapsed / ETA seconds and the run's ETA."""
        report = runner.report(self.store, run_id)
        samples = [d for r in self.store.list_runs() if r.media == report["media"] and r.id != run_id
                   for d in progress.durations(self.step_events(r.id))]
        return progress.run_view(report, self.step_events(run_id), samples, time.time() if now is None else now)
