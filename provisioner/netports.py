"""Loopback ports chosen before a server binds them (the demo's serve, the simulator's XAPI and Redfish emulator).

A port taken with bind(("127.0.0.1", 0)) and released is in the kernel's ephemeral range (Linux default
32768-60999, /proc/sys/net/ipv4/ip_local_port_range), from which every client socket also gets its port: between
the choice and the server's bind, a TFTP transfer or an HTTP request of another process can take it (seen with
several test workers). Ports below that range are never given to client sockets, so they are drawn from there.

A bind-then-close check alone still races with another process drawing from the same range: it can check and bind
the number this process chose and has not bound yet (a test lab's HTTP port, chosen before its media are imported,
was taken by another test worker's simulated host). So each port handed out is also reserved for the life of the
process by a POSIX record lock on one byte of a machine-wide lock file (fcntl(2) F_SETLK: the kernel drops it when
the process exits, however it exits); other processes skip a locked number, and this one never hands a number out
twice. Where the lock file cannot be opened (another user's, a read-only /tmp), the bind check alone is left.
"""

from __future__ import annotations

import fcntl
import functools
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

LOW_PORTS = (10000, 32000)
LOCK_FILE = Path(tempfile.gettempdir()) / "provisioner-ports.lock"  # machine-wide on purpose: ports are shared
_RANDOM = random.SystemRandom()  # not the seedable module state: two processes seeded alike would pick alike
_given: set[tuple[int, int]] = set()  # (kind, port) handed out by this process: a record lock does not stop its owner
_guard = threading.Lock()


@functools.cache  # read once: free_port is called for every server a test starts
def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@functools.cache  # one descriptor for the process: closing any descriptor of the file drops all its locks
def _lock_file() -> int | None:
    try:
        return os.open(LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:
        return None


def _reserve(kind: int, port: int) -> bool:
    """Lock the byte of (kind, port) for this process; False when another process holds it. Called under _guard."""
    if (kind, port) in _given:
        return False
    fd = _lock_file()
    if fd is not None:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 2 * port + (kind == socket.SOCK_DGRAM))
        except OSError:
            return False
    _given.add((kind, port))
    return True


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port of `kind` free on `host` now and reserved against other processes' free_port, below the ephemeral
    range when there is room there; else the kernel's."""
    top = min(LOW_PORTS[1], _ephemeral_low())
    for _ in range(50) if top > LOW_PORTS[0] else ():
        port = _RANDOM.randrange(LOW_PORTS[0], top)
        with _guard:
            if not _reserve(kind, port):
                continue
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue  # reserved all the same: it is in use, not worth trying again
            return port
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
