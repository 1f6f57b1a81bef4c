"""The transfer rules both TFTP data paths follow, held against each: the Pump (many sessions on one epoll loop,
in process) and serve_alone (one transfer with blocking calls, in a process of its own; on a thread here).

What only one path has (the pump's shared loop, serve_alone's signals and reads) stays in test_pump.py and
test_solo.py. The rigs are in tests/support/tftp_rigs.py.
"""

from __future__ import annotations

import logging
import socket
import struct

import pytest
from helpers import CLIENT_PACKETS, made_then_closed, tftp_packet_outcome
from tftp_rigs import DATA, PumpRig, SoloRig

from provisioner.tftp.pump import ABORTED, SENT


@pytest.fixture(params=[PumpRig, SoloRig], ids=lambda rig: rig.path)
def path(request):
    """The data path under test (its rig class); `path.tick` is the resend timeout its timer tests use."""
    return request.param


@pytest.fixture
def rigs(path):
    yield from made_then_closed(path)


def test_a_whole_transfer_block_by_block(tmp_path, rigs):
    rig = rigs(tmp_path)
    got = b""
    for block in range(1, 6):
        packet = rig.recv()
        assert packet[:4] == struct.pack("!HH", 3, block)
        if block == 5:  # told before the last DATA left: the client's ACK frees the session's place (issue 17)
            assert rig.underway == [2, 5]
        got += packet[4:]
        rig.deliver(struct.pack("!HH", 4, block))
    kind, reason, details = rig.outcome()
    assert got == DATA and (kind, reason) == (SENT, "complete")
    assert (details["bytes"], details["blksize"], details["source"]) == (len(DATA), 512, "static")
    assert details["seconds"] >= 0 and details["reason"] == "complete"
    assert rig.underway == [2, 5]  # when the client acknowledged DATA 1, and when all the data was going out


@pytest.mark.parametrize("packet", CLIENT_PACKETS)
def test_each_packet_shape_is_handled_as_a_full_parse_says(tmp_path, rigs, packet):
    rig = rigs(tmp_path)
    assert rig.recv()[:4] == b"\x00\x03\x00\x01"
    rig.deliver(packet)
    expected = tftp_packet_outcome(packet, 1)
    if expected == "advance":
        assert rig.recv() == b"\x00\x03\x00\x02" + DATA[512:1024]
        assert rig.running()
    elif expected == "ignore":
        assert rig.nothing_sent() and rig.running()
        assert rig.session.block == 1
        rig.deliver(b"\x00\x04\x00\x01")  # it still waits for ACK 1
        assert rig.recv()[:4] == b"\x00\x03\x00\x02"
    else:
        kind, reason, details = rig.outcome()
        assert (kind, reason) == (ABORTED, expected)
        if expected == "illegal_operation":
            assert rig.recv()[:4] == b"\x00\x05\x00\x04"  # error packet, code 4
            assert details["opcode"] == struct.unpack("!H", packet[:2])[0]
        else:
            assert rig.nothing_sent()  # never answer an error with an error


def test_oack_first_then_block_one_on_ack_zero(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"small", first=b"\x00\x06tsize\x005\x00")
    assert rig.recv() == b"\x00\x06tsize\x005\x00"
    assert rig.underway == []
    rig.deliver(b"\x00\x04\x00\x00")
    assert rig.recv() == b"\x00\x03\x00\x01small"
    assert rig.underway == [1]  # told before the last (here the only) DATA left, on either path
    rig.deliver(b"\x00\x04\x00\x01")
    assert rig.outcome()[:2] == (SENT, "complete")
    assert rig.underway == [1]  # all the data was out: a repeated RRQ would be a new request


def test_a_one_block_file_is_under_way_at_once(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"tiny")
    assert rig.recv() == b"\x00\x03\x00\x01tiny"
    assert rig.underway == [1]  # told before the only DATA left, on either path
    rig.deliver(b"\x00\x04\x00\x01")
    assert rig.outcome()[2]["bytes"] == 4
    assert rig.underway == [1]


def test_exact_multiple_ends_with_an_empty_block(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"e" * 1024)
    for block in (1, 2):
        assert len(rig.recv()) == 4 + 512
        rig.deliver(struct.pack("!HH", 4, block))
    assert rig.recv() == b"\x00\x03\x00\x03"
    rig.deliver(b"\x00\x04\x00\x03")
    assert rig.outcome()[2]["bytes"] == 1024


def _past_data_1(rig) -> bytes:
    """Acknowledge DATA 1 (the transfer is under way, full retries apply); DATA 2 as it came."""
    rig.recv()
    rig.deliver(b"\x00\x04\x00\x01")
    return rig.recv()


def test_timeouts_resend_with_doubling_then_give_up(tmp_path, rigs, path):
    rig = rigs(tmp_path, timeout=path.tick, retries=2)
    first = _past_data_1(rig)
    for wait in (2 * path.tick, 4 * path.tick):  # `timeout`, then doubling (tftp-hpa's back-off)
        rig.expire()
        assert rig.recv() == first and rig.session.wait == pytest.approx(wait)
    rig.expire()  # retries=2 spent
    kind, reason, details = rig.outcome()
    assert (kind, reason, details["first_block"]) == (ABORTED, "timeout", False)
    assert rig.session.wait == pytest.approx(4 * path.tick) and rig.session.tries == 2
    assert rig.nothing_sent()


def test_data_1_never_acknowledged_gets_one_resend_cycle_only(tmp_path, rigs, path):
    """Issue 15 finding 2: a flood of RRQs never acknowledged must not hold sessions for the full retries."""
    rig = rigs(tmp_path, timeout=path.tick, retries=5)
    first = rig.recv()
    rig.expire()
    assert rig.recv() == first  # FIRST_RETRIES = 1 resend, then the end
    rig.expire()
    kind, reason, details = rig.outcome()
    assert (kind, reason, details["first_block"]) == (ABORTED, "timeout", True)
    assert rig.session.tries == 1 and rig.nothing_sent()


def test_a_closed_client_port_ends_the_session(tmp_path, rigs, path):
    rig = rigs(tmp_path, timeout=path.tick)
    rig.recv()
    rig.client.close()
    rig.expire()  # the resend draws an ICMP port unreachable, then the next read raises ECONNREFUSED
    rig.turn()
    assert rig.outcome()[:2] == (ABORTED, "client_gone")
    rig.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # for close()


def test_block_numbers_roll_over(tmp_path, rigs):
    rig = rigs(tmp_path, data=b"r" * (8 * 65540), blksize=8)
    for block in range(1, 65541):  # block 65,536 goes out as 0
        assert rig.recv()[:4] == struct.pack("!HH", 3, block & 0xFFFF)
        rig.deliver(struct.pack("!HH", 4, block & 0xFFFF))
    assert rig.recv() == struct.pack("!HH", 3, 65541 & 0xFFFF)  # the empty last block
    rig.deliver(struct.pack("!HH", 4, 65541 & 0xFFFF))
    kind, _, details = rig.outcome(60)
    assert kind == SENT and details["bytes"] == 8 * 65540 and rig.session.block == 65541


def test_an_unexpected_error_costs_the_transfer(tmp_path, rigs, caplog):
    rig = rigs(tmp_path)
    rig.recv()
    rig.session.src.close()  # reading the next block now raises ValueError
    with caplog.at_level(logging.ERROR, logger="provisioner.tftp"):
        rig.deliver(b"\x00\x04\x00\x01")
        kind, reason, details = rig.outcome()
    assert (kind, reason) == (ABORTED, "internal_error") and "ValueError" in details["error"]
    assert "transfer of file" in caplog.text
