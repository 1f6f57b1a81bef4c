"""The HTTP attack rig for tests/hostile/test_http_*.py: the shipped Runtime on loopback, one armed host, clients
bound to their own 127.0.x.y source address (distinct clients to the server), and a normal boot to check with."""

from __future__ import annotations

import http.client
import re
import socket
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from helpers import make_media_tree
from provisioner import media
from provisioner.boot import attempts
from provisioner.model import Host
from provisioner.runtime import Runtime

ARMED = "52:54:00:15:00:01"
BIG_FILE = "boot/big.bin"  # a file in the media tree long enough that reading it slowly takes seconds


@dataclass
class Served:
    """A running server (`rt`), its port and the armed host's attempt."""

    rt: Runtime
    port: int
    attempt: Any
    tree: Path


@contextmanager
def serving(config: Any, store: Any, tmp_path: Path, **overrides: Any) -> Iterator[Served]:
    """Runtime (TFTP + HTTP, as `serve` wires them) with media `xs84` and ARMED armed for it."""
    root = tmp_path / "tftp_root"
    root.mkdir(exist_ok=True)
    (root / "pxelinux.0").write_bytes(b"PXE" * 1000)
    cfg = config.replace(tftp_root=root, **overrides)
    tree = make_media_tree(tmp_path / "tree")
    with open(tree / BIG_FILE, "wb") as handle:
        handle.truncate(32 << 20)
    media.import_media(store, cfg, "xs84", tree)
    store.add_host(Host.from_fields({"mac": ARMED, "name": "victim", "pool": "p", "disk": "/dev/disk/by-id/d-1"}))
    attempt = attempts.arm(store, cfg, ARMED, "xs84")
    rt = Runtime(cfg, store).start()
    try:
        yield Served(rt, rt.http.port, attempt, tree)
    finally:
        rt.stop()


def client_ip(n: int) -> str:
    """The n-th distinct client address (127.0.x.y; all of 127/8 is loopback on Linux)."""
    return f"127.0.{2 + n // 250}.{1 + n % 250}"


def get(port: int, path: str, source: str = "127.0.0.1", timeout: float = 20.0,
        method: str = "GET") -> tuple[int, bytes]:
    """One request on a fresh connection from `source`: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tftp_get(server: tuple[str, int], name: str, source: str) -> bytes:
    """A plain RFC 1350 read (512-byte blocks, no options) from `source`, as PXE firmware asks for its config."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    try:
        sock.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", server)
        data, block = b"", 1
        while True:
            packet, peer = sock.recvfrom(70000)
            opcode, number = struct.unpack("!HH", packet[:4])
            assert opcode == 3, f"TFTP error for {name}: {packet!r}"
            if number == block:
                data += packet[4:]
                sock.sendto(struct.pack("!HH", 4, number), peer)
                if len(packet) - 4 < 512:
                    return data
                block += 1
    finally:
        sock.close()


def boot(srv: "Served", mac: str, source: str) -> dict[str, int]:
    """What a real BIOS host does with our server: its iPXE script, which chains to pxelinux.0 (docs/firmware.md
    "iPXE on BIOS"); pxelinux's per-MAC config over TFTP; every file it names, read over HTTP from /media/ as
    lpxelinux would (these tests are about the HTTP server); the answer file on the dom0 line, then the
    installer's start script. Name -> status ("config": the TFTP read succeeded)."""
    dashed = mac.replace(":", "-")
    status, script = get(srv.port, f"/boot/ipxe/{dashed}", source)
    seen = {"ipxe": status}
    if b"chain ${210:string}pxelinux.0" not in script:
        return seen
    config = tftp_get(srv.rt.tftp.address, f"pxelinux.cfg/01-{dashed}", source)
    seen["config"] = 200
    for name in re.findall(rb"xenserver/([A-Za-z0-9._-]+/\S+)", config):
        path = "/media/" + name.decode()
        seen[path.rsplit("/", 1)[-1]] = get(srv.port, path, source)[0]
    for url in re.findall(rb"http://\S+/boot/answerfile/\S+", config):
        token = url.decode().rsplit("/", 1)[-1]
        seen["answerfile"] = get(srv.port, f"/boot/answerfile/{token}", source)[0]
        seen["start"] = get(srv.port, f"/boot/script/{token}/installation-start", source)[0]
    return seen


BOOTED = {"ipxe": 200, "config": 200, "xen.gz": 200, "vmlinuz": 200, "install.img": 200, "answerfile": 200, "start": 200}


def raw_connection(port: int, source: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_server(sock: socket.socket, wait: float = 0.0) -> bool:
    """True when the server closed (EOF or reset) this connection; waits at most `wait` seconds to see it."""
    sock.settimeout(max(wait, 0.001))
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except ConnectionError:
        return True


def until(condition: Callable[[], bool], limit: float, step: float = 0.05) -> bool:
    """Poll `condition` until it holds (True) or `limit` seconds passed (False): a bound, not a timing claim."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
