"""Ports below 1024 that a test hands to a subprocess, which binds them itself (tests/test_deploy.py): a free pair
is reserved by an flock on one lock file per port, held until the test is done. Port 0 cannot be used there (the
point is a privileged port), and a bind-then-close check alone races: two pytest-xdist workers, or another pytest
run on the machine, could check the same free pair before either subprocess binds it. The kernel drops the lock
when its holder exits, so a killed run leaves nothing reserved."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCK_DIR = Path(tempfile.gettempdir()) / "provisioner-test-ports"  # machine-wide on purpose: that is the resource


def _bindable(udp_port: int, tcp_port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", udp_port))
            t.bind(("127.0.0.1", tcp_port))
        return True
    except OSError:
        return False


@contextlib.contextmanager
def privileged_port_pair() -> Iterator[tuple[int, int]]:
    """A (udp, tcp) = (p, p + 1) pair below 1024, free on loopback and reserved for the with-block."""
    LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    start = random.randrange(600, 1000, 2)  # spread the first tries: fewer lock files tried by concurrent runs
    for port in [*range(start, 1022, 2), *range(600, start, 2)]:
        fd = os.open(LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            if _bindable(port, port + 1):
                yield port, port + 1
                return
        finally:
            os.close(fd)  # releases the flock
    pytest.skip("no free privileged port pair on loopback")
