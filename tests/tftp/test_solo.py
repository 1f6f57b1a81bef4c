"""A transfer in a process of its own (tftp_solo.serve_alone), over real UDP sockets on loopback.

serve_alone blocks, so it runs in a thread here (in a forked child in the product: tests/tftp/test_proc.py);
the test is the client. It must follow the same rules as the Pump (tests/tftp/test_pump.py).
"""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time

import pytest
from helpers import CLIENT_PACKETS, TftpPeer, made_then_closed, tftp_packet_outcome

from provisioner.tftp import pump
from provisioner.tftp import solo

DATA = bytes(range(256)) * 8 + b"end"  # 2,051 bytes: 4 blocks of 512, then a short one


class Rig(TftpPeer):
    """serve_alone on a thread for one session whose client is a bare UDP socket (the test)."""

    def __init__(self, tmp_path, data=DATA, blksize=512, first=None, timeout=1.0, retries=2, start=True):
        super().__init__(tmp_path, data, blksize, timeout=5.0)
        self.underway: list[int] = []
        self.result: tuple[str, str, dict] | None = None
        self.args = (first, timeout, retries)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        if start:
            self.thread.start()

    def _serve(self) -> None:
        self.result = self.serve()

    def serve(self) -> tuple[str, str, dict]:
        first, timeout, retries = self.args
        return solo.serve_alone(self.session, first, timeout, retries, lambda s: self.underway.append(s.block))

    def ended(self, within: float = 10.0) -> tuple[str, str, dict]:
        self.thread.join(within)
        assert not self.thread.is_alive(), "serve_alone did not return"
        assert self.result is not None
        return self.result

    def close(self) -> None:
        if self.thread.is_alive():
            self.send(b"\x00\x05\x00\x00test over\x00")  # the client gives up: the transfer ends
            self.thread.join(15)
        self.session.close()
        self.client.close()


@pytest.fixture
def rigs():
    yield from made_then_closed(Rig)


def test_a_whole_transfer_block_by_block(tmp_path, rigs):
    rig = rigs(tmp_path)
    got = b""
    for block in range(1, 6):
        packet = rig.recv()
        assert packet[:4] == struct.pack("!HH", 3, block)
        got += packet[4:]
        rig.send(struct.pack("!HH", 4, block))
    kind, reason, details = rig.ended()
    assert got == DATA and (kind, reason) == (pump.SENT, "complete")
    assert (details["bytes"], details["blksize"], details["source"]) == (len(DATA), 512, "static")
    assert details["seconds"] >= 0 and details["reason"] == "complete"
    assert rig.underway == [2]  # once, when the client acknowledged DATA 1


@pytest.mark.parametrize("packet", CLIENT_PACKETS)
def test_each_packet_shape_is_handled_as_a_full_parse_says(tmp_path, rigs, packet):
    rig = rigs(tmp_path)
    assert rig.recv()[:4] == b"\x00\x03\x00\x01"
    rig.send(packet)
    expected = tftp_packet_outcome(packet, 1)
    if expected == "advance":
        assert rig.recv() == b"\x00\x03\x00\x02" + DATA[512:1024]
        assert rig.thread.is_alive()
    elif expected == "ignore":
        assert rig.nothing_sent() and rig.thread.is_alive()
        rig.send(b"\x00\x04\x00\x01")  # it still waits for ACK 1
        assert rig.recv()[:4] == b"\x00\x03\x00\x02"
    else:
        kind, reason, details = rig.ended()
        assert (kind, reason) == (pump.ABORTED, expected)
        if expected == "illegal_operation":
            assert rig.recv()[:4] == b"\x00\x05\x00\x04"  # error packet, code 4
            assert details["opcode"] == struct.unpack("!H", packet[:2])[0]
        else:
            assert rig.nothing_sent()  # never answer an error with an error


def test_an_error_longer_than_one_read_still_ends_the_transfer_with_its_message(tmp_path, rigs):
    rig = rigs(tmp_path)
    assert rig.recv()[:4] == b"\x00\x03\x00\x01"
    rig.send(b"\x00\x05\x00\x02" + b"disk full " * 100 + b"\x00")  # 1,005 bytes: read as its first 479
    kind, reason, details = rig.ended()
    assert (kind, reason) == (pump.ABORTED, "client_error")
    assert details["error"].startswith("2: disk full disk full") and len(details["error"]) <= solo._MAX_IN
    assert rig.nothing_sent()


