"""TFTP worker pool, parent side: spawn the worker processes (proc), hand each transfer to the least busy, read reports.

Stdlib only. Decisions never leave tftp.py's thread: a worker gets a socket already connected to the client
and a file already opened read-only (or a memfd holding a rendered config), both by SCM_RIGHTS, so it cannot
open a path or accept an upload. Workers are spawned, not forked (the parent has threads and SQLite
connections), in a process group of their own (a terminal's Ctrl-C goes to the parent, which stops them) but
in the parent's session: a new session would be a new scheduler autogroup, measured to cut throughput by a
quarter on a busy machine. A worker whose parent dies sees its channel close and exits.
"""

from __future__ import annotations

import logging
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from provisioner.tftp import proc as tftp_proc
from provisioner.tftp import pump
from provisioner.tftp.solo import MIN_SIZE

log = logging.getLogger(__name__)

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the directory holding provisioner/
_BOOT = (f"import sys; sys.path.insert(0, {_PACKAGE_PARENT!r}); "
         "from provisioner.tftp.proc import worker_main; worker_main()")
READY_TIMEOUT = 20.0  # seconds a new worker may take to import and answer (a loaded test machine is slow)
RESPAWN_AFTER = 1.0  # a worker that dies younger than this is not replaced (a crash loop would spin)

OnEnded = Callable[[int, str, dict], None]  # session id, pump.SENT or pump.ABORTED, details
OnUnderway = Callable[[int, bool], None]  # session id, all its data out


def worker_argv(channel_fd: int, timeout: float, retries: int, log_level: str, fork_limit: int = 0,
                fork_min_size: int | None = None) -> list[str]:
    """The command line of a worker process serving the SOCK_SEQPACKET socket `channel_fd` (inherited), which
    forks a process for each transfer of `fork_min_size` bytes or more while fewer than `fork_limit` run."""
    size = MIN_SIZE if fork_min_size is None else fork_min_size
    return [sys.executable, "-c", _BOOT, str(channel_fd), str(timeout), str(retries), log_level, str(fork_limit),
            str(size)]


class WorkerLost(RuntimeError):
    """No worker process could take a transfer (all dead, or all with full queues)."""


class _Worker:
    __slots__ = ("proc", "chan", "sessions", "born")

    def __init__(self, proc: subprocess.Popen, chan: socket.socket):
        self.proc, self.chan, self.sessions, self.born = proc, chan, set(), time.monotonic()


