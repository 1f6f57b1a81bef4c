"""TFTP: a big file's transfer in a process of its own, forked by its worker (tftp-hpa's model), stdlib only.

Why: bench/tftp_bench.py (32 clients x 8 MB) measured the shared epoll loop at 0.92-1.04x tftp-hpa, losing on
wake-ups: a worker serving many clients runs on one CPU and wakes clients on the other (0.23 inter-processor
interrupts per block, tftp-hpa 0.02). A blocking process per transfer is woken on the CPU its client just ran
on, as tftp-hpa's children are (0.01 per block). Forking costs ~1 ms, so small files (configs, loaders: what
decides a boot, and what the config-latency target times) stay in the worker's loop. A child costs ~1.5 MB of
private memory (measured: 32 transfers, 48 MB), hence config.tftp_fork_limit per worker.

A child holds only its socket, its file and the worker's channel; it reports its end (and "under way") on the
channel itself, then exits 0. The worker watches each child through a pidfd: a child that exits otherwise
(killed, crashed) is reported aborted by the worker. Signals: SIGUSR1 = superseded (its client reused the
port), SIGTERM = the worker is stopping, SIGHUP = the worker died (PR_SET_PDEATHSIG), each ending the transfer
with that reason.

A child runs as SCHED_BATCH: its wake-ups (one per ACK) do not preempt the task that is running, so the client
that just sent the ACK goes on to its own wait instead of being switched out and back (the curl clients' forced
context switches per block drop from 0.17 to 0.14; tftp-hpa's: 0.10), and the worker's loop (configs, the
decisions), HTTP and the coordinator keep their latency while many hosts pull kernels. Measured (31 rounds):
1.025x tftp-hpa paired, against 1.013x at the normal policy, with less spread (0.97-1.11 vs 0.81-1.12).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import struct
import time
from typing import Callable

from provisioner.tftp.pump import ABORTED, FIRST_RETRIES, HEADER, MAX_WAIT, OP_ACK, OP_DATA, SENT, Session, unusual

log = logging.getLogger(__name__)

MIN_SIZE = 256 * 1024  # files at least this big get a process of their own (xen.gz, vmlinuz; not configs)
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGUSR1: "superseded", signal.SIGTERM: "shutdown", signal.SIGHUP: "worker_died"}
_TIMEVAL = struct.Struct("@ll")
_MAX_IN = 479  # bytes read per packet: the largest bytes object CPython allocates from its small-object pool

TellEnded = Callable[[int, str, dict], None]  # session id, kind, details
TellUnderway = Callable[[int, bool], None]  # session id, all data out (only the last ACK awaited)


class Stop(Exception):
    """A signal ended the transfer; `reason` says which (see _STOP_SIGNALS)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _set_wait(sock: socket.socket, seconds: float) -> None:
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))


PROGRESS = object()  # what _stream returns after a step the slow path must see (see there)


def _stream(s: Session) -> object:
    """The hot path, on local variables: ACK n in, DATA n+1 out, until a packet that is not the ACK of the last
    DATA (returned), `s.wait` seconds without any packet (None), or a step with bookkeeping to do (PROGRESS:
    DATA 2 went out, the last DATA is ready in `s.out` but NOT sent (s.final: the caller tells "under way" first,
    then sends it; pump.Session.send_next says why), or a resend count to reset). `s` is up to date when it
    returns."""
    # os.read/os.write on the connected socket: no argument tuple, module lookup or 1 KiB malloc per call as
    # sock.recv/send have (0.84 vs 0.96 us per ACK read, measured); a client sends only ACKs and short ERRORs here.
    fd, read, write = s.sock.fileno(), os.read, os.write
    readinto, pack_into, pack = s.readinto, HEADER.pack_into, HEADER.pack
    buf, body, full, blksize = s.buf, s.body, s.full, s.blksize
    block = start = s.block
    ack, sent = s.ack, s.sent
    try:
        if s.final:
            return read(fd, _MAX_IN)
        while True:
            pkt = read(fd, _MAX_IN)
            if pkt != ack:
                return pkt
            block += 1
            pack_into(buf, 0, OP_DATA, block & 0xFFFF)
            ack = pack(OP_ACK, block & 0xFFFF)
            n = readinto(body)
            sent += n
            if n != blksize:
                s.final = True
                s.out = s.mv[: 4 + n]
                return PROGRESS
            write(fd, full)
            if block <= 2 or s.tries:
                return PROGRESS
    except BlockingIOError:  # SO_RCVTIMEO: no packet for `wait` seconds
        return None
    finally:
        s.block, s.ack, s.sent = block, ack, sent
        if block != start and not s.final:
            s.out = full


