"""The TFTP data path in process: a Pump over real UDP sockets on loopback, what only it has (its resend timer on
the caller's clock, sessions sharing one loop). The transfer rules it shares with serve_alone, every packet shape
a client can send among them, are in test_transfer_contract.py.
"""

from __future__ import annotations

import logging

import pytest
from helpers import made_then_closed
from tftp_rigs import PumpRig

from provisioner.tftp import pump


@pytest.fixture
def rigs():
    yield from made_then_closed(PumpRig)


def _past_data_1(rig) -> bytes:
    """Acknowledge DATA 1 (the transfer is under way, full retries apply); DATA 2 as it came."""
    rig.recv()
    rig.send(b"\x00\x04\x00\x01")
    rig.step()
    return rig.recv()


def test_no_resend_before_the_timeout(tmp_path, rigs):
    rig = rigs(tmp_path, timeout=1.0, retries=2)
    _past_data_1(rig)
    rig.pump.check_timeouts(rig.session.last + 0.5)  # not yet
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
