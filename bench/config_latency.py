#!/usr/bin/env python3
"""Per-MAC boot-config latency with 10,000 registered hosts (issue 3 bench (c); target p99 <= 5 ms).

Two measurements in one run, on loopback, against the real `serve` runtime:
  - in process: service.tftp_payload() (store lookup + policy.decide + render), per request;
  - over TFTP: a raw UDP client sends the RRQ for pxelinux.cfg/01-<mac> and times until the (single) DATA
    block arrives, then ACKs it: what a PXE ROM waits for.
Requests are spread over unknown MACs, known unarmed hosts and armed hosts (armed ones write an event).
Usage: python bench/config_latency.py [--hosts 10000] [--requests 3000]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner.boot import attempts, service  # noqa: E402
from provisioner.config import load_config  # noqa: E402
from provisioner.demo import synthetic_media_tree  # noqa: E402
from provisioner.media import import_media  # noqa: E402
from provisioner.model import Host  # noqa: E402
from provisioner.runtime import Runtime  # noqa: E402
from provisioner.store import Store  # noqa: E402


def mac_of(i: int) -> str:
    return "52:54:%02x:%02x:%02x:%02x" % ((i >> 24) & 255, (i >> 16) & 255, (i >> 8) & 255, i & 255)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def tftp_once(addr: tuple[str, int], name: str) -> float:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        start = time.perf_counter()
        sock.sendto(b"\x00\x01" + name.encode() + b"\x00octet\x00", addr)
        data, peer = sock.recvfrom(2048)
        elapsed = time.perf_counter() - start
        opcode, block = struct.unpack("!HH", data[:4])
        if opcode != 3:
            raise RuntimeError(f"expected DATA for {name}, got opcode {opcode}: {data[:80]!r}")
        sock.sendto(struct.pack("!HH", 4, block), peer)
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--armed", type=int, default=500)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    (work / "root").mkdir()
    config = load_config(file=None, environ={}, overrides={
        "data_dir": work / "data", "bind_address": "127.0.0.1", "tftp_port": 0, "http_port": 0,
        "tftp_root": work / "root", "public_url": "http://127.0.0.1:8080",
        "tftp_max_sessions_per_client": 900, "tftp_max_sessions": 900})
    store = Store(config.db_path)
    import_media(store, config, "xs84", synthetic_media_tree(work / "tree"))
    hosts = [Host(mac=mac_of(i), name=f"h{i}", pool=f"pool{i // 16}", disk=f"/dev/disk/by-id/d{i}")
             for i in range(args.hosts)]
    store.add_hosts(hosts)
    for i in range(args.armed):
        attempts.arm(store, config, mac_of(i * (args.hosts // args.armed)), "xs84")
    rng = random.Random(7)
    names = []
    for _ in range(args.requests):
        i = rng.randrange(args.hosts * 11 // 10)  # ~9% unknown MACs
        names.append(f"pxelinux.cfg/01-{mac_of(i).replace(':', '-')}")

    inproc = []
    for name in names:
        start = time.perf_counter()
        service.tftp_payload(store, config, name, "127.0.0.1")
        inproc.append(time.perf_counter() - start)

    runtime = Runtime(config, store).start()
    try:
        addr = runtime.tftp.address
        wire = [tftp_once(addr, name) for name in names]
    finally:
        runtime.stop()

    print(f"{args.hosts} registered hosts, {args.armed} armed, {args.requests} requests")
    print(f"{'path':<32}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for label, values in (("in process (decide + render)", inproc), ("over TFTP (RRQ -> DATA)", wire)):
        print(f"{label:<32}{statistics.median(values) * 1e3:>10.3f}{pct(values, 99) * 1e3:>10.3f}"
              f"{max(values) * 1e3:>10.3f}")
    p99 = pct(wire, 99) * 1e3
    print(f"target p99 <= 5 ms over TFTP: {'met' if p99 <= 5 else 'NOT met'} ({p99:.3f} ms, ratio {p99 / 5:.2f}x of budget)")


if __name__ == "__main__":
    main()
