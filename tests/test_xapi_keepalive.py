"""XAPI connections kept alive for reads (xapi_tls.py `_Transport`, docs/xapi.md "Connections"): the real XenAPI
package over real TLS against the simulator, which keeps connections alive as xapi does and counts the connections
it accepts; a bare socket server for a connection closed without an answer. The transport's idle bound runs on a
clock the tests move."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import xmlrpc.client

import pytest
import XenAPI
from sim_helpers import wait_for

from provisioner import xapi_tls
from provisioner.simulator.builder import start_simulator
from provisioner.xapi import Trust, XenApiDriver


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def sim():
    handle = start_simulator(3, speed=600.0)
    yield handle
    handle.stop()


@pytest.fixture
def clock():
    return Clock()


def pool(sim):
    return sim.world.pools["pool0"]


def master_endpoint(sim):
    return sim.endpoints[pool(sim).master.mac]


def session(sim, clock, fingerprint: str | None = None):
    """A logged-in XenAPI.Session over the product's transport (closed by the test)."""
    url = sim.master_url()
    t = xapi_tls.transport(url, 10, Trust(fingerprint=fingerprint or sim.master_fingerprint()), clock=clock)
    s = XenAPI.Session(url, transport=t)
    s.xenapi.login_with_password("root", "pw", "1.0", "test")
    return s, t


def close(s) -> None:
    s.xenapi.session.logout()
    s("close")()  # ServerProxy's way to reach its transport's close()


def socket_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


@pytest.mark.parametrize("method, read", [
    ("host.get_all_records", True), ("pool.get_all", True), ("VM.get_record", True), ("host.get_by_uuid", True),
    ("host.get_servertime", True), ("task.get_status", True), ("session.get_this_host", True),
    ("host.disable", False), ("host.evacuate", False), ("VM.pool_migrate", False), ("host.reboot", False),
    ("host.apply_updates", False), ("session.login_with_password", False), ("session.logout", False),
    ("Async.host.get_record", False), ("Async.VM.pool_migrate", False), ("task.destroy", False),
    ("event.from", False), ("host.call_plugin", False), ("pool.set_repositories", False), ("", False),
])
def test_the_read_rule(method, read):
    assert xapi_tls.is_read(method) is read
    body = xmlrpc.client.dumps(("OpaqueRef:x",), method).encode() if method else b"<methodCall/>"
    assert xapi_tls.method_of(body) == method


def test_reads_share_one_kept_connection(sim, clock):
    s, t = session(sim, clock)
    ep = master_endpoint(sim)
    before, x = ep.accepted, s.xenapi
    for _ in range(5):
        ref = x.pool.get_all()[0]
        assert x.pool.get_record(ref)["master"] == pool(sim).master.ref
        assert len(x.host.get_all_records()) == 3
        x.host.get_servertime(pool(sim).master.ref)
    assert ep.accepted - before == 1 and t.kept() == 1
    close(s)
    assert t.kept() == 0
    wait_for(lambda: ep.open_connections() == 0)  # the server saw it closed


def test_every_write_has_a_connection_of_its_own(sim, clock):
    s, t = session(sim, clock)
    ep, x, member = master_endpoint(sim), s.xenapi, pool(sim).hosts[1]
    x.pool.get_all()
    before = ep.accepted
    for _ in range(2):
        x.host.disable(member.ref)
        x.host.enable(member.ref)
    assert ep.accepted - before == 4
    x.host.get_record(member.ref)
    assert ep.accepted - before == 4 and t.kept() == 1  # the reads still on the kept one
    wait_for(lambda: ep.open_connections() == 1)  # every write's connection closed with its answer
    close(s)


def test_a_kept_connection_the_server_closed_is_replaced_and_the_read_sent_once(sim, clock):
    s, t = session(sim, clock)
    ep, x = master_endpoint(sim), s.xenapi
    x.pool.get_all()
    wait_for(lambda: ep.cut_idle() == 1)  # as stunnel past its idle timeout
    before, since = ep.accepted, len(sim.world.call_log)
    assert x.pool.get_all() == [pool(sim).ref]
    assert ep.accepted - before == 1
    assert [c[1] for c in sim.world.call_log[since:]] == ["pool.get_all"]  # the cut connection carried nothing
    close(s)


