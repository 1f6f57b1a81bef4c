"""Simulated clock with a speed factor, so every XAPI delay keeps its real proportion but runs faster."""

from __future__ import annotations

import threading
import time


class Clock:
    """Sim time = start + real elapsed * speed. All simulator delays are given in sim seconds."""

    def __init__(self, speed: float = 60.0, start: float | None = None):
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = float(speed)
        self._real0 = time.monotonic()
        self._sim0 = time.time() if start is None else float(start)

    def now(self) -> float:
        """Current sim time, as a Unix timestamp (used for boot_time and task timestamps)."""
        return self._sim0 + (time.monotonic() - self._real0) * self.speed

    def real(self, sim_seconds: float) -> float:
        """Real seconds that `sim_seconds` of sim time take."""
        return max(0.0, sim_seconds) / self.speed

    def sim(self, real_seconds: float) -> float:
        """Sim seconds that `real_seconds` of real time represent."""
        return max(0.0, real_seconds) * self.speed

    def sleep(self, sim_seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep `sim_seconds` of sim time; returns False early if `stop` is set."""
        if stop is None:
            time.sleep(self.real(sim_seconds))
            return True
        return not stop.wait(self.real(sim_seconds))

    def wait(self, cond: threading.Condition, sim_seconds: float) -> bool:
        """cond.wait for `sim_seconds` of sim time (the caller holds cond)."""
        return cond.wait(self.real(sim_seconds))
