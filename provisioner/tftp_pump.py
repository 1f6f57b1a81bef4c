"""TFTP data path: the DATA/ACK exchanges of many transfers over one epoll, in worker processes.

Stdlib only, no decisions: tftp.py decides what a client gets, opens it read-only, and hands the open socket
and file to a worker (tftp_workers.py) over a socketpair. Each worker runs a Pump: a few lines of Python per
packet next to ~8 us of kernel work (waking the client is most of it; bench/tftp_bench.py). Why processes:
that kernel work is most of a transfer's cost, and one thread gets one CPU at most (less when it shares the
GIL with the HTTP server), where tftp-hpa forks a process per transfer.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from typing import Any, BinaryIO, Callable

log = logging.getLogger(__name__)

SENT, ABORTED = "sent", "aborted"  # the on_event kinds of a finished transfer
OP_DATA, OP_ACK, OP_ERROR = 3, 4, 5
HEADER = struct.Struct("!HH")
ACK_0 = HEADER.pack(OP_ACK, 0)
_pack_data, _pack_ack = HEADER.pack_into, HEADER.pack
MAX_WAIT = 8.0  # the doubling resend interval stops here: a dead client holds its place ~30 s, not minutes
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

    def send_next(self) -> None:
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
        self.out = packet
        self.send(packet)

    def close(self) -> None:
        self.sock.close()
        self.src.close()


class Pump:
    """Moves the bytes of many sessions; every end is reported once through on_end(session, kind, reason, details).

    on_underway(session) is called once per session, when a retransmitted RRQ can no longer be what its
    client waits for: the client acknowledged DATA 1, or all the data has gone out.
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
            if first:
                s.out = first
                s.sock.send(first)  # the client's ACK of block 0 brings DATA 1
            else:
                s.send_next()
                if s.final:
                    self.on_underway(s)
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
                    s.send_next()
                    s.last = now
                    if s.tries:
                        s.wait, s.tries = self.timeout, 0
                    if s.block <= 2 and (s.block == 2 or s.final):
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
        if len(pkt) < 4:
            return  # not a TFTP packet; ignore it like a lost one
        opcode, block = HEADER.unpack_from(pkt)
        if opcode == OP_ACK:
            # Duplicate and stray ACKs are ignored: resending on them is the Sorcerer's Apprentice bug.
            if pkt[:4] == s.ack:  # the right ACK (with trailing bytes, or the final one)
                if s.final:
                    self.end(s, SENT, "complete")
                    return
                s.send_next()
                s.last = now
                s.wait, s.tries = self.timeout, 0
                if s.block == 2 or s.final:
                    self.on_underway(s)
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


# --- the worker process: messages over a SOCK_SEQPACKET socketpair, one datagram each ---
# parent -> worker: START (the session socket and file ride along as SCM_RIGHTS), SUPERSEDE, QUIT;
# worker -> parent: READY (once, when it is up), ENDED (the details of Pump.on_end, as JSON), UNDERWAY.
START, SUPERSEDE, QUIT, READY, ENDED, UNDERWAY = b"S", b"X", b"Q", b"R", b"E", b"U"
START_HEAD = struct.Struct("!cIHH")  # kind, session id, blksize, length of the first packet; then it, then meta
ID_MSG = struct.Struct("!cI")  # kind, session id
FDS_SPACE = socket.CMSG_SPACE(2 * struct.calcsize("i"))
MAX_MSG = 65536


def encode_start(sid: int, blksize: int, first: bytes, source: str, name: str) -> bytes:
    return START_HEAD.pack(START, sid, blksize, len(first)) + first + json.dumps([source, name]).encode()


def decode_start(msg: bytes) -> tuple[int, int, bytes, str, str]:
    _, sid, blksize, n = START_HEAD.unpack_from(msg)
    first = msg[START_HEAD.size:START_HEAD.size + n]
    source, name = json.loads(msg[START_HEAD.size + n:])
    return sid, blksize, first, source, name


def encode_ended(sid: int, kind: str, details: dict) -> bytes:
    return ID_MSG.pack(ENDED, sid) + json.dumps({"kind": kind, **details}).encode()


def decode_ended(msg: bytes) -> tuple[int, str, dict]:
    sid = ID_MSG.unpack_from(msg)[1]
    details = json.loads(msg[ID_MSG.size:])
    return sid, details.pop("kind"), details


class Worker:
    """The loop of one worker process: sessions arrive on `channel`, their ends go back on it."""

    def __init__(self, channel: socket.socket, timeout: float, retries: int):
        self.channel = channel
        self.ep = select.epoll()
        self.ep.register(channel.fileno(), select.EPOLLIN)
        self.pump = Pump(self.ep, timeout, retries, self._ended, self._underway)
        self.by_id: dict[int, Session] = {}

    def run(self) -> None:
        chan, pump, next_scan = self.channel.fileno(), self.pump, 0.0
        self._tell(READY)
        try:
            while True:
                events = poll(self.ep, 0.25)
                now = time.monotonic()
                if chan in pump.dispatch(events, now) and not self._on_messages():
                    return
                if now >= next_scan:
                    pump.check_timeouts(now)
                    next_scan = now + min(0.25, pump.timeout / 4)
        finally:
            pump.close_all("shutdown")  # reported before the channel closes: stop() waits for these
            self.ep.close()
            self.channel.close()

    def _on_messages(self) -> bool:
        """Handle what the parent sent; False when it asks us to quit or has gone away."""
        while True:
            try:  # not socket.recv_fds: Python 3.11's ignores its flags argument
                msg, ancillary, _, _ = self.channel.recvmsg(MAX_MSG, FDS_SPACE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            fds = [fd for level, kind, data in ancillary if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                   for fd in struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4])]
            if not msg or msg[:1] == QUIT:
                return False
            if msg[:1] == START and len(fds) == 2:
                self._start(msg, fds)
            elif msg[:1] == SUPERSEDE:
                s = self.by_id.get(ID_MSG.unpack_from(msg)[1])
                if s is not None:  # the client reused its port: it is done with this transfer
                    self.pump.end(s, SENT if s.final else ABORTED, "superseded")
            else:
                for fd in fds:
                    os.close(fd)

    def _start(self, msg: bytes, fds: list[int]) -> None:
        sid, blksize, first, source, name = decode_start(msg)
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        ip, port = sock.getpeername()[:2]
        s = Session(sock, ip, port, name, source, open(fds[1], "rb", buffering=64 * 1024), blksize, sid)
        self.by_id[sid] = s
        self.pump.start(s, first or None)

    def _ended(self, s: Session, kind: str, reason: str, details: dict) -> None:
        self.by_id.pop(s.sid, None)
        self._tell(encode_ended(s.sid, kind, details))

    def _underway(self, s: Session) -> None:
        self._tell(ID_MSG.pack(UNDERWAY, s.sid))

    def _tell(self, msg: bytes) -> None:
        try:
            self.channel.sendall(msg)
        except OSError:  # the parent has gone: the channel's end of file stops this loop next
            pass


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process: CHANNEL_FD TIMEOUT RETRIES LOG_LEVEL (spawned by tftp_workers)."""
    fd, timeout, retries, level = argv or sys.argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the parent (QUIT, or its end of file) stops us
    logging.basicConfig(level=level, format="tftp worker %(process)d: %(levelname)s %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two descriptors per session
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    except (OSError, ValueError):
        pass  # keep the soft limit; the session caps stay far below it in the default configuration
    channel = socket.socket(fileno=int(fd))
    channel.setblocking(True)  # reports wait for room rather than get lost; the parent always drains
    Worker(channel, float(timeout), int(retries)).run()
