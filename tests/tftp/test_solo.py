"""A transfer in a process of its own (solo.serve_alone), over real UDP sockets on loopback: what only it has
(blocking reads, its resend timer on the real clock, stop signals, the forked children's bookkeeping).

serve_alone blocks, so it runs in a thread here (in a forked child in the product: tests/tftp/test_proc.py);
the test is the client. The rules it shares with the Pump are in test_transfer_contract.py.
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time

import pytest
from helpers import made_then_closed
from tftp_rigs import SoloRig

from provisioner.tftp import pump
from provisioner.tftp import solo


@pytest.fixture
def rigs():
    yield from made_then_closed(SoloRig)


def _past_data_1(rig) -> bytes:
    """Acknowledge DATA 1 (the transfer is under way, full retries apply); DATA 2 as it came."""
    rig.recv()
    rig.send(b"\x00\x04\x00\x01")
    return rig.recv()


def test_an_error_longer_than_one_read_still_ends_the_transfer_with_its_message(tmp_path, rigs):
    rig = rigs(tmp_path)
    assert rig.recv()[:4] == b"\x00\x03\x00\x01"
    rig.send(b"\x00\x05\x00\x02" + b"disk full " * 100 + b"\x00")  # 1,005 bytes: read as its first 479
    kind, reason, details = rig.ended()
    assert (kind, reason) == (pump.ABORTED, "client_error")
    assert details["error"].startswith("2: disk full disk full") and len(details["error"]) <= solo._MAX_IN
    assert rig.nothing_sent()


def test_the_resend_interval_stops_doubling_at_max_wait(tmp_path, rigs, monkeypatch):
    monkeypatch.setattr(solo, "MAX_WAIT", 0.6)
    rig = rigs(tmp_path, timeout=0.1, retries=5)
    _past_data_1(rig)
    assert rig.ended()[1] == "timeout"
    assert rig.session.wait == pytest.approx(0.6)  # 0.1, 0.2, 0.4, then 0.6 and no more


def test_stray_packets_do_not_keep_a_stalled_transfer_alive(tmp_path, rigs):
    """A client that only repeats an old ACK is timed out like a silent one (its packets are not progress)."""
    rig = rigs(tmp_path, timeout=0.1, retries=1)
    rig.recv()
    deadline = time.monotonic() + 10
    while rig.thread.is_alive() and time.monotonic() < deadline:
        rig.send(b"\x00\x04\x00\x00")  # ACK 0, again and again
        time.sleep(0.01)
    assert rig.ended()[1] == "timeout"


def test_a_resend_that_gets_acked_resets_the_timer(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=0.2, retries=3)
    first = rig.recv()
    assert rig.recv() == first  # the resend
    rig.send(b"\x00\x04\x00\x01")
    assert rig.recv()[:4] == b"\x00\x03\x00\x02"
    time.sleep(0.05)
    assert (rig.session.tries, rig.session.wait) == (0, 0.2)
    for block in (2, 3, 4, 5):
        rig.send(struct.pack("!HH", 4, block))
        if block < 5:
            rig.recv()
    assert rig.ended()[:2] == (pump.SENT, "complete")


@pytest.mark.parametrize("signum, last, expected", [
    (signal.SIGUSR1, False, (pump.ABORTED, "superseded")),
    (signal.SIGUSR1, True, (pump.SENT, "superseded")),  # all data was out: the client moved on satisfied
    (signal.SIGTERM, False, (pump.ABORTED, "shutdown")),
    (signal.SIGHUP, False, (pump.ABORTED, "worker_died")),
])
def test_a_stop_signal_ends_the_transfer_with_its_reason(tmp_path, signum, last, expected):
    """serve_alone runs on the main thread here (Python runs signal handlers there), the client on a thread."""
    rig = SoloRig(tmp_path, data=b"x" * (512 if last else 2000), start=False)
    old = signal.signal(signum, solo._raise_stop)

    def client() -> None:
        rig.recv()
        if last:
            rig.send(b"\x00\x04\x00\x01")
            rig.recv()  # the empty last block
        signal.pthread_kill(threading.main_thread().ident, signum)

    helper = threading.Thread(target=client)
    helper.start()
    try:
        kind, reason, details = rig.serve()
    finally:
        helper.join(10)
        signal.signal(signum, old)
        rig.close()
    assert (kind, reason) == expected and details["reason"] == reason


def test_a_child_that_cannot_be_watched_is_killed_and_its_transfer_reported(tmp_path, monkeypatch):
    """pidfd_open can fail (out of descriptors): the child must not run unwatched."""
    import errno
    import os
    import select

    rig = SoloRig(tmp_path, start=False)
    ended = []
    chan_ours, chan_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    forks = solo.Forks(select.epoll(), chan_theirs.fileno(), 4, lambda *a: ended.append(a), lambda sid: None)

    def no_pidfd(pid):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    try:
        assert forks.start(rig.session, None, 1.0, 2) is True
        assert forks.children == {} and forks.pids == {}
        assert len(ended) == 1 and ended[0][1] == pump.ABORTED
        assert ended[0][2]["reason"] == "internal_error" and "pidfd_open" in ended[0][2]["error"]
        assert rig.session.sock.fileno() == -1  # the worker's copies are closed
    finally:
        forks.ep.close()
        chan_ours.close()
        chan_theirs.close()
        rig.client.close()
