"""The TFTP worker pool with real worker processes, real socketpairs and real UDP clients on loopback."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import made_then_closed, udp_pair

from provisioner.tftp import pump
from provisioner.tftp.files import sealed_memfd
from provisioner.tftp.workers import WorkerLost, WorkerPool


class Pool:
    """A WorkerPool driven the way tftp.py drives it: its channels in an epoll, reports collected."""

    def __init__(self, count=2, log_level="WARNING", **kwargs):
        self.ended: dict[int, tuple[str, dict]] = {}
        self.underway: list[tuple[int, bool]] = []  # (session id, all its data out)
        self.ep = select.epoll()
        self.pool = WorkerPool(count, 0.5, 2, log_level, lambda sid, kind, d: self.ended.__setitem__(sid, (kind, d)),
                               lambda sid, last: self.underway.append((sid, last)), **kwargs)
        self.clients: list[socket.socket] = []

    def turn(self, until, timeout=15.0) -> None:
        """Feed the pool its channel events until `until()` holds."""
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "timed out waiting for the workers"
            for fd, _ in self.ep.poll(0.1):
                if fd in self.pool:
                    self.pool.on_ready(fd)

    def transfer(self, sid: int, tmp_path, data: bytes = b"x" * 1200, name: str = "f") -> socket.socket:
        """Open a session for a fresh client and hand it off; returns the client."""
        client, sock = udp_pair()
        self.clients.append(client)
        (tmp_path / name).write_bytes(data)
        fd = os.open(tmp_path / name, os.O_RDONLY)
        try:
            self.pool.hand_off(sid, [sock.fileno(), fd], 512, b"", "static", name)
        finally:
            sock.close()
            os.close(fd)
        return client

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.pool.workers.values()]

    def close(self) -> None:
        self.pool.stop(5.0)
        self.ep.close()
        for c in self.clients:
            c.close()


@pytest.fixture
def pools():
    def started(**kwargs) -> Pool:
        p = Pool(**kwargs)
        p.pool.start(p.ep)
        return p

    yield from made_then_closed(started)


def test_workers_start_serve_and_report(pools, tmp_path):
    p = pools(count=2)
    assert len(p.pool.workers) == 2 and len(set(p.pids())) == 2
    clients = [p.transfer(sid, tmp_path, bytes([sid]) * 1200, f"f{sid}") for sid in (1, 2, 3, 4)]
    assert sorted(len(w.sessions) for w in p.pool.workers.values()) == [2, 2]  # the least busy takes each
    for sid, client in zip((1, 2, 3, 4), clients):
        got = b""
        for block in (1, 2, 3):
            data, peer = client.recvfrom(1000)
            assert data[:4] == struct.pack("!HH", 3, block)
            got += data[4:]
            client.sendto(struct.pack("!HH", 4, block), peer)
        assert got == bytes([sid]) * 1200
    p.turn(lambda: len(p.ended) == 4)
    assert {sid: (kind, d["reason"], d["bytes"]) for sid, (kind, d) in p.ended.items()} == {
        sid: (pump.SENT, "complete", 1200) for sid in (1, 2, 3, 4)}
    # each: under way when DATA 1 was acknowledged, then all its data out just before DATA 3 (the last) left
    assert sorted(p.underway) == [(sid, last) for sid in (1, 2, 3, 4) for last in (False, True)]
    assert not p.pool.owner and all(not w.sessions for w in p.pool.workers.values())


def test_supersede_ends_the_old_transfer(pools, tmp_path):
    p = pools(count=1)
    client = p.transfer(7, tmp_path)
    client.recvfrom(1000)
    p.pool.supersede(7)
    p.turn(lambda: 7 in p.ended)
    assert p.ended[7][0] == pump.ABORTED and p.ended[7][1]["reason"] == "superseded"
    p.pool.supersede(12345)  # unknown or already ended: nothing happens
    p.pool.supersede(7)


def test_stop_reports_the_transfers_it_drops_and_reaps_the_workers(tmp_path):
    p = Pool(count=2)
    p.pool.start(p.ep)
    procs = [w.proc for w in p.pool.workers.values()]
    client = p.transfer(1, tmp_path)
    client.recvfrom(1000)  # under way, never acknowledged
    p.close()
    assert p.ended[1][0] == pump.ABORTED and p.ended[1][1]["reason"] == "shutdown"
    assert all(proc.returncode == 0 for proc in procs)
    assert not p.pool.workers


def test_a_dead_worker_is_replaced_and_its_transfers_reported(pools, tmp_path):
    p = pools(count=2, respawn_after=0.0)
    client = p.transfer(1, tmp_path)
    client.recvfrom(1000)
    victim = p.pool.owner[1].proc
    survivor = next(pid for pid in p.pids() if pid != victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    p.turn(lambda: 1 in p.ended and len(p.pool.workers) == 2)
    kind, details = p.ended[1]
    assert (kind, details["reason"]) == (pump.ABORTED, "worker_died")
    assert str(-signal.SIGKILL) in details["error"]
    assert survivor in p.pids() and victim.pid not in p.pids() and victim.returncode is not None
    client2 = p.transfer(2, tmp_path, b"again")  # the new worker serves
    assert client2.recvfrom(1000)[0] == b"\x00\x03\x00\x01again"


def test_a_worker_dying_young_is_not_replaced_and_none_left_means_worker_lost(pools, tmp_path):
    p = pools(count=2, respawn_after=3600.0)  # as if they had all crashed at once right after starting
    for pid in p.pids():
        os.kill(pid, signal.SIGKILL)
    p.turn(lambda: not p.pool.workers)
    with pytest.raises(WorkerLost, match="no TFTP worker"):
        p.transfer(1, tmp_path)
    assert 1 not in p.pool.owner


def test_a_worker_that_cannot_start_fails_start_clearly():
    p = Pool(count=1, log_level="NOT-A-LEVEL")  # logging.basicConfig raises in the child before READY
    with pytest.raises(OSError, match="did not start"):
        p.pool.start(p.ep)
    assert not p.pool.workers
    p.ep.close()


def test_at_least_one_worker():
    with pytest.raises(ValueError, match="at least one"):
        WorkerPool(0, 1.0, 1, "WARNING", lambda *a: None, lambda sid: None)


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    with subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True) as parent:
        try:
            pids = [int(pid) for pid in parent.stdout.readline().split()]
            assert len(pids) == 2
        finally:
            parent.kill()  # SIGKILL: no stop(), the kernel closes its ends of the channels
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their parent"
        time.sleep(0.05)


PARENT = """
import select, sys, time
from provisioner.tftp.workers import WorkerPool
pool = WorkerPool(2, 1.0, 1, "WARNING", lambda *a: None, lambda sid: None)
pool.start(select.epoll())
print(*[w.proc.pid for w in pool.workers.values()], flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sealed_memfd_holds_the_bytes_and_refuses_changes():
    data = b"DEFAULT local\n" * 1000
    fd = sealed_memfd(data)
    try:
        assert os.read(fd, len(data) + 10) == data  # positioned at the start
        assert os.fstat(fd).st_size == len(data)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"installer", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SEAL
    finally:
        os.close(fd)
    empty = sealed_memfd(b"")
    assert os.read(empty, 10) == b""
    os.close(empty)
