"""`serve --proxy-dhcp`: dnsmasq in ProxyDHCP mode as a child of serve (docs/dhcp.md "ProxyDHCP").

The site's DHCP server keeps handing out addresses; dnsmasq answers our registered MACs' PXE requests with the
boot file only. Its config and hosts file are written under data_dir/proxy-dhcp (temp + rename); a supervisor
thread rewrites the hosts file and sends SIGHUP (dnsmasq re-reads dhcp-hostsfile then, dnsmasq(8) "NOTES") when
the registry's MACs change, and restarts dnsmasq with a backoff, logging why, when it dies.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Callable

from provisioner.config import Config
from provisioner.dhcp import dnsmasq
from provisioner.dhcp.plan import DhcpPlan, build_plan
from provisioner.store import Store

log = logging.getLogger(__name__)

DNSMASQ = "dnsmasq"
INSTALL_HINT = "apt-get install dnsmasq-base (Debian; the dnsmasq package would also start a DNS service)"
BACKOFF_MAX_S = 60.0


class ProxyDhcpError(RuntimeError):
    """The ProxyDHCP cannot start (dnsmasq missing, its config refused, it exited at once); the message says why."""


def find_dnsmasq(name: str = DNSMASQ) -> str:
    found = shutil.which(name)
    if found is None:
        raise ProxyDhcpError(f"--proxy-dhcp needs dnsmasq, and {name!r} is not on PATH: {INSTALL_HINT}")
    return found


def _write(path: Path, text: str) -> bool:
    """Write `text` to `path` atomically; False when it already held exactly that."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)  # dnsmasq may re-read it after dropping root for user nobody
    os.replace(tmp, path)
    return True


class ProxyDhcp:
    """The dnsmasq child: start() (checks its config with `dnsmasq --test` first), refresh(), stop()."""

    def __init__(self, store: Store, config: Config, *, executable: str | None = None, interface: str | None = None,
                 poll_seconds: float = 2.0, on_event: Callable[[str, dict], None] | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.store, self.config = store, config
        self.executable = executable or DNSMASQ
        self.interface = interface
        self.extra_args = tuple(extra_args)  # e.g. --dhcp-alternate-port in tests
        self.poll_seconds = poll_seconds
        self.on_event = on_event or (lambda kind, details: store.add_event(kind, details=details))
        self.directory = config.data_dir / "proxy-dhcp"
        self.conf_path = self.directory / "dnsmasq.conf"
        self.hosts_path = self.directory / "hosts"
        self.log_path = self.directory / "dnsmasq.log"
        self.plan: DhcpPlan | None = None
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _plan(self) -> DhcpPlan:
        return build_plan(self.store, self.config, require_hosts=False)

    def write_files(self) -> DhcpPlan:
        """The hosts file and the config for the registry as it is now."""
        plan = self.plan = self._plan()
        self.directory.mkdir(parents=True, exist_ok=True)
        _write(self.hosts_path, "".join(f"{line}\n" for line in dnsmasq.host_lines(plan)))
        _write(self.conf_path, dnsmasq.render_proxy(plan, subnet_address=plan.next_server, hosts_file=self.hosts_path,
                                                    interface=self.interface,
                                                    leases=self.directory / "dnsmasq.leases",
                                                    user=pwd.getpwuid(os.geteuid()).pw_name))
        return plan

    def start(self) -> "ProxyDhcp":
        executable = find_dnsmasq(self.executable)
        self.executable = executable
        plan = self.write_files()
        checked = subprocess.run([executable, "--test", f"--conf-file={self.conf_path}", *self.extra_args],
                                 capture_output=True,
                                 text=True, timeout=30)
        if checked.returncode != 0:
            raise ProxyDhcpError(f"dnsmasq refused the generated {self.conf_path}: "
                                 f"{(checked.stderr or checked.stdout).strip()}")
        self._spawn()
        try:
            rc = self.process.wait(timeout=1.0)  # a bad address or a taken port ends it at once
        except subprocess.TimeoutExpired:
            rc = None
        if rc is not None:
            tail = self._tail()
            hint = (" (run serve with CAP_NET_ADMIN as well as CAP_NET_BIND_SERVICE: dnsmasq's DHCP needs it; "
                    "docs/dhcp.md)" if "NET_ADMIN" in tail else "")
            raise ProxyDhcpError(f"dnsmasq (ProxyDHCP) exited with status {rc} at start: {tail}{hint}")
        log.info("ProxyDHCP: dnsmasq pid %s answers %d MAC(s) with next-server %s", self.process.pid,
                 len(plan.hosts), plan.next_server)
        self._thread = threading.Thread(target=self._supervise, name="proxy-dhcp", daemon=True)
        self._thread.start()
        return self

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [self.executable, "--keep-in-foreground", "--log-facility=-", f"--conf-file={self.conf_path}",
                 f"--pid-file={self.directory / 'dnsmasq.pid'}", *self.extra_args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def _tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(no output)"

    def refresh(self) -> bool:
        """Rewrite the hosts file from the registry; SIGHUP dnsmasq when it changed. True when it changed."""
        plan = self._plan()
        changed = _write(self.hosts_path, "".join(f"{line}\n" for line in dnsmasq.host_lines(plan)))
        self.plan = plan
        if changed and self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)
            log.info("ProxyDHCP: registry changed, %d MAC(s) now; dnsmasq re-reads its hosts file", len(plan.hosts))
            self.on_event("proxy_dhcp.reloaded", {"macs": len(plan.hosts)})
        return changed

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stop.wait(self.poll_seconds):
            try:
                rc = self.process.poll() if self.process is not None else None
                if rc is not None:
                    tail = self._tail()
                    log.error("ProxyDHCP: dnsmasq exited with status %s (%s); restarting in %.0f s", rc, tail, backoff)
                    self.on_event("proxy_dhcp.failed", {"status": rc, "output": tail})
                    if self._stop.wait(backoff):
                        return
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    self.write_files()
                    self._spawn()
                    self.restarts += 1
                    continue
                backoff = 1.0
                self.refresh()
            except Exception:  # the supervisor must outlive one bad poll (a locked store, a full disk)
                log.exception("ProxyDHCP: supervision step failed; trying again in %s s", self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
