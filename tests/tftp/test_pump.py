"""The TFTP data path in process: a Pump over real UDP sockets on loopback.

The hot path recognises the ACK that moves a transfer on by comparing raw bytes; these tests hold every
packet shape a client can send against what tftpy's full parser makes of it.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time

import pytest

from helpers import CLIENT_PACKETS, TftpPeer, made_then_closed, tftp_packet_outcome

from provisioner.tftp import pump

DATA = bytes(range(256)) * 8 + b"end"  # 2,051 bytes: 4 blocks of 512, then a short one


class Rig(TftpPeer):
    """One Pump session whose client is a bare UDP socket; step() runs one turn of the loop."""

    def __init__(self, tmp_path, data=DATA, blksize=512, first=None, timeout=1.0, retries=2):
        super().__init__(tmp_path, data, blksize, timeout=2.0)
        self.ep = select.epoll()
        self.ended: list[tuple[str, str, dict]] = []
        self.underway: list[int] = []
        self.pump = pump.Pump(self.ep, timeout, retries,
                              lambda s, kind, reason, d: self.ended.append((kind, reason, d)),
                              lambda s: self.underway.append(s.block))
        self.pump.start(self.session, first)

    def step(self) -> None:
        events = self.ep.poll(2.0)
        assert events, "the session socket never became readable"
        self.pump.dispatch(events, time.monotonic())

    def close(self) -> None:
        self.pump.close_all("test over")
        self.ep.close()
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
        rig.step()
    assert got == DATA
    assert rig.ended == [(pump.SENT, "complete", rig.ended[0][2])]
    details = rig.ended[0][2]
    assert (details["bytes"], details["blksize"], details["source"]) == (len(DATA), 512, "static")
    assert details["seconds"] >= 0
    assert rig.underway == [2]  # once, when the client acknowledged DATA 1


@pytest.mark.parametrize("packet", CLIENT_PACKETS)
def test_each_packet_shape_is_handled_as_a_full_parse_says(tmp_path, rigs, packet):
    rig = rigs(tmp_path)
    assert rig.recv()[:4] == b"\x00\x03\x00\x01"
    rig.send(packet)
    rig.step()
    expected = tftp_packet_outcome(packet, 1)
    if expected == "advance":
        assert rig.recv() == b"\x00\x03\x00\x02" + DATA[512:1024]
        assert not rig.ended
    elif expected == "ignore":
        assert rig.nothing_sent() and not rig.ended
        assert rig.session.block == 1
    else:
        assert [e[1] for e in rig.ended] == [expected]
        if expected == "illegal_operation":
            assert rig.recv()[:4] == b"\x00\x05\x00\x04"  # error packet, code 4
            assert rig.ended[0][2]["opcode"] == struct.unpack("!H", packet[:2])[0]
        else:
            assert rig.nothing_sent()  # never answer an error with an error


def test_oack_first_then_block_one_on_ack_zero(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"small", first=b"\x00\x06tsize\x005\x00")
    assert rig.recv() == b"\x00\x06tsize\x005\x00"
    assert rig.underway == []
    rig.send(b"\x00\x04\x00\x00")
    rig.step()
    assert rig.recv() == b"\x00\x03\x00\x01small"
    assert rig.underway == [1]  # all the data is out: a repeated RRQ would be a new request
    rig.send(b"\x00\x04\x00\x01")
    rig.step()
    assert rig.ended[0][:2] == (pump.SENT, "complete")


def test_a_one_block_file_is_under_way_at_once(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"tiny")
    assert rig.recv() == b"\x00\x03\x00\x01tiny"
    assert rig.underway == [1]


def test_exact_multiple_ends_with_an_empty_block(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"e" * 1024)
    for block in (1, 2):
        assert len(rig.recv()) == 4 + 512
        rig.send(struct.pack("!HH", 4, block))
        rig.step()
    assert rig.recv() == b"\x00\x03\x00\x03"
    rig.send(b"\x00\x04\x00\x03")
    rig.step()
    assert rig.ended[0][2]["bytes"] == 1024


def _past_data_1(rig) -> bytes:
    """Acknowledge DATA 1 (the transfer is under way, full retries apply); DATA 2 as it came."""
    rig.recv()
    rig.send(b"\x00\x04\x00\x01")
    rig.step()
    return rig.recv()


def test_timeouts_resend_with_doubling_then_give_up(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=1.0, retries=2)
    first = _past_data_1(rig)
    now = rig.session.last
    rig.pump.check_timeouts(now + 0.5)  # not yet
    assert rig.nothing_sent()
    for wait in (2.0, 4.0):  # 1 s, then doubling (tftp-hpa's back-off)
        now += rig.session.wait + 0.1
        rig.pump.check_timeouts(now)
        assert rig.recv() == first and rig.session.wait == wait
    rig.pump.check_timeouts(now + 4.1)  # retries=2 spent
    assert [(e[1], e[2]["first_block"]) for e in rig.ended] == [("timeout", False)]
    assert rig.nothing_sent()


def test_data_1_never_acknowledged_gets_one_resend_cycle_only(tmp_path, rigs):
    """Issue 15 finding 2: a flood of RRQs never acknowledged must not hold sessions for the full retries."""
    rig = rigs(tmp_path, timeout=1.0, retries=5)
    first = rig.recv()
    now = rig.session.last + 1.1
    rig.pump.check_timeouts(now)
    assert rig.recv() == first  # FIRST_RETRIES = 1 resend
    rig.pump.check_timeouts(now + 2.1)
    assert [(e[1], e[2]["first_block"]) for e in rig.ended] == [("timeout", True)]
    assert rig.nothing_sent()


def test_the_resend_interval_stops_doubling_at_max_wait(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=1.0, retries=10)
    _past_data_1(rig)
    now = rig.session.last
    for _ in range(6):
        now += rig.session.wait + 0.1
        rig.pump.check_timeouts(now)
        rig.recv()
    assert rig.session.wait == pump.MAX_WAIT


def test_a_resend_that_gets_acked_resets_the_timer(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=1.0, retries=2)
    rig.recv()
    rig.pump.check_timeouts(rig.session.last + 1.1)
    rig.recv()
    assert rig.session.tries == 1
    rig.send(b"\x00\x04\x00\x01")
    rig.step()
    assert rig.recv()[:4] == b"\x00\x03\x00\x02"
    assert (rig.session.tries, rig.session.wait) == (0, 1.0)


def test_a_closed_client_port_ends_the_session(tmp_path, rigs):
    rig = rigs(tmp_path)
    rig.recv()
    rig.client.close()
    rig.pump.check_timeouts(rig.session.last + 1.1)  # the resend draws an ICMP port unreachable
    rig.step()
    assert [e[1] for e in rig.ended] == ["client_gone"]
    rig.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # for close()


def test_block_numbers_roll_over(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"r" * (8 * 65540), blksize=8)
    block = 1
    while block < 65535:  # the ACKs, sent in bursts, as fast as the pump takes them
        burst = min(200, 65535 - block)
        for _ in range(burst):
            rig.recv()
            rig.send(struct.pack("!HH", 4, block))
            rig.step()
            block += 1
    assert rig.recv()[:4] == b"\x00\x03\xff\xff"
    rig.send(b"\x00\x04\xff\xff")
    rig.step()
    assert rig.recv()[:4] == b"\x00\x03\x00\x00"  # block 65,536 goes out as 0
    rig.send(b"\x00\x04\x00\x00")
    rig.step()
    assert rig.recv()[:4] == b"\x00\x03\x00\x01" and rig.session.block == 65537


def test_an_unexpected_error_costs_one_transfer_not_the_pump(tmp_path, rigs, caplog):
    rig = rigs(tmp_path)
    other = rigs(tmp_path)
    rig.recv()
    other.recv()
    rig.session.src.close()  # reading the next block now raises ValueError
    rig.send(b"\x00\x04\x00\x01")
    with caplog.at_level(logging.ERROR, logger="provisioner.tftp.pump"):
        rig.step()
    assert [e[1] for e in rig.ended] == ["internal_error"]
    assert "ValueError" in rig.ended[0][2]["error"]
    assert "transfer of file" in caplog.text
    other.send(b"\x00\x04\x00\x01")
    other.step()
    assert other.recv()[:4] == b"\x00\x03\x00\x02"
