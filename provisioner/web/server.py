"""The production WSGI server: waitress, in-process, with sendfile() for file bodies. Only waitress importer.

Why waitress, measured with bench/http_bench.py --candidates (16 concurrent curl clients each downloading a
100 MB install.img from the real app over loopback, 2-core reference machine shared with other work, rounds
interleaved; two runs, 7 and 9 rounds). MB/s is the median round; on loopback it is mostly bounded by
the clients and by whatever else runs, so the server's own CPU time per GB sent is given too:

    server                                   MB/s run 1   MB/s run 2   vs nginx    CPU s/GB
    nginx 1.22 (sendfile on, 2 workers)         3194         1893        1.00x     0.16-0.18
    waitress 3.0 + this module (sendfile)       3330         1838     1.04x / 0.97x  0.12   <- chosen
    waitress 3.0 stock (read()+send())          1514         1393     0.47x / 0.74x  0.47-0.50
    cheroot 11 (read()+send())                  1678         1539     0.53x / 0.81x  0.49-0.56
    gunicorn 27 gthread, 2x8 (sendfile)         3108         1647     0.97x / 0.87x  0.09

Stock waitress and cheroot copy every byte through Python (4x the CPU per GB); with sendfile waitress
matches nginx. gunicorn is as fast, but it forks workers: TFTP, the coordinator and the HTTP app would no
longer share one process, one store handle and one shutdown path (docs/architecture.md "What runs"), and its
arbiter takes over the process's signals. waitress is pure Python and runs in threads next to TFTP and
the coordinator. Its event loop (not a worker thread) streams the file bodies, so a boot storm of
install.img downloads does not occupy the worker threads that answer configs, answer files and scripts.

Waitress internals used (covered by tests/web/test_server.py; waitress >= 3.0, < 4): `HTTPChannel.outbufs`,
`_flush_some` and `ReadOnlyFileBasedBuffer` (its `wsgi.file_wrapper`, which honours the file's current
position and the response's Content-Length), `HTTPRequestParser.parse_header` and the parser's `body_rcv`,
`content_length`, `chunked`, `expect_continue` and `headers` (the body gate), and
`BaseWSGIServer.handle_accept` / `maintenance` (the per-address cap and the header timeout).

Held on a hostile network (issue 15; tests/hostile/test_http_*.py; the limits and the shared per-address count
are provisioner/web/httpguard.py):
- Per-address connection cap (`max_per_client`), one counter shared by all loops, enforced at accept time: a
  client over it is closed before a channel exists. One address holding ~2,000 idle connections used to fill
  both loops' `connection_limit` and stop HTTP for everyone.
- Header timeout: a connection waiting for a request's headers (fresh, half-sent or kept alive between
  requests) gets `header_timeout` seconds to send them all (Apache's default keep-alive wait is 5 s), and a
  small body (up to waitress' 512 KB `inbuf_overflow`: forms) with them, checked every second; a connection
  with a request in service, a response still flowing or a big (authenticated) upload keeps `channel_timeout`.
- Body gate, at header time, before one body byte is buffered: the web layer's `gate` (web/gate.py) admits a
  body, refuses it with a status (answered at once, connection closed) or drops it (the app answers without
  it, e.g. its own 401 and failed-authentication throttle; the connection is then closed). An admitted body
  over `max_body` is a 413. Bodies under waitress' `inbuf_overflow` (512 KB) stay in memory; only admitted,
  i.e. authenticated, bodies can reach the temporary file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from waitress.adjustments import Adjustments
from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error

from provisioner.web.httpguard import DROP_BODY, Guard, Limits

log = logging.getLogger(__name__)

# Per-call sendfile cap: big enough that loopback and 10G links are syscall-light, small enough that one
# fast client cannot hold the event loop for long (the socket is non-blocking anyway).
_SENDFILE_CHUNK = 8 << 20
_DISCONNECTED = frozenset((errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED,
                           errno.EPIPE, errno.EBADF))


class _OncePerInterval(logging.Filter):
    """Lets one record through per `seconds`: waitress warns "Task queue depth is N" on EVERY request queued
    while all worker threads are busy (task.py ThreadedTaskDispatcher.add_task), 3,000 lines in one 10 s boot
    storm; one a minute says the same. (The log is a pipe: a reader that falls behind would stall the loops.)"""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self._next = seconds, 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True


class HTTPServerError(RuntimeError):
    """The HTTP server could not start; the message names the address and port."""


class _Refusal(Error):
    """An answer given at header time by the body gate, with a JSON body like the app's errors."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.reason = code, _REASONS.get(code, "Refused")

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        body = json.dumps({"error": self.body}).encode() + b"\n"
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body


_REASONS = {400: "Bad Request", 401: "Unauthorized", 411: "Length Required", 413: "Content Too Large"}


