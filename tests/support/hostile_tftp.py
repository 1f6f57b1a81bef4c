"""The TFTP attack rig for tests/hostile/test_tftp_*.py: raw RRQs from chosen 127.0.x.y source addresses, and a
small blocking TFTP client (bound to its own source address) that downloads a file as a PXE ROM would."""

from __future__ import annotations

import resource
import socket
import struct
from typing import Iterator

import pytest

OP_RRQ, OP_DATA, OP_ACK, OP_ERROR = 1, 3, 4, 5


def rrq(name: str, **options: str) -> bytes:
    """A read request for `name` (octet), with RFC 2347 options."""
    packet = struct.pack("!H", OP_RRQ) + name.encode() + b"\0octet\0"
    for key, value in options.items():
        packet += key.encode() + b"\0" + value.encode() + b"\0"
    return packet


def bound(source: str, timeout: float = 5.0) -> socket.socket:
    """A UDP socket sending from `source` (a distinct client to the server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    return sock


def error_of(packet: bytes) -> tuple[int, str] | None:
    """(code, message) of a TFTP ERROR packet, else None."""
    if len(packet) < 4 or struct.unpack_from("!H", packet)[0] != OP_ERROR:
        return None
    return struct.unpack_from("!H", packet, 2)[0], packet[4:].split(b"\0", 1)[0].decode("ascii", "replace")


def download(server: tuple[str, int], name: str, source: str = "127.0.0.1", *, tries: int = 6,
             wait: float = 1.0) -> bytes:
    """Fetch `name` with 512-byte blocks from `source`, resending the RRQ or the last ACK like a PXE ROM.
    Raises FileNotFoundError / RuntimeError on an ERROR packet, TimeoutError when the server stays silent."""
    with bound(source, wait) as sock:
        out, block, last, peer, silent = bytearray(), 0, rrq(name), server, 0
        sock.sendto(last, server)
        while True:
            try:
                packet, sender = sock.recvfrom(70000)
            except TimeoutError:
                silent += 1
                if silent > tries:
                    raise TimeoutError(f"tftp {name} from {source}: no answer") from None
                sock.sendto(last, peer)
                continue
            found = error_of(packet)
            if found is not None:
                raise (FileNotFoundError if found[0] == 1 else RuntimeError)(f"tftp {name}: {found}")
            opcode, number = struct.unpack_from("!HH", packet)
            if opcode != OP_DATA:
                continue
            if peer == server:
                peer = sender  # the transfer's own port from now on (RFC 1350 TIDs)
            if number == (block + 1) & 0xFFFF:
                out += packet[4:]
                block, silent = block + 1, 0
            last = struct.pack("!HH", OP_ACK, number)
            sock.sendto(last, peer)
            if number == block & 0xFFFF and len(packet) < 4 + 512:
                return bytes(out)


def pxe_name(mac: str) -> str:
    return "pxelinux.cfg/01-" + mac.replace(":", "-").lower()


@pytest.fixture
def many_fds() -> Iterator[None]:
    """Room for a flood's client sockets in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
