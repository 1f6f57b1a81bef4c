"""The ProxyDHCP child (dhcp/proxy.py) with the real dnsmasq: it starts from our generated config, re-reads the hosts
file on SIGHUP when the registry changes, is restarted (and the failure logged as an event) when it dies, and
serve refuses --proxy-dhcp clearly without dnsmasq. dnsmasq listens on alternate ports (--dhcp-alternate-port) on
loopback here; the real answer to a booting QEMU host is tests/e2e/test_dhcp_e2e.py's."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from provisioner import registry, runtime
from provisioner.config import load_config
from provisioner.dhcp.proxy import ProxyDhcp, ProxyDhcpError, find_dnsmasq


@pytest.fixture
def ports() -> tuple[str, ...]:
    """dnsmasq's DHCP on a server port the kernel just handed out as free (and the next one for its replies), not a
    fixed pair that two tests running at once (pytest-xdist workers, another pytest run) would both take."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    return (f"--dhcp-alternate-port={port},{port + 1}",)


@pytest.fixture
def cfg(tmp_path):
    return load_config(file=None, environ={}, overrides={
        "data_dir": tmp_path / "data", "bind_address": "127.0.0.1", "public_url": "http://127.0.0.1",
        "http_port": 0, "tftp_port": 0})


def _until(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_proxy_starts_reloads_on_registry_change_and_restarts(store, cfg, ports):
    registry.add_host(store, {"mac": "52:54:00:00:00:01", "name": "a", "pool": "p"})
    events: list[tuple[str, dict]] = []
    proxy = ProxyDhcp(store, cfg, interface="lo", poll_seconds=0.2, extra_args=ports,
                      on_event=lambda kind, details: events.append((kind, details)))
    proxy.start()
    try:
        conf = proxy.conf_path.read_text()
        assert "dhcp-range=127.0.0.1,proxy" in conf and "dhcp-ignore=tag:!known" in conf
        assert proxy.hosts_path.read_text() == "52:54:00:00:00:01,set:provisioner\n"
        first = proxy.process.pid
        _until(lambda: "read " + str(proxy.hosts_path) in proxy.log_path.read_text(), "dnsmasq reading the hosts file")

        registry.add_host(store, {"mac": "52:54:00:00:00:02", "name": "b", "pool": "p"})
        _until(lambda: "52:54:00:00:00:02" in proxy.hosts_path.read_text(), "the hosts file rewrite")
        _until(lambda: proxy.log_path.read_text().count("read " + str(proxy.hosts_path)) >= 2,
               "dnsmasq re-reading the hosts file after SIGHUP")
        assert proxy.process.pid == first  # reloaded, not restarted
        assert ("proxy_dhcp.reloaded", {"macs": 2}) in events

        os.kill(first, signal.SIGKILL)
        _until(lambda: proxy.restarts == 1 and proxy.process.pid != first, "the restart")
        failed = [d for k, d in events if k == "proxy_dhcp.failed"]
        assert failed and failed[0]["status"] == -signal.SIGKILL
        assert proxy.process.poll() is None
    finally:
        proxy.stop()
    assert proxy.process is None


def test_proxy_start_refuses_a_config_dnsmasq_rejects(store, cfg, ports):
    proxy = ProxyDhcp(store, cfg, interface="lo", extra_args=(*ports, "--dhcp-range=not-an-address"))
    with pytest.raises(ProxyDhcpError, match="dnsmasq refused the generated"):
        proxy.start()
    assert proxy.process is None


def test_missing_dnsmasq_is_refused_with_the_fix(store, cfg, monkeypatch):
    with pytest.raises(ProxyDhcpError, match="apt-get install dnsmasq-base"):
        find_dnsmasq("dnsmasq-not-installed-here")
    monkeypatch.setenv("PATH", "/nonexistent")  # serve looks dnsmasq up on PATH before binding anything
    rt = runtime.Runtime(cfg, store, proxy_dhcp=True)
    with pytest.raises(runtime.StartupError, match="needs dnsmasq"):
        rt.start()
    assert rt.tftp is None and rt.http is None


def test_runtime_runs_and_stops_the_proxy_with_serve(store, cfg, tmp_path, ports):
    registry.add_host(store, {"mac": "52:54:00:00:00:03", "name": "c", "pool": "p"})
    rt = runtime.Runtime(cfg, store, proxy_dhcp=True, proxy_args=ports)
    rt.start()
    try:
        assert rt.proxy is not None and rt.proxy.process.poll() is None
        child = rt.proxy.process
    finally:
        rt.stop()
    assert child.poll() is not None and rt.proxy is None


def test_proxy_without_net_admin_fails_at_start_naming_the_capability(store, tmp_path, ports):
    """dnsmasq's DHCP needs CAP_NET_ADMIN: run as `nobody` with only CAP_NET_BIND_SERVICE (what the systemd unit
    gives serve), it exits at once, and the error says which capability to add."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="h7-proxy-"))  # pytest's base temp is 0700: nobody could not read there
    try:
        shared.chmod(0o755)
        # serve and its dnsmasq are one user in real life; here the test (root) writes what dnsmasq (nobody) reads
        (shared / "data" / "proxy-dhcp").mkdir(parents=True)
        for made in (shared / "data", shared / "data" / "proxy-dhcp"):
            made.chmod(0o777)
        cfg = load_config(file=None, environ={}, overrides={
            "data_dir": shared / "data", "bind_address": "127.0.0.1", "public_url": "http://127.0.0.1"})
        wrapper = shared / "dnsmasq-as-nobody"
        wrapper.write_text("#!/bin/sh\nexec setpriv --reuid=nobody --regid=nogroup --clear-groups "
                           "--inh-caps=+net_bind_service --ambient-caps=+net_bind_service dnsmasq \"$@\"\n")
        wrapper.chmod(0o755)
        proxy = ProxyDhcp(store, cfg, executable=str(wrapper), interface="lo", extra_args=ports)
        with pytest.raises(ProxyDhcpError, match="NET_ADMIN.*run serve with CAP_NET_ADMIN"):
            proxy.start()
        proxy.stop()
    finally:
        shutil.rmtree(shared)
