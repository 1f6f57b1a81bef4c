"""XML-RPC endpoints of the simulator, one per host, answering like XAPI on the wire (docs/xapi.md "Wire format";
docs/simulator.md "Shape")."""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import urllib.parse
import uuid as uuidlib
import xmlrpc.client
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from provisioner import netports

from . import certs
from . import event_calls, host_calls, host_plugin, join, update_calls, update_http, vm_calls  # noqa: F401 - registers
from .db import FIELDS, xapi_datetime
from .errors import DropConnection, XapiError
from .hosts import SimHost
from .registry import HANDLERS, Call, HttpRequest, find_http_route, view
from .world import World

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take to finish the TLS handshake
LISTEN_BACKLOG = 128
"""Connections a host's XAPI port queues before accepting them: xapi listens with 128, stunnel in front of it on 443
with SOMAXCONN (docs/xapi.md "Connections"). Past it the kernel drops the client's SYN and the client waits
for its retransmission (1 s, then 3 s)."""
NO_ASYNC = {"session", "task", "event"}  # Async.* exists for every call except these and field accessors (2.1)
RW_FIELDS = {"name_label", "name_description", "other_config"}


def _generic(cls: str, call: str):
    """Generic accessors from the field table (the idea of nova's fake _getter, over real XML-RPC)."""
    fields = FIELDS[cls]

    def rec_of(c, ref):
        return view(c.world, c.pool, cls, ref)
    if call == "get_all":
        return (lambda c: c.db.all(cls)), 1, 1
    if call == "get_all_records":
        return (lambda c: {r: rec_of(c, r) for r in c.db.all(cls)}), 1, 1
    if call == "get_record":
        return rec_of, 2, 2
    if call == "get_by_uuid":
        return (lambda c, u: c.db.by_uuid(cls, u)), 2, 2
    if call == "get_by_name_label" and "name_label" in fields:
        return (lambda c, n: c.db.find(cls, name_label=n)), 2, 2
    if call.startswith("get_") and call[4:] in fields:
        return (lambda c, ref: rec_of(c, ref)[call[4:]]), 2, 2
    if call.startswith("set_") and call[4:] in RW_FIELDS:
        return (lambda c, ref, v: c.db.update(cls, ref, **{call[4:]: v}) or ""), 3, 3
    if call.startswith("add_to_") and isinstance(fields.get(call[7:]), dict):
        def add(c, ref, k, v, f=call[7:]):
            with c.db.lock:
                m = dict(c.db.get(cls, ref)[f])
                if k in m:
                    raise XapiError("MAP_DUPLICATE_KEY", cls, f, ref, k)
                c.db.update(cls, ref, **{f: {**m, k: v}})
            return ""
        return add, 4, 4
    if call.startswith("remove_from_") and isinstance(fields.get(call[12:]), dict):
        def remove(c, ref, k, f=call[12:]):
            with c.db.lock:
                m = dict(c.db.get(cls, ref)[f])
                m.pop(k, None)
                c.db.update(cls, ref, **{f: m})
            return ""
        return remove, 3, 3
    return None


def _slave_local_login(h: SimHost, params: list) -> str:
    if len(params) != 2:
        raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", "session.slave_local_login_with_password", "2",
                        str(len(params)))
    ref = f"OpaqueRef:{uuidlib.uuid4()}"
    h.local_sessions.add(ref)
    return ref


def _local_session(h: SimHost, params: list) -> None:
    if not params or params[0] not in h.local_sessions:
        raise XapiError("SESSION_INVALID", params[0] if params else "")


def _is_in_emergency_mode(h: SimHost, params: list) -> bool:
    _local_session(h, params)
    return h.emergency is not None


def _local_logout(h: SimHost, params: list) -> str:
    _local_session(h, params)
    h.local_sessions.discard(params[0])
    return ""


# The emergency list a member answers itself, without the coordinator (datamodel.ml:10813-10838).
EMERGENCY_CALLS = {"session.slave_local_login_with_password": _slave_local_login,
                   "session.local_logout": _local_logout,
                   "host.is_in_emergency_mode": _is_in_emergency_mode}


def dispatch(world: World, h: SimHost, method: str, params: tuple) -> dict:
    """One XML-RPC call -> a Status/Value or Status/Failure struct, never a fault (2.1)."""
    world.call_log.append((h.name, method, tuple(params)))
    while h.hung.is_set() and not world.stopping:  # injected network hang: accept, never answer
        world.stop_event.wait(0.05)
    if world.stopping or not h.serving or h.hung.is_set():
        raise DropConnection()
    try:
        return {"Status": "Success", "Value": _call(world, h, method, list(params))}
    except XapiError as exc:
        return {"Status": "Failure", "ErrorDescription": exc.description}
    except DropConnection:
        raise
    # a Python error must not become an XML-RPC fault (docs/xapi.md "The XenAPI Python package")
    except Exception as exc:
        log.exception("simulator error in %s", method)
        return {"Status": "Failure", "ErrorDescription": ["INTERNAL_ERROR", f"{type(exc).__name__}: {exc}"]}


