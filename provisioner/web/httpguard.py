"""What one client address may hold and send over HTTP (issue 15): the limits, the body-gate verdicts, and the
per-address connection count that every event loop of one server shares. Standard library only; the waitress
adapter that enforces them is provisioner.web.server, the gate's rules are provisioner.web.gate."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Union

log = logging.getLogger("provisioner.web.server")

# What a body gate answers for a request that carries a body: None admits it, DROP_BODY lets the app answer
# without it (then closes the connection), (status, message) answers that at once without reading it.
DROP_BODY = "drop"
Verdict = Union[None, str, tuple[int, str]]
# gate(method, path, headers as waitress parses them (AUTHORIZATION, COOKIE, ...), length or None if chunked)
BodyGate = Callable[[str, str, Mapping[str, str], "int | None"], Verdict]


@dataclass
class Limits:
    """What one address may hold and send (config: http_max_connections_per_client, http_header_timeout,
    http_max_body_bytes; the gate from web/gate.py)."""

    max_per_client: int = 64  # connections at once, across every loop; more are closed at accept
    header_timeout: float = 10.0  # seconds to send a request's complete headers
    max_body: int = 64 << 20  # bytes of an admitted request body; more is a 413 before any is read
    gate: BodyGate | None = None  # None admits every body up to max_body


class Guard:
    """State shared by every loop of one server: connections per address, the limits, refusal counts."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._warned: dict[str, float] = {}
        self.refused_connections = 0
        self.timed_out = 0

    def admit(self, address: str) -> bool:
        with self._lock:
            count = self._open.get(address, 0)
            if count >= self.limits.max_per_client:
                self.refused_connections += 1
                now = time.monotonic()
                warn = now - self._warned.get(address, -1e9) > 60
                if warn:
                    if len(self._warned) > 4096:  # many addresses: forget the ones warned about long ago
                        self._warned = {a: t for a, t in self._warned.items() if now - t <= 60}
                    self._warned[address] = now
            else:
                self._open[address] = count + 1
                return True
        if warn:  # once a minute per address: a flood must not flood the log too
            log.warning("HTTP: %s holds %d connections (http_max_connections_per_client); refusing more",
                        address, count)
        return False

    def release(self, address: str) -> None:
        with self._lock:
            left = self._open.get(address, 0) - 1
            if left > 0:
                self._open[address] = left
            else:
                self._open.pop(address, None)

    def open_connections(self, address: str) -> int:
        with self._lock:
            return self._open.get(address, 0)
