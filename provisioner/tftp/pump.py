"""TFTP data path: the DATA/ACK exchanges of many transfers over one epoll (the Pump), and the rules of a
transfer that both the Pump and a transfer's own process (solo) follow.

Stdlib only, no decisions: tftp.py decides what a client gets, opens it read-only, and hands the open socket
and file to a worker process (workers spawns them, proc is their loop). A worker moves small files
here, a few lines of Python per packet next to ~8 us of kernel work, and gives each big file a process of its
own (solo): bench/tftp_bench.py showed why.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from typing import Any, BinaryIO, Callable

log = logging.getLogger(__name__)

SENT, ABORTED = "sent", "aborted"  # the on_event kinds of a finished transfer
OP_DATA, OP_ACK, OP_ERROR = 3, 4, 5
HEADER = struct.Struct("!HH")
ACK_0 = HEADER.pack(OP_ACK, 0)
_pack_data, _pack_ack = HEADER.pack_into, HEADER.pack
MAX_WAIT = 8.0  # the doubling resend interval stops here: a dead client holds its place ~30 s, not minutes
# Resends of DATA 1 (or the OACK) before a transfer whose client never acknowledged it is dropped: one resend
# cycle (1 s + 2 s), not the full `retries`. Issue 15 finding 2: 512 RRQs never acknowledged held every
# session for ~25 s. A real client that lost both packets retransmits its RRQ and gets a new transfer.
FIRST_RETRIES = 1
SPIN_SECONDS = 50e-6  # poll without sleeping this long after the last packet: a sleeping vCPU wakes slowly

OnEnd = Callable[["Session", str, str, dict], None]


class Session:
    """One read transfer: DATA n goes out, ACK n brings DATA n+1; the last packet is kept for resends."""

    __slots__ = ("sock", "ip", "port", "name", "source", "src", "blksize", "buf", "mv", "body", "full", "block",
                 "ack", "final", "out", "last", "wait", "tries", "started", "sent", "recv", "send", "readinto",
                 "sid")

    def __init__(self, sock: socket.socket, ip: str, port: int, name: str, source: str, src: BinaryIO,
                 blksize: int, sid: int = 0):
        self.sock, self.ip, self.port, self.name, self.source, self.src = sock, ip, port, name, source, src
        self.blksize, self.sid = blksize, sid
        self.buf = bytearray(4 + blksize)
        self.mv = self.full = memoryview(self.buf)  # `full`: a whole block, sent without slicing
        self.body = self.mv[4:]
        # Bound methods, looked up once: the hot path is a handful of calls per packet.
        self.recv, self.send, self.readinto = sock.recv, sock.send, src.readinto
        self.block = 0
        self.ack = ACK_0  # the ACK that moves the transfer on, as bytes: one comparison per packet
        self.final = False
        self.out: Any = b""
        self.last = self.started = time.monotonic()
        self.wait, self.tries, self.sent = 1.0, 0, 0

    def send_next(self, underway: Callable[["Session"], None] | None = None) -> None:
        """DATA n+1 out. Before the last DATA leaves, `underway(self)` is told (self.final is then True): the
        client's ACK of it, and its next request, may follow at once, and the server must know by then that
        this session's place is about to free (server.py parks the request meanwhile)."""
        self.block = block = self.block + 1
        block &= 0xFFFF  # block numbers roll over to 0
        _pack_data(self.buf, 0, OP_DATA, block)
        self.ack = _pack_ack(OP_ACK, block)
        n = self.readinto(self.body)
        self.sent += n
        if n == self.blksize:
            packet = self.full
        else:
            self.final = True
            packet = self.mv[: 4 + n]
            if underway is not None:
                underway(self)
        self.out = packet
        self.send(packet)

    def send_first(self, first: bytes | None, underway: Callable[["Session"], None]) -> None:
        """The transfer's first packet: the OACK if options were agreed (the client's ACK of block 0 brings
        DATA 1), else DATA 1, which may be all the data (then it is under way at once)."""
        if first:
            self.out = first
            self.sock.send(first)
        else:
            self.send_next(underway)

    def close(self) -> None:
        self.sock.close()
        self.src.close()

    def details(self, reason: str, **extra: Any) -> dict:
        """What an end reports (on_end's details; tftp.py turns them into the sent/aborted event)."""
        return {"reason": reason, "source": self.source, "bytes": self.sent, "blksize": self.blksize,
                "seconds": round(time.monotonic() - self.started, 3), **extra}


End = tuple[str, str, dict] | None  # (kind, reason, extra details) of a transfer that ended


