"""`provisioner serve`: TFTP + HTTP + the upgrade runs in one process over one store; clean stop on SIGTERM/SIGINT.

At start-up `serve` resumes every upgrade run that was in progress (each step re-reads the pool first); on stop,
the runs are interrupted at their next wait or step boundary and stay resumable.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

from provisioner import create_app
from provisioner.boot.service import tftp_media_file, tftp_payload
from provisioner.boot.filenames import mac_of_tftp_name
from provisioner.boot.loaders import describe_stray, missing_loaders, stray_per_mac_files
from provisioner.config import Config
from provisioner.coordinator.service import RunService
from provisioner.coordinator.steps import Timeouts
from provisioner.eventwriter import DecisionStore, EventWriter
from provisioner.web.server import ServerHandle, serve_http
from provisioner.store import Store
from provisioner.store.lock import DataDirLock
from provisioner.tftp.server import TftpService
from provisioner.web import access
from provisioner.web.gate import http_limits

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A service could not start (port in use, missing tftp_root, ...); nothing is left running."""


class Runtime:
    """The running services. start() brings up TFTP and HTTP or raises StartupError with nothing left open."""

    def __init__(self, config: Config, store: Store | None = None, *, runs: RunService | None = None):
        self.config = config
        self.store = store or Store(config.db_path)
        self.runs = runs or RunService(self.store, config, timeouts=Timeouts(poll=config.upgrade_poll_ms / 1000))
        self.http: ServerHandle | None = None
        self.tftp: TftpService | None = None
        self.events: EventWriter | None = None

    def start(self) -> "Runtime":
        config, store = self.config, self.store
        stray = stray_per_mac_files(config.tftp_root)  # a real per-MAC file would be served instead of the decision
        if stray:
            raise StartupError(describe_stray(stray, config.tftp_root))
        self.events = EventWriter(store, max_age_days=config.events_max_age_days, max_rows=config.events_max_rows)
        deciding = DecisionStore(store, self.events)  # the TFTP thread never waits on the write lock
        try:
            self.tftp = TftpService(
                config,
                resolve=lambda name, ip: tftp_payload(deciding, config, name, ip),
                media_file=lambda name: tftp_media_file(store, name),
                on_event=self.events.tftp_event,
                mac_of=mac_of_tftp_name,
            )
            self.tftp.start()
            app = create_app(config, store=store)
            access.set_runs(app, self.runs)  # the web layer starts and follows runs through it
            access.set_events(app, self.events)  # the installer requests let queued bindings land (boot/answers.py)
            self.http = serve_http(app, config.bind_address, config.http_port, limits=http_limits(app))
        except Exception as exc:
            self.stop()
            raise StartupError(str(exc)) from exc
        store.add_event("server.started", details={"tftp": list(self.tftp.address), "http": self.http.url,
                                                   "public_url": config.base_url})
        return self

    def stop(self) -> list[str]:
        """Stop everything; the ids of the upgrade runs interrupted (resumable by the next `serve`)."""
        interrupted = self.runs.stop()
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.tftp is not None:
            self.tftp.stop()
            self.tftp = None
        if self.events is not None:
            self.events.close()
            self.events = None
        return interrupted


def serve(config: Config, *, announce: Callable[[str], None] = print) -> None:
    """Run until SIGTERM or SIGINT, then stop every service cleanly."""
    lock = DataDirLock(config.data_dir).acquire()  # held for this process's life: one serve per data dir
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    runtime = Runtime(config).start()
    try:
        ip, port = runtime.tftp.address
        announce(f"TFTP on udp {ip}:{port}, HTTP on {runtime.http.url}; booting hosts are told {config.base_url}")
        missing = missing_loaders(config.tftp_root)
        if missing:
            announce(f"warning: {config.tftp_root} lacks {', '.join(missing)}: PXE firmware asking for them gets "
                     "'file not found'; run `provisioner tftp-root prepare`")
        if not config.public_url and config.bind_address in ("0.0.0.0", "::"):
            announce("warning: public_url is not set, so boot configs point at 127.0.0.1, which booting hosts "
                     "cannot reach: set public_url (e.g. http://10.0.0.5) in provisioner.toml")
        if config.base_url.startswith("https://"):
            announce(f"warning: public_url is https ({config.base_url}): installer boot configs are refused (every "
                     "armed host gets a local boot); boot URLs must be plain http:// (docs/boot-urls.md)")
        _resume_runs(runtime, announce)
        stop.wait()
        announce("stopping")
    finally:
        for run_id in runtime.stop():
            announce(f"upgrade run {run_id} interrupted; the next `provisioner serve` resumes it")
        runtime.store.add_event("server.stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()


def _resume_runs(runtime: Runtime, announce: Callable[[str], None]) -> list[str]:
    """Resume the runs a previous server (or CLI) left in progress, and say which (and which not, and why)."""
    active = {r.id: r for r in runtime.store.list_runs(active_only=True)}
    if not active:
        return []
    resumed = runtime.runs.resume_all()
    for run_id in resumed:
        run = active.get(run_id) or runtime.store.get_run(run_id)
        announce(f"resuming upgrade run {run_id} of pool {run.pool} (was {run.state}); each step re-reads the pool")
    for run_id in sorted(set(active) - set(resumed)):
        why = runtime.store.events(run_id=run_id, kind="run.resume_skipped")
        announce(f"not resuming upgrade run {run_id} of pool {active[run_id].pool}: "
                 f"{why[-1]['details']['error'] if why else 'see the events'}")
    return resumed
