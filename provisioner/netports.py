"""Loopback ports chosen before a server binds them (the demo's serve, the simulator's Redfish emulator).

A port taken with bind(("127.0.0.1", 0)) and released is in the kernel's ephemeral range (Linux default
32768-60999, /proc/sys/net/ipv4/ip_local_port_range), from which every client socket also gets its port: between
the choice and the server's bind, a TFTP transfer or an HTTP request of another process can take it (seen with
several test workers). Ports below that range are never given to client sockets, so they are drawn from there.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOW_PORTS = (10000, 32000)
_RANDOM = random.SystemRandom()  # not the seedable module state: two processes seeded alike would pick alike


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port of `kind` free on `host` now, below the ephemeral range when there is room there; else the kernel's."""
    top = min(LOW_PORTS[1], _ephemeral_low())
    for _ in range(50) if top > LOW_PORTS[0] else ():
        port = _RANDOM.randrange(LOW_PORTS[0], top)
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
