"""TFTP service (the only module importing tftpy): read-only, per-MAC names answered by the decision hook.

tftpy 0.8.7 parses the requests and encodes OACK and error packets; its listen() loop is not used, because
it accepts uploads by default, serves a stray real file before asking dyn_file_func, dies past ~1,020
sessions in select(), crashes on `blksize=abc`, retransmits only after 5 s and costs ~44 us per packet
(docs/tftp.md "Holes in tftpy"). One thread runs an epoll loop over the listening socket and makes
every decision; each transfer gets a socket connected to the client (so the kernel drops packets from any
other host/port) and a read-only file, and both are handed to a worker process (workers, proc)
that moves the bytes: small files in its epoll loop (pump), big ones in a forked process each
(solo). Rules live in guard; what a name is served from (hook, media, file) in files.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketERR, TftpPacketOACK
from tftpy.TftpShared import TftpException

from provisioner.tftp import files, guard
from provisioner.tftp.files import MediaFile, Resolve
from provisioner.tftp import pump
from provisioner.tftp.guard import Refused
from provisioner.tftp.workers import WorkerLost, WorkerPool

log = logging.getLogger(__name__)

# on_event kinds (the caller prefixes them: "tftp.refused"). Refusals carry details["reason"]
# (guard.R_*) and "count"; sent/aborted carry "reason", "bytes", "source", "blksize", "seconds".
EV_REFUSED = "refused"
EV_SENT = pump.SENT
EV_ABORTED = pump.ABORTED
EV_ERROR = "error"

OnEvent = Callable[[str, str, "str | None", dict], None]
MacOf = Callable[[str], "str | None"]

_OP_RRQ, _OP_WRQ, _OP_DATA, _OP_ACK, _OP_ERROR, _OP_OACK = 1, 2, 3, 4, 5, 6
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python 3.11 lacks the constant
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst (our address), addr


class _Live:
    """What the decision loop keeps about a transfer a worker is moving."""

    __slots__ = ("ip", "port", "name", "source", "request", "underway", "evicted")

    def __init__(self, ip: str, port: int, name: str, source: str, request: bytes):
        self.ip, self.port, self.name, self.source, self.request = ip, port, name, source, request
        self.underway = False  # the client acknowledged DATA 1 or all data is out (a repeated RRQ is new)
        self.evicted = False  # its place went to a client holding fewer sessions (guard.SessionCaps.admit)


class TftpStartupError(RuntimeError):
    """The TFTP service cannot start (missing root, port in use); the message says why."""


def _error_packet(code: int, message: str) -> bytes:
    pkt = TftpPacketERR()
    pkt.errorcode = code
    pkt.errmsgs = {**pkt.errmsgs, code: message.encode("ascii", "replace")}
    return pkt.encode().buffer


class TftpService:
    """Serves tftp_root read-only; `resolve(name, client_ip)` is asked first for every name.

    `name` is relative to tftp_root ('/' prefixes dropped, '.' and '//' collapsed; names with '..' are
    refused before anything is asked). resolve returns the rendered bytes of a dynamic name (per-MAC
    configs) or None for "not dynamic"; then `media_file(name)` may map the name to a file in a media tree
    (it must confine itself to the media trees); else the file under tftp_root is served if it really lies
    there. Both hooks run in the TFTP thread, so they must be fast (no slow DB round trips).
    `on_event(kind, client_ip, filename, details)` is called from the TFTP thread for every refusal and
    finished transfer; it must be quick (queue, do not block). In a flood, refusal events are rate-limited:
    details["count"] says how many refusals an event stands for. `workers` processes move the bytes
    (default: one per CPU, at most 4), forking a process per transfer of a file of `fork_min_size` bytes or
    more (default solo.MIN_SIZE) while fewer than config.tftp_fork_limit run. `mac_of(name)` gives the MAC a
    name carries for the log lines about it (the caller knows the boot file names; this package does not).
    """

    def __init__(self, config: Any, resolve: Resolve, media_file: MediaFile | None = None,
                 on_event: OnEvent | None = None, *, timeout: float = 1.0, retries: int = 5,
                 workers: int | None = None, fork_min_size: int | None = None, mac_of: MacOf | None = None):
        self.config = config
        self.root = Path(config.tftp_root)
        self._resolve, self._media_file, self._on_event, self._mac_of = resolve, media_file, on_event, mac_of
        self.timeout, self.retries = timeout, retries  # 1 s doubling, like tftp-hpa (tftpy: fixed 5 s)
        self._caps = guard.SessionCaps(config.tftp_max_sessions, config.tftp_max_sessions_per_client)
        self._budget = guard.EventBudget()
        self._parked = guard.Parked()
        self._freed = False  # a session ended since the parked requests were last decided
        self._factory = TftpPacketFactory()
        self._workers = WorkerPool(workers or min(4, os.cpu_count() or 1), timeout, retries, config.log_level,
                                   self._ended, self._underway, fork_limit=config.tftp_fork_limit,
                                   fork_min_size=fork_min_size)
        self._live: dict[int, _Live] = {}  # session id -> transfer
        self._peers: dict[tuple[str, int], int] = {}  # client (ip, port) -> its live session id
        self._last_id = 0
        self._ep: select.epoll | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r = self._wake_w = -1
        self._reply_from = config.bind_address  # our address the request being handled was sent to
        self.counters = {"sessions": 0, "bytes_sent": 0, "refused": 0, "evicted": 0}

    # --- lifecycle ---

    @property
    def address(self) -> tuple[str, int]:
        """The bound (ip, port); port is the real one when config.tftp_port is 0."""
        if self._sock is None:
            raise RuntimeError("TFTP service is not started")
        return self._sock.getsockname()[:2]

    def start(self) -> tuple[str, int]:
        """Check the root, bind, and run the loop in a daemon thread. Raises TftpStartupError."""
        if self._thread is not None:
            raise RuntimeError("TFTP service already started")
        self._stopping = False
        if not self.root.is_dir():
            raise TftpStartupError(f"tftp_root {self.root} does not exist or is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise TftpStartupError(f"tftp_root {self.root} is not readable")
        # tftpy logs every packet it parses at DEBUG/INFO; INFO alone halved its throughput.
        logging.getLogger("tftpy").setLevel(self.config.log_level)
        bind = (self.config.bind_address, self.config.tftp_port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # A larger queue absorbs RRQ bursts (a rack powering on); clients retransmit the rest.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            # On a wildcard bind, learn which of our addresses each request was sent to and answer from
            # it (like tftp-hpa): PXE ROMs drop replies from another address of a multi-homed server.
            sock.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            sock.bind(bind)
        except OSError as err:
            sock.close()
            hint = " (another TFTP server running? tftpd-hpa, dnsmasq)" if err.errno == 98 else ""
            raise TftpStartupError(f"cannot listen on udp {bind[0]}:{bind[1]}: {err.strerror}{hint}") from err
        sock.setblocking(False)
        self._ep = select.epoll()  # no 1,024-descriptor limit, unlike tftpy's select()
        try:
            self._workers.start(self._ep)
        except OSError as err:
            sock.close()
            self._ep.close()
            raise TftpStartupError(f"cannot start the TFTP worker processes: {err}") from err
        self._sock = sock
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="tftp", daemon=True)
        self._thread.start()
        log.info("TFTP serving %s on udp %s:%d", self.root, *self.address)
        return self.address

    def stop(self, timeout: float = 5.0) -> None:
        """Stop at once: open transfers are dropped (and reported as aborted). Safe to call twice."""
        if self._thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("TFTP thread did not stop within %.1f s", timeout)
            return
        self._thread = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "TftpService":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop ---

    def _run(self) -> None:
        assert self._sock is not None and self._ep is not None
        ep, listen_fd, workers = self._ep, self._sock.fileno(), self._workers
        ep.register(listen_fd, select.EPOLLIN)
        ep.register(self._wake_r, select.EPOLLIN)
        next_scan = 0.0
        try:
            while not self._stopping:
                wake = self._parked.next_deadline()
                try:
                    events = ep.poll(0.25 if wake is None else min(0.25, max(0.0, wake - time.monotonic())))
                except OSError:  # never let the loop die; an fd error is logged and retried
                    log.exception("TFTP poll failed")
                    time.sleep(0.05)
                    continue
                for fd, _ in events:
                    try:
                        if fd == listen_fd:
                            self._on_requests()
                        elif fd in workers:
                            workers.on_ready(fd)
                    except Exception as exc:  # a bug or odd packet must cost one request, not the service
                        log.exception("TFTP request handling failed")
                        self._emit(EV_ERROR, "", None, {"error": repr(exc)})
                if self._parked.waiting:
                    self._decide_parked()
                now = time.monotonic()
                if now >= next_scan:
                    for reason, count in self._budget.flush().items():
                        log.warning("TFTP refused %d more requests: %s", count, reason)
                        self._emit(EV_REFUSED, "", None, {"reason": reason, "count": count, "summary": True})
                    next_scan = now + 0.25
        finally:
            workers.stop(3.0)
            ep.close()
            self._sock.close()
            self._sock = None

    def _on_requests(self) -> None:
        assert self._sock is not None
        for _ in range(64):  # bounded, so a flood on the listening port cannot starve transfers
            try:
                data, ancillary, _, (ip, port) = self._sock.recvmsg(2048, socket.CMSG_SPACE(_PKTINFO.size))
            except OSError:  # BlockingIOError: drained
                return
            sid = self._peers.get((ip, port))
            if sid is not None:
                if data == self._live[sid].request and not self._live[sid].underway:
                    continue  # a retransmitted RRQ for a session not yet under way: that session answers it
                # The client reused its port for a new request, so it is done with the old transfer (its
                # last ACK may still be queued behind this RRQ): end that one rather than drop this one.
                del self._peers[(ip, port)]
                self._workers.supersede(sid)
            self._reply_from = self.config.bind_address
            for level, kind, payload in ancillary:
                if level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(payload) >= _PKTINFO.size:
                    self._reply_from = socket.inet_ntoa(_PKTINFO.unpack_from(payload)[1])
            self._on_request(data, ip, port)

    def _decide_parked(self) -> None:
        """Decide again the requests parked over a cap once a place freed; refuse those whose time is up."""
        if self._freed:
            self._freed = False
            for ip, port, deadline, data, reply_from in self._parked.take():
                self._reply_from = reply_from
                self._on_request(data, ip, port, deadline)
        for ip, port, self._reply_from, refusal, name in self._parked.expired():
            self._refuse(refusal, ip, port, name)

    def _on_request(self, data: bytes, ip: str, port: int, deadline: float | None = None) -> None:
        """Decide one request; one over a cap waits (guard.Parked) while a place may free, `deadline` at most."""
        name = None
        try:
            if len(data) < 4:
                raise Refused(guard.R_MALFORMED, 4, "malformed packet")
            opcode = pump.HEADER.unpack_from(data)[0]
            if opcode == _OP_ERROR:
                return  # never answer an error with an error (RFC 1350)
            if opcode in (_OP_DATA, _OP_ACK, _OP_OACK):
                # Not a request: a packet of no transfer of ours (tftp-hpa's client ACKs block 1 after
                # an error packet). RFC 1350 answers "unknown transfer ID"; nothing was refused.
                self._send_error(ip, port, 5, "unknown transfer ID")
                return
            if opcode not in (_OP_RRQ, _OP_WRQ):
                raise Refused(guard.R_OPCODE, 4, "illegal TFTP operation")
            try:
                pkt = self._factory.parse(data)
            except (TftpException, ValueError, struct.error, UnicodeError) as err:
                raise Refused(guard.R_MALFORMED, 4, "malformed request") from err
            name = pkt.filename
            if opcode == _OP_WRQ:
                raise Refused(guard.R_WRITE, 2, "read-only server")
            victim = self._admit(ip)  # before any work, so a flood costs one recvfrom per packet
            norm = guard.normalize_name(name)
            options = guard.negotiate(pkt.options, self.config.tftp_blksize_max)
            fd, size, source = files.open_for(norm, ip, self.root, self._resolve, self._media_file)
            if victim is not None and victim in self._live:  # only for a request we will serve
                self._evict(victim)
            self._start_session(ip, port, norm, source, fd, size, options, data)
        except Refused as refusal:
            if refusal.reason in (guard.R_CLIENT_CAP, guard.R_TOTAL_CAP) and self._parked.park(
                    ip, port, data, self._reply_from, refusal, self._caps.ending(refusal.reason, ip), deadline, name):
                return
            self._refuse(refusal, ip, port, name)

    def _admit(self, ip: str) -> int | None:
        """SessionCaps.admit, counting the workers' reports already sent: a session that ended, or has all its
        data out, before this request arrived must not count against it (issue 17)."""
        try:
            return self._caps.admit(ip)
        except Refused as refusal:
            if refusal.reason not in (guard.R_CLIENT_CAP, guard.R_TOTAL_CAP):
                raise
        self._workers.drain()
        return self._caps.admit(ip)

    def _start_session(self, ip: str, port: int, name: str, source: str, fd: int, size: int,
                       options: dict[str, str], request: bytes) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self._reply_from, 0))
            sock.connect((ip, port))
            first = b""
            if options:
                if "tsize" in options:
                    options["tsize"] = str(size)
                oack = TftpPacketOACK()
                oack.options = options
                first = oack.encode().buffer
            blksize = int(options.get("blksize", guard.DEFAULT_BLKSIZE))
            self._last_id = sid = self._last_id % 0xFFFFFFFF + 1
            self._live[sid] = _Live(ip, port, name, source, request)  # recorded first, then handed off
            self._peers[(ip, port)] = sid
            self._caps.opened(ip, sid)
            self.counters["sessions"] += 1
            try:
                self._workers.hand_off(sid, [sock.fileno(), fd], blksize, first, source, name)
            except WorkerLost as err:
                del self._live[sid], self._peers[(ip, port)]
                self._caps.closed(ip, sid)
                self.counters["sessions"] -= 1
                raise Refused(guard.R_UNAVAILABLE, 0, "internal error") from err
        finally:  # the worker has its own copies now (or the transfer never started)
            sock.close()
            os.close(fd)

    def _ended(self, sid: int, kind: str, details: dict) -> None:
        live = self._live.pop(sid, None)
        if live is None:
            return
        if self._peers.get((live.ip, live.port)) == sid:
            del self._peers[(live.ip, live.port)]
        if not live.evicted:
            self._caps.closed(live.ip, sid)
            self._freed = True
        self.counters["bytes_sent"] += details.get("bytes", 0)
        self._emit(kind, live.ip, live.name, {"port": live.port, **details, "source": live.source})

    def _underway(self, sid: int, all_out: bool = False) -> None:
        live = self._live.get(sid)
        if live is not None:
            live.underway = True
            if all_out and not live.evicted:
                self._caps.all_out(live.ip, sid)
        self._caps.underway(sid)

    def _evict(self, sid: int) -> None:
        """Free the place of a session still waiting for its first ACK now; the worker ends it (superseded)."""
        live = self._live[sid]
        live.evicted = True
        self._caps.closed(live.ip, sid)
        if self._peers.get((live.ip, live.port)) == sid:
            del self._peers[(live.ip, live.port)]
        self._workers.supersede(sid)
        self.counters["evicted"] += 1

    # --- refusals and events ---

    def _refuse(self, refusal: Refused, ip: str, port: int, name: str | None) -> None:
        self.counters["refused"] += 1
        # Every refusal gets an error packet, never a timeout; over a cap too (code 0 or 3 with a message,
        # RFC 1350): a flood's sender learns it is refused, and a client over its cap is not left guessing.
        self._send_error(ip, port, refusal.code, refusal.message)
        count = self._budget.take(refusal.reason)
        if count is not None:
            log.warning("TFTP refused %r from %s:%d: %s", name, ip, port, refusal.reason,
                        extra=guard.log_extra(name, self._mac_of))
            self._emit(EV_REFUSED, ip, name, {"port": port, "reason": refusal.reason,
                                               "error": refusal.message, "count": count})

    def _send_error(self, ip: str, port: int, code: int, message: str) -> None:
        """From the listening port (RFC 1350 lets a refusal come from any port), and from our address the
        request was sent to."""
        source = [(socket.IPPROTO_IP, _IP_PKTINFO, _PKTINFO.pack(0, socket.inet_aton(self._reply_from), bytes(4)))]
        try:
            self._sock.sendmsg([_error_packet(code, message)], source, 0, (ip, port))  # type: ignore[union-attr]
        except OSError:
            pass

    def _emit(self, kind: str, ip: str, name: str | None, details: dict) -> None:
        if kind == EV_ABORTED:
            log.info("TFTP transfer of %s to %s aborted: %s", name, ip, details.get("reason"),
                     extra=guard.log_extra(name, self._mac_of))
        if self._on_event is None:
            return
        try:
            self._on_event(kind, ip, name, details)
        except Exception:
            log.exception("TFTP on_event callback failed")