def unusual(s: Session, pkt: bytes, now: float, timeout: float, underway: Callable[[Session], None]) -> End:
    """A packet other than the plain ACK that moves `s` on: the end it brings (kind, reason, extra details)
    or None. Duplicate and stray ACKs are ignored: resending on them is the Sorcerer's Apprentice bug."""
    if len(pkt) < 4:
        return None  # not a TFTP packet; ignore it like a lost one
    opcode, block = HEADER.unpack_from(pkt)
    if opcode == OP_ACK:
        if pkt[:4] == s.ack:  # the right ACK (with trailing bytes, or the final one)
            if s.final:
                return SENT, "complete", {}
            s.send_next(underway)
            s.last = now
            s.wait, s.tries = timeout, 0
            if s.block == 2 and not s.final:
                underway(s)
        return None
    if opcode == OP_ERROR:
        message = pkt[4:].split(b"\0", 1)[0].decode("ascii", "replace")
        return ABORTED, "client_error", {"error": f"{block}: {message}"}
    try:
        s.sock.send(HEADER.pack(OP_ERROR, 4) + b"illegal TFTP operation\0")
    except OSError:
        pass
    return ABORTED, "illegal_operation", {"opcode": opcode}


class Pump:
    """Moves the bytes of many sessions; every end is reported once through on_end(session, kind, reason, details).

    on_underway(session) is called when a retransmitted RRQ can no longer be what its client waits for (the
    client acknowledged DATA 1, or all the data is going out), and again just before the last DATA goes out
    (`session.final`) if that is later: from then on only the client's last ACK is awaited, which ends the
    session and frees its place under the caps (server.py parks an over-cap request meanwhile).
    """

    def __init__(self, ep: select.epoll, timeout: float, retries: int, on_end: OnEnd,
                 on_underway: Callable[[Session], None] = lambda s: None):
        self.ep, self.timeout, self.retries, self.on_end, self.on_underway = ep, timeout, retries, on_end, on_underway
        self.sessions: dict[int, Session] = {}

    def start(self, s: Session, first: bytes | None) -> None:
        """Register the session and send its first packet: the OACK if options were agreed, else DATA 1."""
        fd = s.sock.fileno()
        self.sessions[fd] = s
        self.ep.register(fd, select.EPOLLIN)
        s.wait = self.timeout
        try:
            s.send_first(first, self.on_underway)
        except OSError as err:
            self.end(s, ABORTED, "client_gone", error=err.strerror)

    def dispatch(self, events: list[tuple[int, int]], now: float) -> list[int]:
        """Handle the ready sessions among `events` (the hot path); return the other ready descriptors."""
        get, others = self.sessions.get, []
        for fd, _ in events:
            s = get(fd)
            if s is None:
                others.append(fd)
                continue
            try:
                pkt = s.recv(1024)
                if pkt == s.ack and not s.final:  # the common case, inlined: ACK n in, DATA n+1 out
                    s.send_next(self.on_underway)
                    s.last = now
                    if s.tries:
                        s.wait, s.tries = self.timeout, 0
                    if s.block == 2 and not s.final:
                        self.on_underway(s)
                else:
                    self._unusual(s, pkt, now)
            except BlockingIOError:
                pass
            except OSError as err:  # ECONNREFUSED: the client's port is closed (ICMP), it has gone away
                reason = "client_gone" if isinstance(err, ConnectionRefusedError) else "io_error"
                self.end(s, ABORTED, reason, error=err.strerror)
            except Exception as exc:  # a bug must cost one transfer, not the service
                log.exception("TFTP transfer of %s to %s failed", s.name, s.ip)
                self.end(s, ABORTED, "internal_error", error=repr(exc))
        return others

    def _unusual(self, s: Session, pkt: bytes, now: float) -> None:
        end = unusual(s, pkt, now, self.timeout, self.on_underway)
        if end is not None:
            self.end(s, end[0], end[1], **end[2])

    def check_timeouts(self, now: float) -> None:
        """Resend the last packet after `timeout`, doubling each time (tftp-hpa's 1 s; tftpy waits 5 s); DATA 1
        never acknowledged (block <= 1) gets FIRST_RETRIES resends only."""
        for s in list(self.sessions.values()):
            if now - s.last <= s.wait:
                continue
            if s.tries >= (self.retries if s.block > 1 else min(self.retries, FIRST_RETRIES)):
                self.end(s, ABORTED, "timeout", first_block=s.block <= 1)
                continue
            s.tries += 1
            s.wait = min(s.wait * 2, max(MAX_WAIT, self.timeout))
            s.last = now
            try:
                s.sock.send(s.out)
            except OSError as err:
                self.end(s, ABORTED, "client_gone", error=err.strerror)

    def end(self, s: Session, kind: str, reason: str, **details: Any) -> None:
        fd = s.sock.fileno()
        if self.sessions.pop(fd, None) is None:
            return
        self.ep.unregister(fd)
        s.close()
        self.on_end(s, kind, reason, s.details(reason, **details))

    def close_all(self, reason: str) -> None:
        for s in list(self.sessions.values()):
            self.end(s, ABORTED, reason)


def poll(ep: select.epoll, timeout: float) -> list[tuple[int, int]]:
    """epoll_wait, spinning briefly before sleeping: a few percent more throughput with 32 transfers on a
    2-vCPU VM, where a halted vCPU takes long to wake; it costs nothing when there is no traffic."""
    events = ep.poll(0)
    if events:
        return events
    deadline = time.perf_counter() + SPIN_SECONDS
    while time.perf_counter() < deadline:
        events = ep.poll(0)
        if events:
            return events
    return ep.poll(timeout)
