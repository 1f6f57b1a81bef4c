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
longer share one process, one store handle and one shutdown path (DESIGN.md "What runs"), and its
arbiter takes over the process's signals. waitress is pure Python and runs in threads next to TFTP and
the coordinator. Its event loop (not a worker thread) streams the file bodies, so a boot storm of
install.img downloads does not occupy the worker threads that answer configs, answer files and scripts.

Waitress internals used (covered by tests/test_httpserver.py; waitress >= 3.0, < 4): `HTTPChannel.outbufs`,
`_flush_some` and `ReadOnlyFileBasedBuffer` (its `wsgi.file_wrapper`, which honours the file's current
position and the response's Content-Length). Everything else goes through the public `create_server`.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from waitress.buffers import ReadOnlyFileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.server import create_server

log = logging.getLogger(__name__)

# Per-call sendfile cap: big enough that loopback and 10G links are syscall-light, small enough that one
# fast client cannot hold the event loop for long (the socket is non-blocking anyway).
_SENDFILE_CHUNK = 8 << 20
_DISCONNECTED = frozenset((errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNABORTED,
                           errno.EPIPE, errno.EBADF))


class HTTPServerError(RuntimeError):
    """The HTTP server could not start; the message names the address and port."""


class _SendfileChannel(HTTPChannel):
    """An HTTPChannel that sends wsgi.file_wrapper bodies with os.sendfile() instead of read()+send()."""

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
    _servers: list[Any] = field(repr=False)
    _threads: list[threading.Thread] = field(repr=False)
    _stopping: threading.Event = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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
               connection_limit: int = 1000, channel_timeout: int = 120) -> ServerHandle:
    """Start serving `app` on host:port in background threads and return once the socket is listening.

    `loops` event-loop threads (default: one per CPU, at most 4) accept from the same listening socket;
    each streams its connections' file bodies with sendfile(), which releases the GIL, so several CPUs
    copy at once. `threads` worker threads run the app, split between the loops.
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
    servers = []
    for i in range(loops):
        # Each loop gets its own descriptor of the one listening socket; a loop that loses the accept()
        # race gets EAGAIN, which waitress ignores.
        server = create_server(
            app, sockets=[sock if i == 0 else sock.dup()], threads=max(1, threads // loops),
            connection_limit=connection_limit, channel_timeout=channel_timeout,
            # poll(), not select(): select() fails past 1024 file descriptors.
            asyncore_use_poll=True, ident="provisioner", clear_untrusted_proxy_headers=False,
        )
        server.channel_class = _SendfileChannel
        servers.append(server)
    real_port = int(servers[0].effective_port)
    stopping = threading.Event()
    workers = [threading.Thread(target=_run, args=(server, stopping), name=f"http-{real_port}-{i}", daemon=True)
               for i, server in enumerate(servers)]
    handle = ServerHandle(host=host, port=real_port, _servers=servers, _threads=workers, _stopping=stopping)
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
