"""netports.free_port: a number handed out is reserved against other processes until its holder exits, and never
handed out twice by one process (provisioner/netports.py)."""

from __future__ import annotations

import socket
import subprocess
import sys

from provisioner import netports

HOLDER = """
import socket, sys
from provisioner import netports
print(*[netports.free_port(socket.SOCK_STREAM) for _ in range(40)], flush=True)
sys.stdin.readline()
"""


def _draw_from(monkeypatch, numbers):
    """Make the random draws return `numbers` in turn (then the last one again)."""
    numbers = list(numbers)
    monkeypatch.setattr(netports._RANDOM, "randrange",
                        lambda lo, hi: numbers.pop(0) if len(numbers) > 1 else numbers[0])


def test_a_port_another_process_holds_is_not_handed_out(monkeypatch):
    with subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as holder:
        held = [int(p) for p in holder.stdout.readline().split()]
        assert len(held) == 40
        # every held port is free to bind (the holder bound none), so only the reservation can refuse them
        assert all(_bindable(p) for p in held)
        spares = [p for p in range(20000, 21000) if p not in held]
        _draw_from(monkeypatch, [*held, *spares])
        assert netports.free_port(socket.SOCK_STREAM) in spares
        # the same numbers as UDP ports: the holder reserved TCP ones only
        _draw_from(monkeypatch, held)
        assert netports.free_port(socket.SOCK_DGRAM) in held
        holder.stdin.close()
        holder.wait(timeout=10)
    # the holder exited: the kernel dropped its locks, so its numbers can be drawn again
    _draw_from(monkeypatch, held)
    assert netports.free_port(socket.SOCK_STREAM) in held


def test_one_process_never_hands_a_port_out_twice(monkeypatch):
    first = netports.free_port(socket.SOCK_DGRAM)
    assert _bindable(first, socket.SOCK_DGRAM)  # nobody bound it, but it was given to this process already
    others = [p for p in range(21000, 22000) if p != first]
    _draw_from(monkeypatch, [first, *others])
    assert netports.free_port(socket.SOCK_DGRAM) in others


def _bindable(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
