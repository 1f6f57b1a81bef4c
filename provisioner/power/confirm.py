"""The one power-state confirm loop Redfish and IPMI share (docs/power.md "The confirm loop").

BMCs report "off" while the machine is still going down and silently drop a power-on sent then; the remedy is to
ask, poll, resend and give up (defaults: poll every 5 s, resend every 30 s, give up at 300 s). A power-on is sent
only once "off" has been read at two polls `poll` seconds apart (a stable off), never on the first "off" reading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

from ..config import Config
from .base import BootControl, PowerError, PowerState


@dataclass(frozen=True)
class ConfirmTimes:
    """Seconds: poll the BMC, resend the request, give up (docs/power.md "The confirm loop")."""

    poll: float = 5.0
    resend: float = 30.0
    give_up: float = 300.0

    @classmethod
    def from_config(cls, config: Config) -> "ConfirmTimes":
        return cls(poll=config.bmc_poll_seconds, resend=config.bmc_resend_seconds,
                   give_up=config.bmc_give_up_seconds)


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Monotonic time and real sleeps (tests pass a clock of their own)."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


Progress = Callable[[str], None]


def confirm_power(control: BootControl, want: PowerState, send: Callable[[], None], times: ConfirmTimes,
                  clock: Clock | None = None, progress: Progress | None = None) -> int:
    """Bring `control` to `want` with `send` (a power-on or a power-off) and return how many times it was sent.

    Poll every `times.poll`; send when the state is not `want` and nothing was sent yet or the last send is
    `times.resend` old; for "on", send only on a stable off (read "off" at two polls `poll` apart). Raise
    PowerError after `times.give_up` seconds without reading `want`."""
    clock = clock or SystemClock()
    start = clock.now()
    sent_at: float | None = None
    off_since: float | None = None
    sent = 0
    while True:
        state = control.power_state()
        now = clock.now()
        if state == want:
            return sent
        off_since = (off_since if off_since is not None else now) if state == "off" else None
        stable = want == "off" or (off_since is not None and now - off_since >= times.poll)
        due = sent_at is None or now - sent_at >= times.resend
        if stable and due and now - start < times.give_up:
            send()
            sent, sent_at = sent + 1, now
            if progress:
                progress(f"{control.name}: power {want} requested" + (f" (again, {sent})" if sent > 1 else ""))
        elif progress and sent_at is not None:
            progress(f"{control.name}: waiting for power {want} ({now - start:.0f}s of {times.give_up:.0f}s)")
        if now - start >= times.give_up:
            raise PowerError(control.name, f"still {state} after {times.give_up:.0f}s: power {want} was "
                                           f"requested {sent} time(s) and never confirmed")
        clock.sleep(times.poll)
