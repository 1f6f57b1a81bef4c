"""FlowService: drives every long flow of one process (`serve`, or the CLI) on background threads.

Two kinds of flow: a pool's upgrade run (runner.py) and a host's lab reinstall (reinstall.py). Both are
commit-then-act state machines in the store, so the service treats them alike: one flow per pool (runs) or per
host (reinstalls) at a time, several in parallel; progress lines become `run.progress` / `reinstall.progress`
events, so the web and the CLI can follow a flow another thread or process is driving; stop() interrupts every
flow at its next wait or step boundary (the step is committed, so the flow is resumable); a flow thread that
crashes records `run.crashed` / `reinstall.crashed` and leaves the flow resumable too; at `serve` start-up
resume_all() and resume_reinstalls() drive again every flow left unfinished. A lease per pool and per host
(locks.py, in the store) keeps two processes or servers sharing one store from driving the same flow at once;
adopt_expired() takes over the flows whose driver died holding its lease (another server, kill -9).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any, Callable

from provisioner import progress, states
from provisioner.config import Config
from provisioner.coordinator import pools, reinstall, runner, wiring
from provisioner.coordinator import report as run_report
from provisioner.coordinator.context import ReinstallTimeouts
from provisioner.coordinator import takeover
from provisioner.coordinator.locks import FlowLock, HostLock, PoolLock, StopOrLost
from provisioner.coordinator.steps import RealClock, Timeouts
from provisioner.store import ConflictError, NotFoundError, Run, Store
from provisioner.store.reinstalls import Reinstall

log = logging.getLogger(__name__)
JOIN_SECONDS = 60.0  # stop(): an XAPI call in flight ends within its own timeout (xapi.DEFAULT_TIMEOUT)
# the run options create_run takes (stop_on_failure, disable_ha_wlb, ...); other keywords of start() go to Runner
RUN_OPTIONS = frozenset(name for name, p in inspect.signature(runner.create_run).parameters.items()
                        if p.kind == p.KEYWORD_ONLY and name != "config")  # config: the service's own
RUN, REINSTALL = "run", "reinstall"  # the kinds of flow


class Interrupted(Exception):
    """The service is stopping: the flow's thread leaves at its next wait or step boundary (flow stays resumable)."""


class _StoppableClock:
    """The flow's clock, whose sleep() ends early (raising Interrupted) when the service stops."""

    def __init__(self, inner: Any, stop: threading.Event):
        self.inner, self.stop = inner, stop

    def now(self) -> float:
        return self.inner.now()

    def sleep(self, seconds: float) -> None:
        real = self.inner.real(seconds) if hasattr(self.inner, "real") else seconds  # simulator Clock: sim seconds
        if self.stop.is_set() or self.stop.wait(real):
            raise Interrupted("service stopping")


class _Worker:
    def __init__(self, kind: str, flow_id: Any, thread: threading.Thread):
        self.kind, self.flow_id, self.thread = kind, flow_id, thread