class OneAnswerServer:
    """A bare HTTP server that reads each request and closes the connection without answering (a host that dies
    mid-call): it records the XML-RPC method of every request it got."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.got: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536) or b"\r\n\r\n"
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.got.append(xapi_tls.method_of(body))

    def close(self):
        self.sock.close()
        self.thread.join(5)


def test_a_write_cut_before_its_answer_is_not_sent_again():
    server = OneAnswerServer()
    try:
        proxy = xmlrpc.client.ServerProxy(server.url, transport=xapi_tls.transport(server.url, 10, None))
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            proxy.host.reboot("OpaqueRef:s", "OpaqueRef:h")
        assert server.got == ["host.reboot"]  # xmlrpc's own Transport would have sent it twice
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            proxy.host.get_record("OpaqueRef:s", "OpaqueRef:h")  # a NEW connection's failure: not retried either
        assert server.got == ["host.reboot", "host.get_record"]
    finally:
        server.close()


def test_a_new_connection_to_a_wrong_certificate_is_refused_before_any_call(sim, clock):
    since = len(sim.world.call_log)
    url = sim.master_url()
    proxy = xmlrpc.client.ServerProxy(url, transport=xapi_tls.transport(
        url, 10, Trust(fingerprint=sim.fingerprint(pool(sim).hosts[1].mac)), clock=clock))  # another host's
    with pytest.raises(xapi_tls.FingerprintMismatch):
        proxy.pool.get_all("OpaqueRef:x")
    with pytest.raises(xapi_tls.FingerprintMismatch):
        proxy.host.disable("OpaqueRef:x", "OpaqueRef:y")
    assert sim.world.call_log[since:] == []


def test_an_idle_connection_is_closed_past_the_bound_and_dead_threads_ones_too(sim, clock):
    s, t = session(sim, clock)
    ep, x = master_endpoint(sim), s.xenapi
    x.pool.get_all()
    other = threading.Thread(target=lambda: x.pool.get_all())
    other.start()
    other.join()
    assert t.kept() == 2  # this thread's and the ended thread's
    before = ep.accepted
    clock.t += xapi_tls.KEEP_IDLE - 1
    x.pool.get_all()
    assert ep.accepted == before and t.kept() == 2
    clock.t += xapi_tls.KEEP_IDLE + 1
    x.pool.get_all()
    assert ep.accepted - before == 1 and t.kept() == 1  # a new one for this thread; the ended thread's closed
    wait_for(lambda: ep.open_connections() == 1)
    close(s)


def test_threads_sharing_a_session_never_interleave(sim, clock):
    s, t = session(sim, clock)
    ep, hosts = master_endpoint(sim), pool(sim).hosts
    uuids = {ref: rec["uuid"] for ref, rec in s.xenapi.host.get_all_records().items()}  # this thread's connection
    before, errors, n = ep.accepted, [], 6
    start, end = threading.Barrier(n), threading.Barrier(n)

    def work(i):
        start.wait()
        try:
            for k in range(15):
                h = hosts[(i + k) % len(hosts)]
                rec = s.xenapi.host.get_record(h.ref)
                if rec["uuid"] != uuids[h.ref]:
                    errors.append((i, k, rec["uuid"], uuids[h.ref]))
        except Exception as exc:  # noqa: BLE001 - reported below, with the thread
            errors.append((i, repr(exc)))
        end.wait()  # every thread alive until all are done: no thread id reused
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert ep.accepted - before == n and t.kept() == n + 1  # one connection per thread (and this one's)
    close(s)
    assert t.kept() == 0


def test_a_host_going_down_closes_its_kept_connections(sim, clock):
    member = pool(sim).hosts[2]
    url, ep = sim.url(member.mac), sim.endpoints[member.mac]
    t = xapi_tls.transport(url, 10, Trust(fingerprint=sim.fingerprint(member.mac)), clock=clock)
    proxy = xmlrpc.client.ServerProxy(url, transport=t)
    assert proxy.host.get_all("OpaqueRef:x")["ErrorDescription"][0] == "HOST_IS_SLAVE"
    server = ep._server  # the one serving now (a new one serves after the host is back)
    wait_for(lambda: server.open_connections() == 1)
    sim.world.crash(member.mac)
    wait_for(lambda: server.open_connections() == 0)  # its socket died with the host
    with pytest.raises(ConnectionRefusedError):  # the kept one found closed; the read sent once more: refused
        proxy.host.get_all("OpaqueRef:x")
    assert t.kept() == 0
    sim.world.power_on(member.mac)
    t.close()


def test_the_driver_closes_its_kept_connections(sim):
    ep, fds = master_endpoint(sim), socket_fds()
    driver = XenApiDriver(sim.master_url(), "root", "pw", timeout=10, trust=Trust(fingerprint=sim.master_fingerprint()))
    assert len(driver.hosts()) == 3 and len(driver.hosts()) == 3
    wait_for(lambda: ep.open_connections() == 1)
    driver.close()
    wait_for(lambda: ep.open_connections() == 0)
    wait_for(lambda: socket_fds() <= fds)  # neither side left a socket open (earlier tests' may close meanwhile)


def _raw(sim, version: str = "HTTP/1.1"):
    """An http.client connection to the simulated master, speaking `version`."""
    import sim_tls
    parts = sim.master_url().split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPSConnection(parts[0], int(parts[1]), timeout=10, context=sim_tls.context(sim.master_url()))
    conn._http_vsn_str = version  # http.client's own switch for the request line
    conn._http_vsn = 10 if version == "HTTP/1.0" else 11
    return conn


def _post(conn, method: str, headers: dict | None = None, body: bytes | None = None):
    body = body if body is not None else xmlrpc.client.dumps(("OpaqueRef:x",), method).encode()
    conn.request("POST", "/", body, {"Content-Type": "text/xml", "Accept-Encoding": "gzip", **(headers or {})})
    response = conn.getresponse()
    return response, response.read()


def test_the_simulator_keeps_connections_as_xapi(sim):
    conn = _raw(sim)
    try:
        for _ in range(2):  # two answers on one connection
            response, body = _post(conn, "pool.get_all")
            assert response.status == 200 and response.getheader("Connection") == "keep-alive"
            assert response.getheader("Content-Encoding") is None  # xapi never compresses
            assert int(response.getheader("Content-Length")) == len(body) and b"SESSION_INVALID" in body
        assert conn.sock is not None  # http.client kept it: the server did not close
        response, _ = _post(conn, "pool.get_all", {"Connection": "close"})
        assert response.getheader("Connection") == "close" and conn.sock is None
        response, _ = _post(conn, "pool.get_all", body=b"<not xml-rpc")  # http.client reconnects
        assert response.status == 500 and response.getheader("Connection") == "close"
    finally:
        conn.close()
    old = _raw(sim, "HTTP/1.0")
    try:
        response, _ = _post(old, "pool.get_all")
        assert response.version == 10 and response.getheader("Connection") == "close"
    finally:
        old.close()
