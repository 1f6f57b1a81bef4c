"""The per-MAC boot-config storm of bench/tftp_bench.py: N clients at once ask a TFTP server for
pxelinux.cfg/01-<mac> names, the way pxelinux does (RRQ with tsize and blksize, ACK 0 after the OACK, ACK of
the last block), each from a fresh UDP socket bound to a source address, until `total` requests are done.

One epoll loop in one process drives every client (so the clients cost the same against either server). A
request is "served" when its data arrived, "refused" when the server answered with an ERROR packet (the client
is told at once and moves on), "unanswered" when nothing came for `wait` seconds after the RRQ (a PXE ROM
would sit out its timeout and retransmit). The latency is from the RRQ to the last DATA block.
"""

from __future__ import annotations

import random
import select
import socket
import struct
import time
from dataclasses import dataclass, field

OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 3, 4, 5, 6


def mac_of(i: int) -> str:
    return "52:54:%02x:%02x:%02x:%02x" % ((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)


def config_name(i: int) -> str:
    return f"pxelinux.cfg/01-{mac_of(i).replace(':', '-')}"


def address(n: int) -> str:
    """The n-th of the many source addresses (all of 127/8 is loopback on Linux)."""
    return f"127.0.{2 + n // 250}.{1 + n % 250}"


@dataclass
class StormResult:
    served: int = 0
    refused: int = 0
    unanswered: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    wall: float = 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class _Client:
    __slots__ = ("sock", "started", "deadline", "block", "got")

    def __init__(self, sock: socket.socket, started: float, wait: float):
        self.sock, self.started, self.deadline, self.block, self.got = sock, started, started + wait, 0, 0


def storm(server: tuple[str, int], hosts: int, concurrency: int, total: int, *, many_addresses: bool,
          wait: float = 5.0, blksize: int = 1468, seed: int = 7) -> StormResult:
    """`total` requests for random registered MACs, `concurrency` in flight; from `address(mac % 250)` (so a MAC
    always asks from the same address) when `many_addresses`, else all from 127.0.0.1."""
    rng = random.Random(seed)
    result = StormResult()
    ep = select.epoll()
    live: dict[int, _Client] = {}
    issued = 0

    def start_one() -> None:
        nonlocal issued
        i = rng.randrange(hosts)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((address(i % 250) if many_addresses else "127.0.0.1", 0))
        now = time.perf_counter()
        rrq = (b"\x00\x01" + config_name(i).encode() + b"\x00octet\x00tsize\x000\x00blksize\x00"
               + str(blksize).encode() + b"\x00")
        sock.sendto(rrq, server)
        live[sock.fileno()] = _Client(sock, now, wait)
        ep.register(sock.fileno(), select.EPOLLIN)
        issued += 1

    def finish(fd: int) -> None:
        client = live.pop(fd)
        ep.unregister(fd)
        client.sock.close()
        if issued < total:
            start_one()

    t0 = time.perf_counter()
    for _ in range(min(concurrency, total)):
        start_one()
    while live:
        for fd, _ in ep.poll(0.05):
            client = live.get(fd)
            if client is None:
                continue
            try:
                pkt, peer = client.sock.recvfrom(65536)
            except BlockingIOError:
                continue
            opcode = struct.unpack_from("!H", pkt)[0] if len(pkt) >= 2 else 0
            if opcode == OP_OACK:
                client.sock.sendto(struct.pack("!HH", OP_ACK, 0), peer)
                continue
            if opcode == OP_ERROR:
                message = pkt[4:].split(b"\0", 1)[0].decode("ascii", "replace")
                result.refused += 1
                result.errors[message] = result.errors.get(message, 0) + 1
                finish(fd)
                continue
            if opcode == OP_DATA:
                block = struct.unpack_from("!H", pkt, 2)[0]
                client.sock.sendto(struct.pack("!HH", OP_ACK, block), peer)
                if len(pkt) - 4 < blksize:
                    result.served += 1
                    result.latencies.append(time.perf_counter() - client.started)
                    finish(fd)
        now = time.perf_counter()
        for fd in [fd for fd, c in live.items() if now > c.deadline]:
            result.unanswered += 1
            finish(fd)
    result.wall = time.perf_counter() - t0
    ep.close()
    return result