def _call(world: World, h: SimHost, method: str, params: list):
    is_async = method.startswith("Async.")
    name = method[len("Async."):] if is_async else method
    cls, _, call = name.partition(".")
    if cls not in FIELDS and cls not in NO_ASYNC:
        raise XapiError("MESSAGE_METHOD_UNKNOWN", method)  # datamodel_errors.ml:115-126
    pool = h.pool
    if not h.is_master:
        if name in EMERGENCY_CALLS:  # datamodel.ml:10813-10838: these work on a member, emergency or not
            return EMERGENCY_CALLS[name](h, params)
        if h.emergency is not None:  # api_server.ml:15-25: every non-emergency call fails with it (2.6)
            raise h.emergency
        # xapi_session.ml:997-1003 / session_check.ml:91-99: HOST_IS_SLAVE [coordinator address]
        raise XapiError("HOST_IS_SLAVE", pool.master.address if pool.master else "")
    entry = HANDLERS.get(name)
    generic = entry is None and cls in FIELDS and _generic(cls, call)
    if entry is None and not generic:
        raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
    fn, nmin, nmax = entry or generic
    if is_async and (cls in NO_ASYNC or generic):
        raise XapiError("MESSAGE_METHOD_UNKNOWN", method)
    if not nmin <= len(params) <= nmax:
        raise XapiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, str(nmax), str(len(params)))
    if name == "session.login_with_password":
        return fn(Call(world, pool, h, "", method), *params)
    session = params[0]
    if session not in pool.sessions:  # session_check.ml:84-90
        raise XapiError("SESSION_INVALID", session)
    c = Call(world, pool, h, session, method)
    if not is_async:
        return fn(c, *params[1:])
    return _start_task(world, c, fn, params[1:])


def _start_task(world: World, c: Call, fn, args) -> str:
    """Async.*: a task ref at once; the handler runs in a sim thread, pending -> success/failure (2.8)."""
    now = world.clock.now()
    task = c.db.create("task", name_label=c.method, status="pending", created=xapi_datetime(now),
                       resident_on=c.pool.master.ref)

    def run():
        try:
            value = fn(c, *args)
            fields = {"status": "success", "progress": 1.0,
                      "result": f"<value>{value}</value>" if isinstance(value, str) and value else ""}
        except XapiError as exc:
            fields = {"status": "failure", "progress": 1.0, "error_info": exc.description}
        except Exception as exc:
            fields = {"status": "failure", "progress": 1.0, "error_info": ["INTERNAL_ERROR", repr(exc)]}
        with c.db.lock:
            if c.db.exists("task", task):  # tasks vanish when the coordinator restarts
                c.db.update("task", task, finished=xapi_datetime(world.clock.now()), **fields)
    world.spawn(run, name=f"sim-task-{c.method}")
    return task


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ()  # XenAPI posts to "/"; accept any path like xapi

    def do_POST(self):
        try:
            super().do_POST()
        except DropConnection:
            self.close_connection = True

    def do_GET(self):
        self._plain_http("GET")

    def do_PUT(self):
        self._plain_http("PUT")

    def _plain_http(self, method: str) -> None:
        """xapi's plain HTTP handlers (registry.HTTP_ROUTES: PUT /bundle, GET /updates, ...): 404 for others."""
        world, h = self.server.world, self.server.sim_host
        if world.stopping or not h.serving:
            self.close_connection = True
            return
        url = urllib.parse.urlsplit(self.path)
        route = find_http_route(method, url.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if route is None:
            status, ctype, answer = 404, "text/plain", b"Not found"
        else:
            cookies = dict(p.strip().split("=", 1) for p in (self.headers.get("Cookie") or "").split(";") if "=" in p)
            query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            status, ctype, answer = route(world, h, HttpRequest(method, url.path, query, cookies, body))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)
        self.close_connection = True

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)


class _Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG  # socketserver's default is 5 (docs/xapi.md "Connections")

    def __init__(self, addr, world: World, host: SimHost, tls: ssl.SSLContext | None = None):
        self.world, self.sim_host, self.tls = world, host, tls
        super().__init__(addr, _Handler, logRequests=False, allow_none=False)

    def finish_request(self, request, client_address):
        """HTTPS as xapi serves it (docs/xapi.md "TLS"): the handshake runs in the request's own thread, so a client
        that refuses the certificate (or never speaks) holds up no one else."""
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # stunnel `socket = a:TCP_NODELAY=1`
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:  # e.g. the client did not trust the certificate: alert, close
            log.debug("%s: TLS handshake from %s failed: %s", self.sim_host.name, client_address, exc)
            return None
        try:
            wrapped.settimeout(None)
            super().finish_request(wrapped, client_address)
        finally:
            try:
                wrapped.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            wrapped.close()

    def _marshaled_dispatch(self, data, dispatch_method=None, path=None):
        params, method = xmlrpc.client.loads(data)  # malformed -> exception -> HTTP 500, as xapi
        result = dispatch(self.world, self.sim_host, method, params)
        return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=False).encode()


class Endpoint:
    """The listening socket of one host: open while xapi runs, closed (connection refused) otherwise (4.3).

    HTTPS with the host's own certificate (certs.py) unless `tls=False`; the certificate is read each time xapi
    starts, so a fresh install's new one is served from its first boot on."""

    def __init__(self, world: World, host: SimHost, bind: str | None = None, *, tls: bool = True):
        self.world, self.host, self.bind, self.tls = world, host, bind or host.address, tls
        self._server: _Server | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.bind}:{self.host.port}/"

    @property
    def cert(self) -> certs.HostCert:
        """The certificate the host serves now (its fingerprint is what a client pins)."""
        return certs.cert_of(self.host)

    def set_up(self, up: bool) -> None:
        with self._lock:
            if up and self._server is None:
                tls = certs.cert_of(self.host).server_context() if self.tls else None
                # the port is chosen once, below the ephemeral range: a client socket (another test process's)
                # cannot take it while the host reboots, and it is bound again after each reboot, as xapi's 443
                port = self.host.port or netports.free_port(host=self.bind)
                self._server = _Server((self.bind, port), self.world, self.host, tls)
                self.host.port = self._server.server_address[1]  # the same port again after a reboot
                threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                                 name=f"sim-xapi-{self.host.name}").start()
            elif not up and self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None