def test_oack_first_then_block_one_on_ack_zero(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"small", first=b"\x00\x06tsize\x005\x00")
    assert rig.recv() == b"\x00\x06tsize\x005\x00"
    assert rig.underway == []
    rig.send(b"\x00\x04\x00\x00")
    assert rig.recv() == b"\x00\x03\x00\x01small"
    rig.send(b"\x00\x04\x00\x01")
    assert rig.ended()[:2] == (pump.SENT, "complete")
    assert rig.underway == [1]  # all the data was out: a repeated RRQ would be a new request


def test_a_one_block_file_is_under_way_at_once(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"tiny")
    assert rig.recv() == b"\x00\x03\x00\x01tiny"
    rig.send(b"\x00\x04\x00\x01")
    assert rig.ended()[2]["bytes"] == 4
    assert rig.underway == [1]


def test_exact_multiple_ends_with_an_empty_block(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"e" * 1024)
    for block in (1, 2):
        assert len(rig.recv()) == 4 + 512
        rig.send(struct.pack("!HH", 4, block))
    assert rig.recv() == b"\x00\x03\x00\x03"
    rig.send(b"\x00\x04\x00\x03")
    assert rig.ended()[2]["bytes"] == 1024


def _past_data_1(rig) -> bytes:
    """Acknowledge DATA 1 (the transfer is under way, full retries apply); DATA 2 as it came."""
    rig.recv()
    rig.send(b"\x00\x04\x00\x01")
    return rig.recv()


def test_timeouts_resend_with_doubling_then_give_up(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=0.1, retries=2)
    first = _past_data_1(rig)
    assert rig.recv() == first and rig.recv() == first  # two resends (after 0.1 s, then 0.2 s)
    kind, reason, details = rig.ended()
    assert (kind, reason, details["first_block"]) == (pump.ABORTED, "timeout", False)
    assert rig.session.wait == pytest.approx(0.4) and rig.session.tries == 2
    assert rig.nothing_sent()


def test_data_1_never_acknowledged_gets_one_resend_cycle_only(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=0.1, retries=5)
    first = rig.recv()
    assert rig.recv() == first  # FIRST_RETRIES = 1 resend, then the end
    kind, reason, details = rig.ended()
    assert (kind, reason, details["first_block"]) == (pump.ABORTED, "timeout", True)
    assert rig.session.tries == 1 and rig.nothing_sent()


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


def test_a_closed_client_port_ends_the_session(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=0.1)
    rig.recv()
    rig.client.close()  # the resend draws an ICMP port unreachable, then recv raises ECONNREFUSED
    assert rig.ended()[:2] == (pump.ABORTED, "client_gone")
    rig.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # for close()


def test_block_numbers_roll_over(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"r" * (8 * 65540), blksize=8)
    for block in range(1, 65541):
        assert rig.recv()[:4] == struct.pack("!HH", 3, block & 0xFFFF)
        rig.send(struct.pack("!HH", 4, block & 0xFFFF))
    assert rig.recv() == struct.pack("!HH", 3, 65541 & 0xFFFF)  # the empty last block
    rig.send(struct.pack("!HH", 4, 65541 & 0xFFFF))
    kind, _, details = rig.ended(60)
    assert kind == pump.SENT and details["bytes"] == 8 * 65540 and rig.session.block == 65541


def test_an_unexpected_error_costs_the_transfer(tmp_path, rigs, caplog):
    rig = rigs(tmp_path)
    rig.recv()
    rig.session.src.close()  # reading the next block now raises ValueError
    rig.send(b"\x00\x04\x00\x01")
    kind, reason, details = rig.ended()
    assert (kind, reason) == (pump.ABORTED, "internal_error") and "ValueError" in details["error"]
    assert "transfer of file" in caplog.text


@pytest.mark.parametrize("signum, last, expected", [
    (signal.SIGUSR1, False, (pump.ABORTED, "superseded")),
    (signal.SIGUSR1, True, (pump.SENT, "superseded")),  # all data was out: the client moved on satisfied
    (signal.SIGTERM, False, (pump.ABORTED, "shutdown")),
    (signal.SIGHUP, False, (pump.ABORTED, "worker_died")),
])
def test_a_stop_signal_ends_the_transfer_with_its_reason(tmp_path, signum, last, expected):
    """serve_alone runs on the main thread here (Python runs signal handlers there), the client on a thread."""
    rig = Rig(tmp_path, data=b"x" * (512 if last else 2000), start=False)
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

    rig = Rig(tmp_path, start=False)
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