def serve_alone(s: Session, first: bytes | None, timeout: float, retries: int,
                underway: Callable[[Session], None]) -> tuple[str, str, dict]:
    """Move one transfer with blocking calls until it ends; the Pump's rules (pump.unusual, resend after
    `timeout` doubling up to MAX_WAIT, `retries` resends). Returns (kind, reason, details)."""
    sock, monotonic = s.sock, time.monotonic
    try:
        sock.setblocking(True)  # with SO_RCVTIMEO: recv waits `wait` seconds, then raises BlockingIOError
        s.wait = armed = timeout
        _set_wait(sock, timeout)
        s.send_first(first, underway)
        seen = s.block  # the block s.last belongs to: the clock restarts when the transfer has moved on
        while True:
            pkt = _stream(s)
            now = monotonic()
            if pkt is PROGRESS:
                seen, s.last = s.block, now
                if s.tries:
                    s.wait, s.tries = timeout, 0
                if s.final:
                    underway(s)
                    sock.send(s.out)  # the last DATA, after the report that this session's place frees next
                elif s.block == 2:
                    underway(s)
                silent = False
            elif pkt is None:
                silent = True
            else:
                end = unusual(s, pkt, now, timeout, underway)  # stray and duplicate packets do not count
                if end is not None:
                    return end[0], end[1], s.details(end[1], **end[2])
                if s.block != seen:
                    seen, s.last = s.block, now
                silent = now - s.last >= s.wait
            if silent:  # no progress for `wait` seconds: resend, or give up
                if s.tries >= (retries if s.block > 1 else min(retries, FIRST_RETRIES)):  # pump's rule
                    return ABORTED, "timeout", s.details("timeout", first_block=s.block <= 1)
                s.tries += 1
                s.wait = min(s.wait * 2, max(MAX_WAIT, timeout))
                seen, s.last = s.block, now
                sock.send(s.out)
            if s.wait != armed:
                armed = s.wait
                _set_wait(sock, armed)
    except Stop as stop:
        return (SENT if stop.reason == "superseded" and s.final else ABORTED), stop.reason, s.details(stop.reason)
    except OSError as err:  # ECONNREFUSED: the client's port is closed (ICMP), it has gone away
        reason = "client_gone" if isinstance(err, ConnectionRefusedError) else "io_error"
        return ABORTED, reason, s.details(reason, error=err.strerror)
    except Exception as exc:  # a bug must cost one transfer
        log.exception("TFTP transfer of %s to %s failed", s.name, s.ip)
        return ABORTED, "internal_error", s.details("internal_error", error=repr(exc))


def _raise_stop(signum: int, _frame: object) -> None:
    raise Stop(_STOP_SIGNALS[signum])


