"""`provisioner serve`: TFTP + HTTP + the long flows in one process over one store; clean stop on SIGTERM/SIGINT.

The long flows (upgrade runs and lab reinstalls) are driven by one FlowService (coordinator/service.py). At
start-up `serve` resumes every run and every reinstall that was in progress (each step reads the world first); on
stop, the flows are interrupted at their next wait or step boundary and stay resumable.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable

from provisioner import create_app, doctor, mediasync, sites, states
from provisioner.boot.service import tftp_media_file, tftp_payload
from provisioner.boot.filenames import mac_of_tftp_name
from provisioner.boot.loaders import describe_stray, missing_loaders, stray_per_mac_files
from provisioner.config import Config
from provisioner.coordinator.service import FlowService
from provisioner.dhcp.proxy import ProxyDhcp, ProxyDhcpError, find_dnsmasq
from provisioner.eventwriter import DecisionStore, EventWriter
from provisioner.webhooks.delivery import Pump
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

    def __init__(self, config: Config, store: Store | None = None, *, flows: FlowService | None = None,
                 proxy_dhcp: bool = False, proxy_args: tuple[str, ...] = ()):
        self.config = config
        self.proxy_dhcp = proxy_dhcp  # also run dnsmasq as ProxyDHCP for our MACs (dhcp/proxy.py)
        self.proxy: ProxyDhcp | None = None
        self.proxy_args = proxy_args  # extra dnsmasq arguments (tests: alternate ports)
        self.store = store or Store.from_config(config)
        self.flows = flows or FlowService(self.store, config)  # timeouts from the config (coordinator/wiring.py)
        self.http: ServerHandle | None = None
        self.tftp: TftpService | None = None
        self.events: EventWriter | None = None
        self.webhooks: Pump | None = None  # the webhook outbox pump (webhooks/delivery.py)
        self.site_keeper: SiteKeeper | None = None  # this server's row, heartbeat and media copies (sites.py)

    def start(self) -> "Runtime":
        config, store = self.config, self.store
        stray = stray_per_mac_files(config.tftp_root)  # a real per-MAC file would be served instead of the decision
        if stray:
            raise StartupError(describe_stray(stray, config.tftp_root))
        if self.proxy_dhcp:
            try:
                find_dnsmasq()  # refuse before anything is bound
            except ProxyDhcpError as exc:
                raise StartupError(str(exc)) from None
        self.events = EventWriter(store, max_age_days=config.events_max_age_days, max_rows=config.events_max_rows)
        deciding = DecisionStore(store, self.events)  # the TFTP thread never waits on the write lock
        try:
            self.tftp = TftpService(
                config,
                resolve=lambda name, ip: tftp_payload(deciding, config, name, ip),
                media_file=lambda name: tftp_media_file(store, name, config),
                on_event=self.events.tftp_event,
                mac_of=mac_of_tftp_name,
            )
            self.tftp.start()
            app = create_app(config, store=store)
            access.set_flows(app, self.flows)  # the web layer starts and follows runs and reinstalls through it
            access.set_events(app, self.events)  # the installer requests let queued bindings land (boot/answers.py)
            self.http = serve_http(app, config.bind_address, config.http_port, limits=http_limits(app))
            self.webhooks = Pump(store).start()
            if self.proxy_dhcp:
                self.proxy = ProxyDhcp(store, config, extra_args=self.proxy_args).start()
        except Exception as exc:
            self.stop()
            raise StartupError(str(exc)) from exc
        store.add_event("server.started", details={"tftp": list(self.tftp.address), "http": self.http.url,
                                                   "public_url": config.base_url, "site": config.site})
        self.site_keeper = SiteKeeper(store, config).start()
        return self

    def stop(self) -> list[str]:
        """Stop everything; the ids of the upgrade runs interrupted (resumable by the next `serve`)."""
        interrupted = self.flows.stop()
        if self.site_keeper is not None:
            self.site_keeper.stop()
            self.site_keeper = None
        if self.webhooks is not None:
            self.webhooks.stop()
            self.webhooks = None
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
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


class SiteKeeper:
    """This server in the store (docs/sites.md): registered at start, last_seen renewed every sites.HEARTBEAT_S on
    one thread, and on another the media trees it lacks fetched from a server that has them (mediasync.py: at start,
    failed copies retried; then each heartbeat), so a long copy never holds up the heartbeat."""

    def __init__(self, store: Store, config: Config, interval: float = sites.HEARTBEAT_S):
        self.store, self.config, self.interval = store, config, interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "SiteKeeper":
        sites.register(self.store, self.config)
        for name, work in (("site-heartbeat", self._beat), ("media-sync", self._sync)):
            thread = threading.Thread(target=self._loop, args=(work,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _beat(self, first: bool) -> None:
        if not first:
            sites.heartbeat(self.store, self.config)

    def _sync(self, first: bool) -> None:
        mediasync.reconcile(self.store, self.config, retry_failed=first)

    def _loop(self, work: Callable[[bool], None]) -> None:
        first = True
        while not self._stop.is_set():
            try:
                work(first)
            except Exception:  # a database hiccup must not end the heartbeat; the next round tries again
                log.exception("site keeper: %s failed", threading.current_thread().name)
            first = False
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


ROOT_FIX = ("run it as an unprivileged user that holds only CAP_NET_BIND_SERVICE (the systemd unit "
            "deploy/provisioner.service, installed by `make install-service`; docs/deploy.md), or, if you really "
            "mean it, pass `serve --allow-root` or set allow_root = true (PROVISIONER_ALLOW_ROOT=1)")


def refuse_root(config: Config, *, allow_root: bool = False, uid: int | None = None) -> None:
    """StartupError when running as root without being told to: a bug in the TFTP or HTTP code reachable by any
    host on the segment would otherwise own the machine, and ports 69/80 need only CAP_NET_BIND_SERVICE."""
    if (os.geteuid() if uid is None else uid) == 0 and not (allow_root or config.allow_root):
        raise StartupError(f"refusing to run as root: {ROOT_FIX}")


def serve(config: Config, *, announce: Callable[[str], None] = print, allow_root: bool = False,
          proxy_dhcp: bool = False) -> None:
    """Run until SIGTERM or SIGINT, then stop every service cleanly (refused as root unless allowed)."""
    refuse_root(config, allow_root=allow_root)
    lock = DataDirLock(config.data_dir).acquire()  # held for this process's life: one serve per data dir
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    runtime = Runtime(config, proxy_dhcp=proxy_dhcp).start()
    try:
        ip, port = runtime.tftp.address
        announce(f"TFTP on udp {ip}:{port}, HTTP on {runtime.http.url}; booting hosts are told {config.base_url}")
        if runtime.proxy is not None and runtime.proxy.plan is not None:
            announce(f"ProxyDHCP (dnsmasq pid {runtime.proxy.process.pid}) answers {len(runtime.proxy.plan.hosts)} "
                     f"registered MAC(s) with next-server {runtime.proxy.plan.next_server}; "
                     f"config {runtime.proxy.conf_path}")
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
        _doctor_at_start(runtime, announce)
        _resume_runs(runtime, announce)
        _resume_reinstalls(runtime, announce)
        runtime.flows.watch_leases()  # adopt the flows of a server that died holding their lease (coordinator/locks.py)
        stop.wait()
        announce("stopping")
    finally:
        for run_id in runtime.stop():
            announce(f"upgrade run {run_id} interrupted; the next `provisioner serve` resumes it")
        for reinstall_id in runtime.flows.interrupted_reinstalls():
            announce(f"reinstall {reinstall_id} interrupted; the next `provisioner serve` resumes it")
        runtime.store.add_event("server.stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        lock.release()


def _doctor_at_start(runtime: Runtime, announce: Callable[[str], None]) -> threading.Thread:
    """`provisioner doctor` once serve listens (with the ports it really bound), in the background so a pool that
    does not answer never delays serving; each warn and fail is logged and announced with its fix, never fatal."""
    config = runtime.config.replace(tftp_port=runtime.tftp.address[1], http_port=runtime.http.port)

    def check() -> None:
        try:
            findings = doctor.run_checks(config, runtime.store)
        except Exception:  # a check's own bug must not take serve down: say so and go on serving
            log.exception("doctor: the start-up checks failed to run")
            return
        bad = [f for f in findings if f.status in (doctor.WARN, doctor.FAIL)]
        for f in bad:
            log.warning("doctor %s %s: %s; fix: %s", f.status, f.code, f.message, f.fix)
        if bad:
            failed = sorted({f.code for f in bad if f.status == doctor.FAIL})
            announce(f"doctor: {len(failed)} check(s) fail ({', '.join(failed) or 'none'}), "
                     f"{sum(f.status == doctor.WARN for f in bad)} warn; the log and `provisioner doctor` say why")
        runtime.store.add_event("server.doctor", details={
            "worst": doctor.worst(findings), "problems": [f.code for f in findings if f.status == doctor.FAIL]})

    thread = threading.Thread(target=check, name="doctor", daemon=True)
    thread.start()
    return thread


def _resume_runs(runtime: Runtime, announce: Callable[[str], None]) -> list[str]:
    """Resume the runs a previous server (or CLI) left in progress, and say which (and which not, and why)."""
    active = {r.id: r for r in runtime.store.list_runs(active_only=True)}
    if not active:
        return []
    resumed = runtime.flows.resume_all()
    for run_id in resumed:
        run = active.get(run_id) or runtime.store.get_run(run_id)
        announce(f"resuming upgrade run {run_id} of pool {run.pool} (was {run.state}); each step re-reads the pool")
    for run_id in sorted(set(active) - set(resumed)):
        why = runtime.store.events(run_id=run_id, kind="run.resume_skipped")
        announce(f"not resuming upgrade run {run_id} of pool {active[run_id].pool}: "
                 f"{why[-1]['details']['error'] if why else 'see the events'}")
    return resumed


def _resume_reinstalls(runtime: Runtime, announce: Callable[[str], None]) -> list[int]:
    """Drive again the reinstalls a previous server (or CLI) left in progress, and say which (and which not, and
    why); one waiting at JOIN_REFUSED waits for the operator to run the command again."""
    active = {r.id: r for r in runtime.store.active_reinstalls()}
    if not active:
        return []
    resumed = runtime.flows.resume_reinstalls()
    for reinstall_id in resumed:
        found = active[reinstall_id]
        announce(f"resuming reinstall {reinstall_id} of {found.host_name} ({found.mac}) at step {found.step}; "
                 "each step reads the world first")
    for reinstall_id in sorted(set(active) - set(resumed)):
        found = active[reinstall_id]
        if found.step in states.REINSTALL_WAITING:
            announce(f"reinstall {reinstall_id} of {found.host_name} waits at {found.step}: {found.reason}")
            continue
        why = [e for e in runtime.store.events(mac=found.mac, kind="reinstall.resume_skipped")
               if e["details"].get("reinstall") == reinstall_id]
        announce(f"not resuming reinstall {reinstall_id} of {found.host_name}: "
                 f"{why[-1]['details']['error'] if why else 'see the events'}")
    return resumed
