#!/usr/bin/env python3
"""Per-MAC boot-config latency with 10,000 hosts: the shipped `serve` on PostgreSQL vs on SQLite (issue 22).

For each backend: a data dir and a provisioner.toml (PostgreSQL: database_url naming a fresh database on a
throw-away cluster started with Debian's initdb + pg_ctl, tests/support/pg_server.py; SQLite: the default file),
10,000 hosts registered and 500 armed through the store, then `python -m provisioner --config FILE serve`
(bench/shipped.py) and a raw UDP client timing RRQ pxelinux.cfg/01-<mac> -> first DATA, as bench/config_latency.py
does (same request mix: ~9% unknown MACs, known unarmed hosts, armed hosts whose fetch writes an event). The
same names in the same order on both backends, after the same warm-up. Prints p50/p99/max per backend and the
p99 ratio PostgreSQL / SQLite (target: within 2x).
Usage: python bench/config_latency_pg.py [--hosts 10000] [--armed 500] [--requests 3000]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from config_latency import mac_of, pct, tftp_once  # noqa: E402
from pg_server import PgServer  # noqa: E402
from shipped import Serve, free_port, write_config  # noqa: E402

from provisioner.boot import attempts  # noqa: E402
from provisioner.config import load_config  # noqa: E402
from provisioner.demo import synthetic_media_tree  # noqa: E402
from provisioner.media import import_media  # noqa: E402
from provisioner.model import Host  # noqa: E402
from provisioner.store import Store  # noqa: E402

WARMUP = 100  # requests before timing (both backends): first connections, caches


def prepare(work: Path, database_url: str, args: argparse.Namespace) -> Path:
    """Data dir, config file and a populated store for one backend; returns the config file."""
    (work / "root").mkdir(parents=True)
    http_port = free_port()
    keys = {"data_dir": work / "data", "bind_address": "127.0.0.1", "tftp_port": free_port(socket.SOCK_DGRAM),
            "http_port": http_port, "tftp_root": work / "root", "public_url": f"http://127.0.0.1:{http_port}",
            "tftp_max_sessions_per_client": 900, "tftp_max_sessions": 900, "log_level": "ERROR",
            "boot_self_check": False}
    if database_url:
        keys["database_url"] = database_url
    config_file = write_config(work / "provisioner.toml", **keys)
    config = load_config(config_file, environ={})
    store = Store.from_config(config)
    try:
        import_media(store, config, "xs84", synthetic_media_tree(work / "tree"))
        store.add_hosts([Host(mac=mac_of(i), name=f"h{i}", pool=f"pool{i // 16}", disk=f"/dev/disk/by-id/d{i}")
                         for i in range(args.hosts)])
        for i in range(args.armed):
            attempts.arm(store, config, mac_of(i * (args.hosts // args.armed)), "xs84")
    finally:
        store.close()
    return config_file


def measure(config_file: Path, work: Path, names: list[str]) -> list[float]:
    config = load_config(config_file, environ={})
    with Serve(config_file, work):
        addr = ("127.0.0.1", config.tftp_port)
        for name in names[:WARMUP]:
            tftp_once(addr, name)
        return [tftp_once(addr, name) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--armed", type=int, default=500)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    rng = random.Random(7)
    names = [f"pxelinux.cfg/01-{mac_of(rng.randrange(args.hosts * 11 // 10)).replace(':', '-')}"
             for _ in range(args.requests)]  # ~9% unknown MACs
    base = Path(tempfile.mkdtemp(prefix="bench-latency-pg-"))
    server = PgServer().start()
    try:
        results = {}
        for backend in ("sqlite", "postgresql"):
            work = base / backend
            url = server.create_database("bench") if backend == "postgresql" else ""
            results[backend] = measure(prepare(work, url, args), work, names)
    finally:
        server.stop()
    print(f"{args.hosts} registered hosts, {args.armed} armed, {args.requests} timed requests after {WARMUP} warm-up;"
          " shipped `provisioner serve`, TFTP RRQ -> first DATA on loopback")
    print(f"{'backend':<12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for backend, values in results.items():
        print(f"{backend:<12}{statistics.median(values) * 1e3:>10.3f}{pct(values, 99) * 1e3:>10.3f}"
              f"{max(values) * 1e3:>10.3f}")
    ratio = pct(results["postgresql"], 99) / pct(results["sqlite"], 99)
    print(f"p99 PostgreSQL / SQLite = {ratio:.2f}x (target within 2x: {'met' if ratio <= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
