"""A TFTP worker process: its messages with the parent (workers), and its loop (stdlib only).

The loop moves small files' transfers in one epoll (pump.Pump) and forks a process for each big file's
transfer (solo.Forks), up to `fork_limit` at once; past that limit, big files share the loop too.
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

from provisioner.tftp.pump import ABORTED, SENT, Pump, Session, poll
from provisioner.tftp.solo import MIN_SIZE, Forks

log = logging.getLogger(__name__)

# --- the worker process: messages over a SOCK_SEQPACKET socketpair, one datagram each ---
# parent -> worker: START (the session socket and file ride along as SCM_RIGHTS), SUPERSEDE, QUIT;
# worker -> parent: READY (once, when it is up), ENDED (the details of Pump.on_end, as JSON), UNDERWAY, LAST (under
# way with all its data out: only the client's last ACK is awaited).
START, SUPERSEDE, QUIT, READY, ENDED, UNDERWAY, LAST = b"S", b"X", b"Q", b"R", b"E", b"U", b"L"
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

    def __init__(self, channel: socket.socket, timeout: float, retries: int, fork_limit: int = 0,
                 fork_min_size: int = MIN_SIZE):
        self.channel, self.timeout, self.retries = channel, timeout, retries
        self.ep = select.epoll()
        self.ep.register(channel.fileno(), select.EPOLLIN)
        self.pump = Pump(self.ep, timeout, retries, self._ended, self._underway)
        self.forks = Forks(self.ep, channel.fileno(), fork_limit, self._tell_ended,
                           lambda sid, last: self._tell(ID_MSG.pack(LAST if last else UNDERWAY, sid)), min_size=fork_min_size)
        self.by_id: dict[int, Session] = {}

    def run(self) -> None:
        chan, pump, next_scan = self.channel.fileno(), self.pump, 0.0
        self._tell(READY)
        try:
            while True:
                events = poll(self.ep, 0.25)
                now = time.monotonic()
                for fd in pump.dispatch(events, now):
                    if fd == chan:
                        if not self._on_messages():
                            return
                    elif fd in self.forks:
                        self.forks.reap(fd)
                if now >= next_scan:
                    pump.check_timeouts(now)
                    next_scan = now + min(0.25, pump.timeout / 4)
        finally:
            pump.close_all("shutdown")  # reported before the channel closes: stop() waits for these
            self.forks.stop(2.0)  # each child reports its own end; the channel closes when the last one exits
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
                sid = ID_MSG.unpack_from(msg)[1]
                s = self.by_id.get(sid)
                if s is None:
                    self.forks.supersede(sid)
                else:  # the client reused its port: it is done with this transfer
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
        if self.forks.wants(s) and self.forks.start(s, first or None, self.timeout, self.retries):
            return
        self.by_id[sid] = s
        self.pump.start(s, first or None)

    def _ended(self, s: Session, kind: str, reason: str, details: dict) -> None:
        self.by_id.pop(s.sid, None)
        self._tell_ended(s.sid, kind, details)

    def _tell_ended(self, sid: int, kind: str, details: dict) -> None:
        self._tell(encode_ended(sid, kind, details))

    def _underway(self, s: Session) -> None:
        self._tell(ID_MSG.pack(LAST if s.final else UNDERWAY, s.sid))

    def _tell(self, msg: bytes) -> None:
        try:
            self.channel.sendall(msg)
        except OSError:  # the parent has gone: the channel's end of file stops this loop next
            pass


def worker_main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process (spawned by workers.worker_argv):
    CHANNEL_FD TIMEOUT RETRIES LOG_LEVEL FORK_LIMIT FORK_MIN_SIZE."""
    fd, timeout, retries, level, fork_limit, fork_min_size = argv or sys.argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the parent (QUIT, or its end of file) stops us
    logging.basicConfig(level=level, format="tftp worker %(process)d: %(levelname)s %(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two descriptors per session
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    except (OSError, ValueError):
        pass  # keep the soft limit; the session caps stay far below it in the default configuration
    channel = socket.socket(fileno=int(fd))
    channel.setblocking(True)  # reports wait for room rather than get lost; the parent always drains
    Worker(channel, float(timeout), int(retries), int(fork_limit), int(fork_min_size)).run()