class WorkerPool:
    """`count` worker processes, each forking a process per big transfer (`fork_limit` at once, solo);
    on_ended / on_underway are called from the thread that calls on_ready and stop."""

    def __init__(self, count: int, timeout: float, retries: int, log_level: str, on_ended: OnEnded,
                 on_underway: OnUnderway, *, respawn_after: float = RESPAWN_AFTER, fork_limit: int = 0,
                 fork_min_size: int | None = None):
        if count < 1:
            raise ValueError(f"TFTP needs at least one worker process, got {count}")
        self.count, self.args = count, (timeout, retries, log_level, fork_limit, fork_min_size)
        self.respawn_after = respawn_after
        self.on_ended, self.on_underway = on_ended, on_underway
        self.workers: dict[int, _Worker] = {}  # channel fd -> worker
        self.owner: dict[int, _Worker] = {}  # session id -> its worker
        self.ep: select.epoll | None = None

    def start(self, ep: select.epoll) -> None:
        """Spawn the workers, wait until each answers, register their channels in `ep`.

        Raises OSError naming the problem (nothing is left running).
        """
        self.ep = ep
        try:
            for _ in range(self.count):
                self._spawn()
        except OSError:
            self.stop(1.0)
            raise

    def _spawn(self) -> None:
        assert self.ep is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(worker_argv(theirs.fileno(), *self.args), pass_fds=(theirs.fileno(),),
                                    stdin=subprocess.DEVNULL, process_group=0)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(READY_TIMEOUT)
        try:
            ready = ours.recv(16)
        except OSError:
            ready = b""
        if ready != tftp_proc.READY:
            ours.close()
            proc.kill()
            proc.wait()
            raise OSError(f"TFTP worker process {proc.pid} did not start (exit status {proc.returncode}; its "
                          "error, if any, is on standard error)")
        ours.setblocking(False)  # a full queue must cost one transfer, never block the decision loop
        self.workers[ours.fileno()] = _Worker(proc, ours)
        self.ep.register(ours.fileno(), select.EPOLLIN)

    def __contains__(self, fd: int) -> bool:
        return fd in self.workers

    def hand_off(self, sid: int, fds: list[int], blksize: int, first: bytes, source: str, name: str) -> None:
        """Give the transfer to the least busy worker (the caller closes its copies of `fds`). Raises WorkerLost."""
        msg = tftp_proc.encode_start(sid, blksize, first, source, name)
        for w in sorted(self.workers.values(), key=lambda w: len(w.sessions)):
            try:
                socket.send_fds(w.chan, [msg], fds)
            except OSError:  # its queue is full (BlockingIOError) or it died (EPIPE): try the next one
                continue
            w.sessions.add(sid)
            self.owner[sid] = w
            return
        raise WorkerLost("no TFTP worker process could take the transfer")

    def supersede(self, sid: int) -> None:
        """End a transfer whose client reused its port for a new request; its end is reported as usual."""
        w = self.owner.get(sid)
        if w is not None:
            try:
                w.chan.send(tftp_proc.ID_MSG.pack(tftp_proc.SUPERSEDE, sid))
            except OSError:
                pass  # it will time out instead

    def drain(self) -> None:
        """Read every report the workers have sent so far (before refusing a request over a cap)."""
        for fd in list(self.workers):
            self.on_ready(fd)

    def on_ready(self, fd: int) -> None:
        """Read a worker's reports; a worker that died is replaced and its transfers reported aborted."""
        w = self.workers[fd]
        while True:
            try:
                msg = w.chan.recv(tftp_proc.MAX_MSG)
            except BlockingIOError:
                return
            except OSError:
                msg = b""
            if not msg:
                self._lost(w)
                return
            self._report(w, msg)

    def _report(self, w: _Worker, msg: bytes) -> None:
        if msg[:1] == tftp_proc.ENDED:
            sid, kind, details = tftp_proc.decode_ended(msg)
            w.sessions.discard(sid)
            self.owner.pop(sid, None)
            self.on_ended(sid, kind, details)
        elif msg[:1] in (tftp_proc.UNDERWAY, tftp_proc.LAST):
            self.on_underway(tftp_proc.ID_MSG.unpack_from(msg)[1], msg[:1] == tftp_proc.LAST)

    def _lost(self, w: _Worker) -> None:
        self._close(w)
        try:
            code = w.proc.wait(1.0)
        except subprocess.TimeoutExpired:  # it closed its channel but lives on: it is of no use any more
            w.proc.kill()
            code = w.proc.wait()
        log.error("TFTP worker %d exited (status %s) with %d transfers", w.proc.pid, code, len(w.sessions))
        self._abort_all(w, "worker_died", error=f"worker exit status {code}")
        if time.monotonic() - w.born < self.respawn_after:
            log.error("TFTP worker %d died within %.1f s of starting: not replaced", w.proc.pid, self.respawn_after)
            return
        try:
            self._spawn()
        except OSError:
            log.exception("could not start a TFTP worker process")

    def _close(self, w: _Worker) -> None:
        fd = w.chan.fileno()
        if self.workers.pop(fd, None) is not None and self.ep is not None:
            self.ep.unregister(fd)
        w.chan.close()

    def _abort_all(self, w: _Worker, reason: str, **details: str) -> None:
        for sid in sorted(w.sessions):
            self.owner.pop(sid, None)
            self.on_ended(sid, pump.ABORTED, {"reason": reason, **details})
        w.sessions.clear()

    def stop(self, timeout: float) -> None:
        """Ask every worker to quit, collect the reports of the transfers they drop, and reap them."""
        deadline = time.monotonic() + timeout
        workers = list(self.workers.values())
        for w in workers:
            try:
                w.chan.send(tftp_proc.QUIT)
            except OSError:
                pass
        for w in workers:
            w.chan.setblocking(True)
            while True:
                w.chan.settimeout(max(0.0, deadline - time.monotonic()) or 0.001)
                try:
                    msg = w.chan.recv(tftp_proc.MAX_MSG)
                except OSError:  # includes the timeout: a stuck worker
                    msg = b""
                if not msg:
                    break
                self._report(w, msg)
            self._close(w)
            self._abort_all(w, "shutdown")  # anything it did not report
            try:
                w.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("TFTP worker %d did not stop; killing it", w.proc.pid)
                w.proc.kill()
                w.proc.wait()
