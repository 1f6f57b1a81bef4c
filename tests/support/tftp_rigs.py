"""The two TFTP data paths, each driven by a test that plays the client over a bare UDP socket on loopback.

- `PumpRig`: one session of a Pump (many sessions on one epoll loop, in process); the test turns the loop.
- `SoloRig`: serve_alone (one transfer with blocking calls; a process of its own in the product) on a thread.

Both have the same face for tests/tftp/test_transfer_contract.py: `deliver` a packet, `expire` the resend timer
once, `turn` (let the path act on what came in), `running`, `outcome` (kind, reason, details) and `underway`.
"""

from __future__ import annotations

import select
import threading
import time

from helpers import TftpPeer

from provisioner.tftp import pump, solo

DATA = bytes(range(256)) * 8 + b"end"  # 2,051 bytes: 4 blocks of 512, then a short one


class PumpRig(TftpPeer):
    """One Pump session whose client is a bare UDP socket; step() runs one turn of the loop, and the resend
    timer runs on the test's clock (check_timeouts with a chosen `now`)."""

    path = "pump"
    tick = 1.0  # the resend timeout the contract tests use: the pump's clock is the test's, so any will do

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

    def turn(self) -> None:
        self.step()

    def deliver(self, packet: bytes) -> None:
        self.send(packet)
        self.step()

    def expire(self) -> None:
        """The moment the resend timer runs out: resend, or give up."""
        self.pump.check_timeouts(self.session.last + self.session.wait + 0.1)

    def running(self) -> bool:
        return not self.ended

    def outcome(self, within: float = 0.0) -> tuple[str, str, dict]:
        """The one end reported (`within`: for the same face as SoloRig; the pump has acted already)."""
        assert len(self.ended) == 1, self.ended
        return self.ended[0]

    def close(self) -> None:
        self.pump.close_all("test over")
        self.ep.close()
        self.client.close()


class SoloRig(TftpPeer):
    """serve_alone on a thread for one session whose client is a bare UDP socket (the test); the resend timer
    runs on the real clock, so the contract tests give it a short timeout."""

    path = "solo"
    tick = 0.1

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

    def turn(self) -> None:
        """serve_alone acts by itself on its thread."""

    def deliver(self, packet: bytes) -> None:
        self.send(packet)

    def expire(self) -> None:
        """serve_alone's timer runs on the real clock: nothing to do but wait for what it sends."""

    def running(self) -> bool:
        return self.thread.is_alive()

    def outcome(self, within: float = 10.0) -> tuple[str, str, dict]:
        return self.ended(within)

    def close(self) -> None:
        if self.thread.is_alive():
            self.send(b"\x00\x05\x00\x00test over\x00")  # the client gives up: the transfer ends
            self.thread.join(15)
        self.session.close()
        self.client.close()