class Forks:
    """The worker's side: fork a child per big transfer (at most `limit` at once), watch, signal, reap them."""

    def __init__(self, ep: select.epoll, channel_fd: int, limit: int, tell_ended: TellEnded,
                 tell_underway: TellUnderway, *, min_size: int = MIN_SIZE):
        self.ep, self.channel_fd, self.limit, self.min_size = ep, channel_fd, limit, min_size
        self.tell_ended, self.tell_underway = tell_ended, tell_underway
        self.children: dict[int, tuple[int, int]] = {}  # pidfd -> (pid, session id)
        self.pids: dict[int, int] = {}  # session id -> pid
        self.stopping = False
        self._libc: ctypes.CDLL | None = None

    def wants(self, s: Session) -> bool:
        """Whether `s` should get a process: room under the limit, and a file at least min_size long."""
        return len(self.children) < self.limit and os.fstat(s.src.fileno()).st_size >= self.min_size

    def start(self, s: Session, first: bytes | None, timeout: float, retries: int) -> bool:
        """Fork a child that serves `s`; the worker's copies are closed. False (nothing changed) when the
        fork fails, and the caller serves `s` itself."""
        if self._libc is None:
            self._libc = ctypes.CDLL(None, use_errno=True)
        worker = os.getpid()
        try:
            pid = os.fork()
        except OSError as err:
            log.warning("cannot fork for the TFTP transfer of %s to %s (%s): served by the worker's loop",
                        s.name, s.ip, err.strerror)
            return False
        if pid == 0:
            self._child(s, first, timeout, retries, worker)  # never returns
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as err:  # out of descriptors: a child nobody watches must not run
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            s.close()
            log.error("cannot watch the TFTP transfer process for %s to %s: %s", s.name, s.ip, err.strerror)
            self.tell_ended(s.sid, ABORTED, s.details("internal_error", error=f"pidfd_open: {err.strerror}"))
            return True
        self.children[pidfd] = (pid, s.sid)
        self.pids[s.sid] = pid
        self.ep.register(pidfd, select.EPOLLIN)
        s.close()
        return True

    def _child(self, s: Session, first: bytes | None, timeout: float, retries: int, worker: int) -> None:
        code = 1
        try:
            try:
                for signum in _STOP_SIGNALS:
                    signal.signal(signum, _raise_stop)
                assert self._libc is not None
                self._libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGHUP))
                if os.getppid() != worker:
                    raise Stop("worker_died")
                try:  # bulk work: woken by its client's ACK, it does not preempt the client (or anyone else)
                    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
                except OSError:
                    pass  # a sandbox that forbids it: the normal policy works too, a little slower
                keep = {0, 1, 2, self.channel_fd, s.sock.fileno(), s.src.fileno()}
                for name in os.listdir("/proc/self/fd"):  # the epoll, other transfers' sockets and files
                    if int(name) not in keep:
                        try:
                            os.close(int(name))
                        except OSError:
                            pass  # the listing's own descriptor, closed already
                kind, _, details = serve_alone(s, first, timeout, retries,
                                              lambda s: self.tell_underway(s.sid, s.final))
            except Stop as stop:
                kind, details = ABORTED, s.details(stop.reason)
            signal.pthread_sigmask(signal.SIG_BLOCK, set(_STOP_SIGNALS))  # one report, never cut short
            self.tell_ended(s.sid, kind, details)
            code = 0
        except BaseException:
            log.exception("TFTP transfer process for %s to %s failed", s.name, s.ip)
        finally:
            os._exit(code)

    def __contains__(self, fd: int) -> bool:
        return fd in self.children

    def reap(self, pidfd: int) -> None:
        """A child ended: collect it; report its transfer aborted unless it reported (exit status 0)."""
        pid, sid = self.children.pop(pidfd)
        self.ep.unregister(pidfd)
        os.close(pidfd)
        self.pids.pop(sid, None)
        try:
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            code = -1
        if code != 0:
            reason = "shutdown" if self.stopping else "internal_error"
            self.tell_ended(sid, ABORTED, {"reason": reason, "error": f"transfer process exit status {code}"})

    def supersede(self, sid: int) -> bool:
        """Tell the child serving `sid` that its client moved on; False when no child serves it."""
        pid = self.pids.get(sid)
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass  # it has just ended; its report is on the way
        return True

    def stop(self, timeout: float) -> None:
        """End every child's transfer (each reports "shutdown"), reap them all; kill what outlives `timeout`."""
        self.stopping = True
        for pid, _ in self.children.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        with select.epoll() as watch:  # the children alone (the worker's epoll has its sessions and channel)
            for pidfd in self.children:
                watch.register(pidfd, select.EPOLLIN)
            while self.children:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                for pidfd, _ in watch.poll(left):
                    watch.unregister(pidfd)
                    self.reap(pidfd)
        for pidfd, (pid, _) in list(self.children.items()):
            log.error("TFTP transfer process %d did not stop; killing it", pid)
            os.kill(pid, signal.SIGKILL)
            self.reap(pidfd)