class FlowService:
    """Drives upgrade runs and lab reinstalls on background threads; the store is the only shared state."""

    def __init__(self, store: Store, config: Config, *, connect: Callable[..., Any] = pools.connect,
                 connect_host: Callable[..., Any] | None = None, clock: Any = None,
                 timeouts: Timeouts | None = None, reinstall_timeouts: ReinstallTimeouts | None = None):
        self.store, self.config, self.connect = store, config, connect
        self.connect_host = connect_host or wiring.host_driver
        self.clock = clock or RealClock()
        self.timeouts = timeouts  # None: the Runner's own (wiring.run_timeouts)
        self.reinstall_timeouts = reinstall_timeouts or wiring.reinstall_timeouts(config)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}   # "pool:<name>" / "host:<mac>" -> its worker (alive or finished)
        self._claimed: set[str] = set()          # keys between "start requested" and "thread started"

    # --- upgrade runs ---

    def start(self, pool: str, media: str, *, stop_on_failure: bool = False, **kw: Any) -> Run:
        """Plan and create a run (ConflictError if the pool has one), then drive it on a thread; returns at once.

        Keywords in RUN_OPTIONS (e.g. disable_ha_wlb, migrate_back) go to create_run, the others (say, on_commit)
        to the Runner."""
        options = {k: kw.pop(k) for k in list(kw) if k in RUN_OPTIONS}
        with _Claim(self, f"pool:{pool}", self._pool_lock(pool), f"pool {pool} is already being upgraded "
                    "here") as lock:
            driver = self.connect(self.store, pool)
            try:
                run, plan = runner.create_run(self.store, pool, media, driver, stop_on_failure=stop_on_failure,
                                              config=self.config, **options)
            except BaseException:
                _close(driver)
                raise
            # the run's PRECHECK decides on the plan just made (the same driver, options and configuration)
            self._launch(f"pool:{pool}", RUN, run.id,
                         lambda: self._drive_run(run.id, driver, lock, {**kw, "precheck": plan}))
            return run

    def resume(self, pool: str, **runner_kw: Any) -> Run:
        """Drive the pool's run in progress again from its last committed step (NotFoundError when none)."""
        with _Claim(self, f"pool:{pool}", self._pool_lock(pool), f"pool {pool} is already being upgraded "
                    "here") as lock:
            run = runner.active_run(self.store, pool)
            if lock.taken_over:
                self.store.add_event("run.taken_over", run_id=run.id, details={
                    "pool": pool, "previous_owner": lock.taken_over, "owner": lock.owner})
            driver = self.connect(self.store, pool)
            self._launch(f"pool:{pool}", RUN, run.id, lambda: self._drive_run(run.id, driver, lock, runner_kw))
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

    def adopt_expired(self) -> list[str]:
        """Take over the flows whose driver died holding their lease and resume them (coordinator/takeover.py)."""
        return takeover.adopt_expired(self)

    def watch_leases(self, interval: float | None = None) -> threading.Thread:
        """adopt_expired() every `interval` seconds (default lease_ttl_s / 3) until stop() (coordinator/takeover.py)."""
        return takeover.watch(self, interval if interval is not None else self._ttl() / 3)

    def abort(self, pool: str) -> Run:
        """Ask the pool's run to stop before its next destructive step; the thread driving it ends it ABORTED."""
        return runner.request_abort(self.store, pool)

    def running(self) -> list[str]:
        """Ids of the runs this service's threads are driving now."""
        return self._alive(RUN)

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Wait up to `timeout` seconds for this service's thread on run_id; the run as stored (check .state)."""
        self._join(RUN, run_id, timeout)
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFoundError(f"no run {run_id}")
        return run

    # --- lab reinstalls ---

    def start_reinstall(self, mac: str, pool: str, media: str, *, say: Callable[[str], None] | None = None,
                        power_on: Callable[[], None] | None = None,
                        on_commit: Callable[[Reinstall], None] | None = None, **checks: Any) -> Reinstall:
        """Check everything and commit the flow (reinstall.start: ReinstallRefused with every problem), or find the
        host's flow in progress; then drive it on a thread and return at once. `checks` are reinstall.start's
        keywords (confirm, forget, root_password_hash, host_url, accept_data_loss, fix_before_join)."""
        found = reinstall.start(self.store, mac, pool, media, connect=lambda name: self.connect(self.store, name),
                                **checks)
        for line in reinstall.opening_lines(self.store, found):
            self._reinstall_say(found, say)(line)
        return self.drive_reinstall(found.id, say=say, power_on=power_on, on_commit=on_commit)

    def drive_reinstall(self, reinstall_id: int, *, say: Callable[[str], None] | None = None,
                        power_on: Callable[[], None] | None = None,
                        on_commit: Callable[[Reinstall], None] | None = None) -> Reinstall:
        """Drive a committed reinstall from its step on a thread (a waiting one retries pool.join): one driver per
        flow, so a flow this service drives already is only returned; ConflictError if another process drives it."""
        found = self.store.get_reinstall(reinstall_id)
        if found is None:
            raise NotFoundError(f"no reinstall {reinstall_id}")
        if found.step in states.REINSTALL_TERMINAL or reinstall_id in self._alive(REINSTALL):
            return found
        key = f"host:{found.mac}"
        with _Claim(self, key, HostLock(self.store, found.mac, ttl=self._ttl()), f"host {found.mac} is already being "
                    "reinstalled "
                    "here") as lock:
            self._launch(key, REINSTALL, reinstall_id,
                         lambda: self._drive_reinstall(found, lock, say, power_on, on_commit))
            return found

    def resume_reinstalls(self) -> list[int]:
        """Drive again every reinstall left unfinished (not one waiting for the operator at JOIN_REFUSED); the ids
        resumed (skips are events). Safe: each step reads the world first (reinstall.py)."""
        resumed = []
        for found in self.store.active_reinstalls():
            if self._stop.is_set():
                break
            if found.step in states.REINSTALL_WAITING:
                continue  # the operator fixes the new host and runs the command again
            try:
                resumed.append(self.drive_reinstall(found.id).id)
            except (ConflictError, NotFoundError, ValueError, OSError) as exc:
                self.store.add_event("reinstall.resume_skipped", mac=found.mac,
                                     details={"reinstall": found.id, "error": str(exc)[:300]})
                log.warning("reinstall %s not resumed: %s", found.id, exc)
        return resumed

    def reinstalling(self) -> list[int]:
        """Ids of the reinstalls this service's threads are driving now."""
        return self._alive(REINSTALL)

    def wait_reinstall(self, reinstall_id: int, timeout: float | None = None) -> Reinstall:
        """Wait up to `timeout` seconds for this service's thread on the reinstall; the reinstall as stored."""
        self._join(REINSTALL, reinstall_id, timeout)
        found = self.store.get_reinstall(reinstall_id)
        if found is None:
            raise NotFoundError(f"no reinstall {reinstall_id}")
        return found

    # --- every flow ---

    def stop(self, timeout: float = JOIN_SECONDS) -> list[str]:
        """Interrupt every flow at its next wait or step boundary and join the threads; the ids of the runs
        interrupted (the reinstalls interrupted: interrupted_reinstalls())."""
        self._stop.set()
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.thread.join(timeout)
        return [w.flow_id for w in workers if w.kind == RUN
                and (r := self.store.get_run(w.flow_id)) is not None and r.state not in states.RUN_TERMINAL]

    def interrupted_reinstalls(self) -> list[int]:
        """After stop(): the reinstalls this service drove that are not finished (resumable by the next start)."""
        with self._lock:
            ids = [w.flow_id for w in self._workers.values() if w.kind == REINSTALL]
        return [i for i in ids if (r := self.store.get_reinstall(i)) is not None
                and r.step not in states.REINSTALL_TERMINAL and r.step not in states.REINSTALL_WAITING]

    # --- internals ---

    def _alive(self, kind: str) -> list:
        with self._lock:
            return sorted(w.flow_id for w in self._workers.values() if w.kind == kind and w.thread.is_alive())

    def _join(self, kind: str, flow_id: Any, timeout: float | None) -> None:
        with self._lock:
            worker = next((w for w in self._workers.values() if w.kind == kind and w.flow_id == flow_id), None)
        if worker is not None:
            worker.thread.join(timeout)

    def _launch(self, key: str, kind: str, flow_id: Any, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"{kind}-{flow_id}", daemon=True)
        with self._lock:
            self._workers[key] = _Worker(kind, flow_id, thread)
        thread.start()

    def _on_commit(self, user: Callable[[Any], None] | None,
                   lost: threading.Event | None = None) -> Callable[[Any], None]:
        def on_commit(record: Any) -> None:
            if user is not None:
                user(record)
            if self._stop.is_set():  # the step is committed: a resume runs it (steps read the world first)
                raise Interrupted("service stopping")
            if lost is not None and lost.is_set():  # another server took the flow: it acts, not this one
                raise Interrupted("lease lost")
        return on_commit

    def _ttl(self) -> float:
        return float(getattr(self.config, "lease_ttl_s", 15))

    def _pool_lock(self, pool: str) -> PoolLock:
        return PoolLock(self.store, pool, ttl=self._ttl())

    def _drive_run(self, run_id: str, driver: Any, lock: FlowLock, runner_kw: dict[str, Any]) -> None:
        runner_kw = dict(runner_kw)
        user_say = runner_kw.pop("say", None)

        def say(line: str) -> None:
            self.store.add_event("run.progress", run_id=run_id, details={"line": line[:500]})
            if user_say is not None:
                user_say(line)

        on_commit = self._on_commit(runner_kw.pop("on_commit", None), lock.lost)
        kw = {"clock": _StoppableClock(self.clock, StopOrLost(self._stop, lock.lost)), "timeouts": self.timeouts,
              **runner_kw,
              "say": say, "on_commit": on_commit}
        try:
            if self._stop.is_set():
                raise Interrupted("service stopping")
            final = runner.Runner(self.store, self.config, run_id, driver, **kw).run()
            log.info("run %s ended %s", run_id, final.state)
        except Interrupted:
            why = "lease lost: another server drives it" if lock.lost.is_set() else "service stopping; resumable"
            self.store.add_event("run.interrupted", run_id=run_id, details={"reason": why})
        except Exception as exc:  # a bug or a lost store must not kill the server: record it, keep the run resumable
            log.exception("run %s crashed", run_id)
            self.store.add_event("run.crashed", run_id=run_id,
                                 details={"error": f"{type(exc).__name__}: {exc}"[:500], "resumable": True})
        finally:
            _close(driver)
            lock.release()

    def _reinstall_say(self, found: Reinstall, user: Callable[[str], None] | None) -> Callable[[str], None]:
        def say(line: str) -> None:
            self.store.add_event("reinstall.progress", mac=found.mac, details={"reinstall": found.id,
                                                                               "line": line[:500]})
            if user is not None:
                user(line)
        return say

    def _drive_reinstall(self, found: Reinstall, lock: FlowLock, say: Callable[[str], None] | None,
                         power_on: Callable[[], None] | None, on_commit: Callable[[Reinstall], None] | None) -> None:
        try:
            if self._stop.is_set():
                raise Interrupted("service stopping")
            flow = reinstall.Flow(self.store, self.config, found.id,
                                  connect=lambda name: self.connect(self.store, name), connect_host=self.connect_host,
                                  clock=_StoppableClock(self.clock, StopOrLost(self._stop, lock.lost)),
                                  timeouts=self.reinstall_timeouts,
                                  say=self._reinstall_say(found, say), power_on=power_on,
                                  on_commit=self._on_commit(on_commit, lock.lost))
            final = flow.run()
            log.info("reinstall %s ended %s", found.id, final.step)
        except Interrupted:
            self.store.add_event("reinstall.interrupted", mac=found.mac,
                                 details={"reinstall": found.id, "reason": "service stopping; resumable"})
        except Exception as exc:  # noqa: BLE001 - a crashed thread leaves the flow resumable; say why
            log.exception("reinstall %s crashed", found.id)
            self.store.add_event("reinstall.crashed", mac=found.mac,
                                 details={"reinstall": found.id, "error": repr(exc)[:500]})
        finally:
            lock.release()


