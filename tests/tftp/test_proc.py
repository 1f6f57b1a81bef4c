"""A TFTP worker process (tftp_proc) over its real channel: the wire format, its loop, and the process it
forks for each big transfer (tftp_solo.Forks), with real UDP clients on loopback and real signals."""

from __future__ import annotations

import functools
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from helpers import made_then_closed, udp_pair

from provisioner.tftp import proc
from provisioner.tftp import pump
from provisioner.tftp.solo import MIN_SIZE
from provisioner.tftp.workers import worker_argv

BIG = bytes(range(256)) * (MIN_SIZE // 256) + b"tail"  # just over MIN_SIZE: a process of its own


@pytest.mark.parametrize("name", ["pxelinux.0", "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff", "caf\u00e9\udcff"])
def test_start_message_round_trip(name):
    msg = proc.encode_start(7, 1468, b"\x00\x06blksize\x001468\x00", "dynamic", name)
    assert msg[:1] == proc.START
    assert proc.decode_start(msg) == (7, 1468, b"\x00\x06blksize\x001468\x00", "dynamic", name)
    assert proc.decode_start(proc.encode_start(2**32 - 1, 8, b"", "static", name))[:3] == (2**32 - 1, 8, b"")


def test_ended_message_round_trip():
    details = {"reason": "complete", "bytes": 5, "blksize": 512, "seconds": 0.25, "error": "x\u00e9"}
    msg = proc.encode_ended(9, pump.SENT, details)
    assert msg[:1] == proc.ENDED
    assert proc.decode_ended(msg) == (9, pump.SENT, details)


class Worker:
    """worker_main in a child process, driven over its channel as tftp_workers drives it."""

    def __init__(self, tmp_path: Path, fork_limit: int = 4, timeout: float = 1.0, retries: int = 2):
        self.tmp_path = tmp_path
        self.chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(worker_argv(theirs.fileno(), timeout, retries, "WARNING", fork_limit),
                                     pass_fds=(theirs.fileno(),))
        theirs.close()
        self.chan.settimeout(20)
        assert self.chan.recv(100) == proc.READY
        self.clients: list[socket.socket] = []

    def start(self, sid: int, data: bytes, blksize: int = 1468) -> socket.socket:
        """Hand the worker a transfer of `data` to a fresh client; returns the client (DATA 1 is on its way)."""
        client, sock = udp_pair()
        self.clients.append(client)
        path = self.tmp_path / f"file{sid}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        socket.send_fds(self.chan, [proc.encode_start(sid, blksize, b"", "static", path.name)], [sock.fileno(), fd])
        sock.close()
        os.close(fd)
        return client

    def report(self) -> bytes:
        return self.chan.recv(proc.MAX_MSG)

    def ended(self) -> tuple[int, str, dict]:
        """The next ENDED report (UNDERWAY and LAST ones before it are skipped)."""
        while True:
            msg = self.report()
            assert msg, "the channel closed"
            if msg[:1] == proc.ENDED:
                return proc.decode_ended(msg)

    def children(self) -> list[int]:
        return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.chan.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def workers(tmp_path):
    yield from made_then_closed(functools.partial(Worker, tmp_path))


def fetch(client: socket.socket, blksize: int = 1468) -> bytes:
    """Acknowledge every DATA until the short one (resends of one already acknowledged are skipped)."""
    got, block = b"", 1
    while True:
        packet, peer = client.recvfrom(70000)
        if packet[:4] != struct.pack("!HH", 3, block & 0xFFFF):
            assert packet[:2] == b"\x00\x03", packet[:64]
            continue
        got += packet[4:]
        client.sendto(struct.pack("!HH", 4, block & 0xFFFF), peer)
        if len(packet) - 4 < blksize:
            return got
        block += 1


def first_data(client: socket.socket) -> tuple[str, int]:
    """Wait for DATA 1 (the transfer has started, in whichever process) and leave it to fetch(); returns
    the transfer's address. The DATA 1 is consumed: fetch() gets it again from the resend after 1 s."""
    packet, peer = client.recvfrom(70000)
    assert packet[:4] == b"\x00\x03\x00\x01"
    return peer


def wait_reaped(w: Worker) -> None:
    deadline = time.monotonic() + 10
    while w.children() and time.monotonic() < deadline:  # the worker reaps (its pidfd turned readable)
        time.sleep(0.02)
    assert w.children() == []


def test_a_small_file_is_moved_by_the_worker_loop(workers):
    w = workers(fork_limit=4)
    client = w.start(42, b"hello", blksize=512)
    data, peer = client.recvfrom(100)
    assert data == b"\x00\x03\x00\x01hello"
    assert w.report() == proc.ID_MSG.pack(proc.LAST, 42)  # all its data out: its place frees with the next ACK
    assert w.children() == []  # no process for a 5-byte file
    client.sendto(b"\x00\x04\x00\x01", peer)
    sid, kind, details = proc.decode_ended(w.report())
    assert (sid, kind, details["reason"], details["bytes"]) == (42, pump.SENT, "complete", 5)
    w.chan.send(proc.QUIT)
    assert w.proc.wait(10) == 0


def test_a_big_file_gets_a_process_of_its_own_which_reports_and_is_reaped(workers):
    w = workers(fork_limit=4)
    client = w.start(7, BIG)
    assert fetch(client) == BIG
    assert w.report() == proc.ID_MSG.pack(proc.UNDERWAY, 7)  # sent by the child, DATA 1 acknowledged
    assert w.report() == proc.ID_MSG.pack(proc.LAST, 7)  # and before its last DATA
    sid, kind, details = w.ended()
    assert (sid, kind, details["reason"], details["bytes"]) == (7, pump.SENT, "complete", len(BIG))
    wait_reaped(w)
    w.chan.send(proc.QUIT)
    assert w.proc.wait(10) == 0


def test_the_transfer_runs_in_the_child_not_the_worker(workers):
    w = workers(fork_limit=4)
    client = w.start(8, BIG)
    first_data(client)
    (child,) = w.children()
    inodes = {os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")}
    worker_fds = {os.readlink(f"/proc/{w.proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{w.proc.pid}/fd")}
    sockets = {i for i in inodes if i.startswith("socket:")}
    assert len(sockets) == 2  # its UDP socket and the channel, nothing of the worker's other transfers
    assert any(i.endswith("file8") for i in inodes) and not any(i.endswith("file8") for i in worker_fds)
    assert not any("eventpoll" in i for i in inodes)  # the worker's epoll was closed in the child
    assert os.sched_getscheduler(child) == os.SCHED_BATCH  # bulk work: it does not preempt on wake-up
    assert os.sched_getscheduler(w.proc.pid) == os.SCHED_OTHER  # the worker's loop (configs) keeps its latency
    assert fetch(client) == BIG and w.ended()[:2] == (8, pump.SENT)


def test_past_the_fork_limit_big_files_share_the_worker_loop(workers):
    w = workers(fork_limit=1)
    first, second = w.start(1, BIG), w.start(2, BIG)
    first_data(first)
    first_data(second)
    assert len(w.children()) == 1
    assert fetch(first) == BIG and fetch(second) == BIG
    assert {w.ended()[0], w.ended()[0]} == {1, 2}


def test_fork_limit_zero_forks_nothing(workers):
    w = workers(fork_limit=0)
    client = w.start(3, BIG)
    first_data(client)
    assert w.children() == []
    assert fetch(client) == BIG and w.ended()[:2] == (3, pump.SENT)


def test_supersede_reaches_the_transfer_process(workers):
    w = workers(fork_limit=4)
    client = w.start(5, BIG)
    first_data(client)
    w.chan.send(proc.ID_MSG.pack(proc.SUPERSEDE, 5))
    sid, kind, details = w.ended()
    assert (sid, kind, details["reason"]) == (5, pump.ABORTED, "superseded")
    wait_reaped(w)


def test_quit_ends_forked_transfers_as_shutdown_and_the_channel_closes_after_them(workers):
    w = workers(fork_limit=4)
    clients = [w.start(sid, BIG) for sid in (1, 2)]
    for client in clients:
        first_data(client)
    assert len(w.children()) == 2
    w.chan.send(proc.QUIT)
    ends = sorted(w.ended() for _ in clients)
    assert [(sid, kind, d["reason"]) for sid, kind, d in ends] == [(1, pump.ABORTED, "shutdown"),
                                                                   (2, pump.ABORTED, "shutdown")]
    assert w.report() == b""  # end of file: the worker and both children are gone
    assert w.proc.wait(10) == 0


def test_a_worker_killed_outright_takes_its_transfer_processes_with_it(workers):
    w = workers(fork_limit=4)
    client = w.start(9, BIG)
    first_data(client)
    (child,) = w.children()
    w.proc.kill()
    sid, kind, details = w.ended()  # the child's own report (PR_SET_PDEATHSIG), on the channel it shares
    assert (sid, kind, details["reason"]) == (9, pump.ABORTED, "worker_died")
    assert w.report() == b""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{child}").exists()  # no orphan left sending


def test_a_transfer_process_that_dies_is_reported_by_the_worker(workers):
    w = workers(fork_limit=4)
    client = w.start(4, BIG)
    first_data(client)
    (child,) = w.children()
    os.kill(child, signal.SIGKILL)
    sid, kind, details = w.ended()
    assert (sid, kind, details["reason"]) == (4, pump.ABORTED, "internal_error")
    assert "exit status -9" in details["error"]
    wait_reaped(w)
    small = w.start(6, b"still serving", blksize=512)
    assert fetch(small, blksize=512) == b"still serving"
