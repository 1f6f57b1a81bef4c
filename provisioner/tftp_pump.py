"""TFTP data path: the DATA/ACK exchanges of many transfers over one epoll, a few lines per packet.

Stdlib only, no decisions: tftp.py decides what a client gets, opens it, and hands the transfer to the Pump.
Kept lean because this is where the CPU goes: ~2 us of Python per 1468-byte block next to ~7 us in the
kernel (bench/tftp_bench.py), where tftpy's states cost ~44 us.
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
ACK_PREFIX = HEADER.pack(OP_ACK, 0)[:2]
ACK_0 = HEADER.pack(OP_ACK, 0)
MAX_WAIT = 8.0  # the doubling resend interval stops here: a dead client holds its place ~30 s, not minutes
SPIN_SECONDS = 50e-6  # poll without sleeping this long after the last packet: a sleeping vCPU wakes slowly

OnEnd = Callable[["Session", str, str, dict], None]


class Session:
    """One read transfer: DATA n goes out, ACK n brings DATA n+1; the last packet is kept for resends."""

    __slots__ = ("sock", "ip", "port", "name", "source", "src", "blksize", "buf", "mv", "body", "block",
                 "ack", "final", "out", "last", "wait", "tries", "started", "sent")

    def __init__(self, sock: socket.socket, ip: str, port: int, name: str, source: str, src: BinaryIO,
                 blksize: int):
        self.sock, self.ip, self.port, self.name, self.source, self.src = sock, ip, port, name, source, src
        self.blksize = blksize
        self.buf = bytearray(4 + blksize)
        self.mv = memoryview(self.buf)
        self.body = self.mv[4:]
        self.block = 0
        self.ack = ACK_0  # the ACK that moves the transfer on, as bytes: one comparison per packet
        self.final = False
        self.out: Any = b""
        self.last = self.started = time.monotonic()
        self.wait, self.tries, self.sent = 1.0, 0, 0

    def send_next(self) -> None:
        self.block += 1
        HEADER.pack_into(self.buf, 0, OP_DATA, self.block & 0xFFFF)  # block numbers roll over to 0
        self.ack = ACK_PREFIX + self.buf[2:4]
        n = self.src.readinto(self.body)
        self.final = n < self.blksize
        self.sent += n
        self.out = packet = self.mv[: 4 + n]
        self.sock.send(packet)

    def close(self) -> None:
        self.sock.close()
        self.src.close()


class Pump:
    """Moves the bytes of many sessions; every end is reported once through on_end(session, kind, reason, details)."""

    def __init__(self, ep: select.epoll, timeout: float, retries: int, on_end: OnEnd):
        self.ep, self.timeout, self.retries, self.on_end = ep, timeout, retries, on_end
        self.sessions: dict[int, Session] = {}

    def start(self, s: Session, first: bytes | None) -> None:
        """Register the session and send its first packet: the OACK if options were agreed, else DATA 1."""
        fd = s.sock.fileno()
        self.sessions[fd] = s
        self.ep.register(fd, select.EPOLLIN)
        s.wait = self.timeout
        try:
            if first:
                s.out = first
                s.sock.send(first)  # the client's ACK of block 0 brings DATA 1
            else:
                s.send_next()
        except OSError as err:
            self.end(s, ABORTED, "client_gone", error=err.strerror)

    def dispatch(self, events: list[tuple[int, int]], now: float) -> list[int]:
        """Handle the ready sessions among `events` (the hot path); return the other ready descriptors."""
        sessions, others = self.sessions, []
        for fd, _ in events:
            s = sessions.get(fd)
            if s is None:
                others.append(fd)
                continue
            try:
                pkt = s.sock.recv(1024)
                if pkt == s.ack:
                    self._advance(s, now)
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

    def _advance(self, s: Session, now: float) -> None:
        if s.final:
            self.end(s, SENT, "complete")
            return
        s.send_next()
        s.last = now
        if s.tries:
            s.wait, s.tries = self.timeout, 0

    def _unusual(self, s: Session, pkt: bytes, now: float) -> None:
        if len(pkt) < 4:
            return  # not a TFTP packet; ignore it like a lost one
        opcode, block = HEADER.unpack_from(pkt)
        if opcode == OP_ACK:
            # Duplicate and stray ACKs are ignored: resending on them is the Sorcerer's Apprentice bug.
            if pkt[:4] == s.ack:  # the right ACK, with trailing bytes
                self._advance(s, now)
        elif opcode == OP_ERROR:
            message = pkt[4:].split(b"\0", 1)[0].decode("ascii", "replace")
            self.end(s, ABORTED, "client_error", error=f"{block}: {message}")
        else:
            try:
                s.sock.send(HEADER.pack(OP_ERROR, 4) + b"illegal TFTP operation\0")
            except OSError:
                pass
            self.end(s, ABORTED, "illegal_operation", opcode=opcode)

    def check_timeouts(self, now: float) -> None:
        """Resend the last packet after `timeout`, doubling each time (tftp-hpa's 1 s; tftpy waits 5 s)."""
        for s in list(self.sessions.values()):
            if now - s.last <= s.wait:
                continue
            if s.tries >= self.retries:
                self.end(s, ABORTED, "timeout")
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
        self.on_end(s, kind, reason, {"reason": reason, "source": s.source, "bytes": s.sent,
                                      "blksize": s.blksize, "seconds": round(time.monotonic() - s.started, 3),
                                      **details})

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