class _Claim:
    """Reserve a flow's key for start/resume: refuse if this service or another process drives it; undo on
    error."""

    def __init__(self, service: FlowService, key: str, lock: FlowLock, busy: str):
        self.service, self.key, self.lock, self.busy = service, key, lock, busy
        self.taken = False

    def __enter__(self) -> FlowLock:
        svc = self.service
        if svc._stop.is_set():
            raise ConflictError("the flow service is stopping")
        with svc._lock:
            worker = svc._workers.get(self.key)
            alive = worker is not None and worker.thread.is_alive()
            if self.key in svc._claimed or alive:
                raise ConflictError(f"{self.busy} ({worker.flow_id if alive else 'a new one'}): "
                                    "abort it or wait for it to end")
            svc._claimed.add(self.key)
        try:
            self.lock.acquire()
            self.taken = True
        except BaseException:
            with svc._lock:
                svc._claimed.discard(self.key)
            raise
        return self.lock

    def __exit__(self, exc_type, exc, tb) -> None:
        with self.service._lock:
            self.service._claimed.discard(self.key)
        if exc_type is not None and self.taken:
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
        report = run_report.run_report(self.store, run_id)
        samples = [d for r in self.store.list_runs() if r.media == report["media"] and r.id != run_id
                   for d in progress.durations(self.step_events(r.id))]
        return progress.run_view(report, self.step_events(run_id), samples, time.time() if now is None else now)
