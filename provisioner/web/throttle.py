"""Failed authentications per client address: after `limit` in `window` seconds, that address is refused (429)
until its oldest failure leaves the window. One throttle per app, shared by the dashboard login and the REST
API's bearer check, since both guess the same API token (the app's one: access.get_throttle()).

Keyed by the TCP peer address (no proxy headers are trusted), so clients behind one NAT or proxy share a
budget. Memory is bounded: at most `max_keys` addresses are remembered (the stalest are forgotten first).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

log = logging.getLogger(__name__)

LIMIT, WINDOW = 10, 300.0  # 10 failed tries per 5 minutes per address: a typo is fine, guessing is not


class Throttle:
    """Thread-safe (the WSGI server runs requests on several threads)."""

    def __init__(self, limit: int = LIMIT, window: float = WINDOW, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000):
        if limit < 1 or window <= 0:
            raise ValueError("the throttle needs limit >= 1 and window > 0")
        self.limit, self.window, self.clock, self.max_keys = limit, window, clock, max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0.0: it may now)."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None or len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - now)

    def failed(self, key: str) -> bool:
        """Count a failure; True when it is the one that locks `key` out (log it and make an event once)."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= self.max_keys:
                    self._forget_stale(now)
                times = self._failures[key] = deque()
            locked = len(times) == self.limit - 1  # this failure reaches the limit (only this one says so)
            times.append(now)
            if len(times) > self.limit:
                times.popleft()
        if locked:
            log.warning("%d failed authentications from %s within %.0f s: refused until the window passes",
                        self.limit, key, self.window)
        return locked

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _forget_stale(self, now: float) -> None:
        for key in [k for k, t in self._failures.items() if t[-1] <= now - self.window]:
            del self._failures[key]
        while len(self._failures) >= self.max_keys:  # still full: drop the least recently added
            del self._failures[next(iter(self._failures))]