class _GatedParser(HTTPRequestParser):
    """waitress' request parser, asking the body gate once the headers are in and before any body byte."""

    def __init__(self, guard: Guard, adj: Any):
        super().__init__(adj)
        self._guard = guard

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        length = None if self.chunked else self.content_length
        if not self.chunked and not self.content_length:
            return  # no body: nothing to gate
        limits = self._guard.limits
        verdict = limits.gate(self.command, self.path, self.headers, length) if limits.gate else None
        if verdict is None and length is not None and length > limits.max_body:
            verdict = (413, f"request body larger than {limits.max_body} bytes (http_max_body_bytes)")
        if verdict is None:
            return
        # Forget the body before a byte of it is buffered; close the connection after answering, so the
        # unread body is never parsed as a next request.
        self.body_rcv, self.content_length, self.chunked = None, 0, False
        self.expect_continue, self.connection_close = False, True
        self.headers["CONTENT_LENGTH"] = "0"
        self.headers["CONNECTION"] = "close"  # what waitress' Task reads to close after the response
        if verdict != DROP_BODY:
            status, message = verdict  # type: ignore[misc]
            self.error = _Refusal(status, message)


class _SendfileChannel(HTTPChannel):
    """An HTTPChannel that sends wsgi.file_wrapper bodies with os.sendfile() instead of read()+send(),
    gates request bodies, and gives its address's slot back when it closes."""

    def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None):
        super().__init__(server, sock, addr, adj, map=map)
        self.parser_class = partial(_GatedParser, server.guard)
        self.idle_since: float | None = self.creation_time  # waiting for a request since
        self._released = False

    def waiting_for_request(self) -> bool:
        """No request in service, no response flowing, and the next request not complete: its headers, or its
        body when that is a small one kept in memory (a form; big bodies are admitted only authenticated)."""
        request = self.request
        if self.requests or self.total_outbufs_len:
            return False
        return (request is None or not request.headers_finished
                or (not request.completed and not request.chunked
                    and request.content_length <= self.adj.inbuf_overflow))

    def del_channel(self, map: Any = None) -> None:
        # Every way a channel closes goes through wasyncore's dispatcher.close() -> del_channel (HTTPChannel's
        # handle_close calls the base close() directly); it can run twice (handle_close, then close_all).
        super().del_channel(map)
        if not self._released:
            self._released = True
            self.server.guard.release(self.addr[0])

    # A copy of waitress 3.0's HTTPChannel._flush_some with one change: file_wrapper buffers go through
    # sendfile() (kernel copy, no Python bytes) instead of get() + send().
    def _flush_some(self, do_close: bool = True) -> bool:
        sent = 0
        while True:
            outbuf = self.outbufs[0]
            outbuflen = outbuf.__len__()
            fd = _sendfile_fd(outbuf)
            stalled = False
            while outbuflen > 0:
                if fd is None:
                    num = self.send(outbuf.get(self.sendbuf_len), do_close=do_close)
                else:
                    num = self._sendfile(fd, outbuf, min(outbuflen, _SENDFILE_CHUNK), do_close)
                if not num:
                    stalled = True
                    break
                outbuf.skip(num, True)
                outbuflen -= num
                sent += num
                self.total_outbufs_len -= num
            if stalled:
                break
            if len(self.outbufs) > 1:
                done = self.outbufs.pop(0)
                try:
                    done.close()
                except Exception:
                    self.logger.exception("Unexpected error when closing an outbuf")
            else:
                break  # caught up
        if sent:
            self.last_activity = time.time()
            return True
        return False

    def _sendfile(self, fd: int, outbuf: Any, count: int, do_close: bool) -> int:
        """Like wasyncore's send(): bytes sent, 0 when the socket is full or the peer is gone."""
        try:
            num = os.sendfile(self.socket.fileno(), fd, outbuf.file.tell(), count)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno not in _DISCONNECTED:
                raise
            if do_close:
                self.handle_close()
            return 0
        if num == 0:
            # EOF before Content-Length: the file shrank while being served. Close rather than spin.
            self.logger.warning("file shrank while being sent; closing the connection")
            self.will_close = True
        return num


class _GuardedServer(TcpWSGIServer):
    """waitress' TCP server with the per-address cap at accept time and the header timeout."""

    channel_class = _SendfileChannel

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any):
        self.guard = guard
        super().__init__(*args, **kwargs)

    def handle_accept(self) -> None:
        try:
            pair = self.accept()
        except OSError:
            return  # the peer left before we got to it (waitress logs and ignores this too)
        if pair is None:
            return
        conn, addr = pair
        if not self.guard.admit(addr[0]):
            conn.close()
            return
        try:
            self.set_socket_options(conn)
            self.channel_class(self, conn, addr, self.adj, map=self._map)
        except OSError:
            self.guard.release(addr[0])
            conn.close()

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # channel_timeout for connections with nothing going on
        cutoff = now - self.guard.limits.header_timeout
        for channel in list(self.active_channels.values()):
            if not isinstance(channel, _SendfileChannel):
                continue
            if not channel.waiting_for_request():
                channel.idle_since = None
            elif channel.idle_since is None:
                channel.idle_since = now
            elif channel.idle_since < cutoff and not channel.will_close:
                channel.will_close = True
                self.guard.timed_out += 1


def _sendfile_fd(outbuf: Any) -> int | None:
    """The file descriptor of a file_wrapper body that sendfile() can serve, else None."""
    if type(outbuf) is not ReadOnlyFileBasedBuffer:
        return None
    try:
        return outbuf.file.fileno()  # files.py's bounded range window has no fileno(): stock path
    except (AttributeError, OSError, ValueError):
        return None


@dataclass
class ServerHandle:
    """A running HTTP server: `.host`, `.port` (the real one when 0 was asked), `.url`, `.stop()`."""

    host: str
    port: int
    _guard: Guard = field(repr=False)
    _servers: list[Any] = field(repr=False)
    _threads: list[threading.Thread] = field(repr=False)
    _stopping: threading.Event = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def counters(self) -> dict[str, int]:
        """Connections refused by the per-address cap and closed by the header timeout, since start."""
        return {"refused_connections": self._guard.refused_connections,
                "header_timeouts": self._guard.timed_out}

    def open_connections(self, address: str) -> int:
        """Connections `address` holds right now."""
        return self._guard.open_connections(address)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection, stop the worker threads. Idempotent."""
        self._stopping.set()
        for server in self._servers:
            try:
                server.pull_trigger()  # wake its poll() so it sees the flag
            except OSError:
                pass  # already closed by an earlier stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)


def serve_http(app: Callable, host: str, port: int, *, threads: int = 16, loops: int | None = None,
               connection_limit: int = 1000, channel_timeout: int = 120,
               limits: Limits | None = None) -> ServerHandle:
    """Start serving `app` on host:port in background threads and return once the socket is listening.

    `loops` event-loop threads (default: one per CPU, at most 4) accept from the same listening socket;
    each streams its connections' file bodies with sendfile(), which releases the GIL, so several CPUs
    copy at once. `threads` worker threads run the app, split between the loops. `limits`: see Limits.
    Raises HTTPServerError naming host:port when the port is in use, not permitted (ports < 1024 need
    root or CAP_NET_BIND_SERVICE) or the address is not local.
    """
    loops = max(1, loops if loops is not None else min(4, os.cpu_count() or 1))
    # Bind here rather than in waitress: a failed bind then leaks nothing, and the error names the port.
    # No SO_REUSEPORT: a second provisioner on the same port must fail, not share the port silently.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old sockets linger
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise HTTPServerError(_explain(host, port, exc)) from exc
    except (ValueError, OverflowError, TypeError) as exc:  # a malformed host or port
        sock.close()
        raise HTTPServerError(f"cannot listen on {host}:{port}: {exc}") from exc
    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, _OncePerInterval) for f in queue_log.filters):
        queue_log.addFilter(_OncePerInterval(60))
    guard = Guard(limits or Limits())
    servers = []
    for i in range(loops):
        # Each loop gets its own descriptor of the one listening socket; a loop that loses the accept()
        # race gets EAGAIN, which waitress ignores. What waitress' create_server does for one socket,
        # with our server class.
        loop_sock = sock if i == 0 else sock.dup()
        adj = Adjustments(
            sockets=[loop_sock], threads=max(1, threads // loops),
            connection_limit=connection_limit, channel_timeout=channel_timeout,
            # the header timeout is checked in maintenance(), which runs at most every cleanup_interval
            cleanup_interval=1, max_request_body_size=guard.limits.max_body + 1,
            # poll(), not select(): select() fails past 1024 file descriptors.
            asyncore_use_poll=True, ident="provisioner", clear_untrusted_proxy_headers=False,
        )
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
        sockinfo = (loop_sock.family, loop_sock.type, loop_sock.proto, loop_sock.getsockname())
        servers.append(_GuardedServer(app, {}, True, loop_sock, dispatcher=dispatcher, adj=adj,
                                      bind_socket=False, sockinfo=sockinfo, guard=guard))
    real_port = int(servers[0].effective_port)
    stopping = threading.Event()
    workers = [threading.Thread(target=_run, args=(server, stopping), name=f"http-{real_port}-{i}", daemon=True)
               for i, server in enumerate(servers)]
    handle = ServerHandle(host=host, port=real_port, _guard=guard, _servers=servers, _threads=workers,
                          _stopping=stopping)
    for thread in workers:
        thread.start()
    log.info("HTTP server listening on %s (%d loops, %d worker threads)", handle.url, loops, threads)
    return handle


def _run(server: Any, stopping: threading.Event) -> None:
    try:
        while not stopping.is_set():
            # count=1: return after each poll so the stop flag is seen; the trigger wakes the poll.
            server.asyncore.loop(timeout=1.0, map=server._map, use_poll=True, count=1)
    except Exception:
        log.exception("HTTP server loop crashed")
        raise
    finally:
        server.task_dispatcher.shutdown(timeout=5)
        for channel in list(server._map.values()):
            if isinstance(channel, HTTPChannel):
                channel.handle_close()  # closes its outbufs too (open files of unfinished downloads)
        server.asyncore.close_all(server._map)


def _explain(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: port {port} is already in use (another server running?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot listen on {where}: permission denied (port {port} < 1024 needs root or "
                f"CAP_NET_BIND_SERVICE; or set http_port to a high port)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: address {host} is not configured on this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"
