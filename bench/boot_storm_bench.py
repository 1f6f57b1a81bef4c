"""Boot-storm bench (issue 15): N armed hosts fetch their iPXE script, kernel (xen.gz + vmlinuz) and install.img
from the SHIPPED `provisioner serve`, without and then with one hostile address holding its maximum of idle
connections (http_max_connections_per_client, re-opened as the header timeout closes them).

Not a test: run it by hand and paste its table into the README:

    python bench/boot_storm_bench.py                    # 500 hosts, 16 MB install.img, 128 booting at once
    python bench/boot_storm_bench.py --hosts 100 --install-mb 64

Every host is a distinct client address (127.0.x.y: the client socket is bound to it; all of 127/8 is
loopback on Linux), so per-address limits apply as they would on a LAN. The server is started from a config
file as an operator would (`python -m provisioner --config FILE serve`), its data dir prepared beforehand
(media imported, hosts registered and armed). Every request has a timeout, every loop a bound; the bench
stops the server and removes its files by itself. Prints, per phase: hosts completed, failures, p50/p99
latency per kind (time to the last byte), wall time, and what the hostile address held.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))

from shipped import Serve, free_port  # noqa: E402

TOKEN = "boot-storm-bench-token-0123456789"
HOSTILE = "127.0.1.1"
KINDS = ("ipxe", "kernel", "install.img")


def host_ip(n: int) -> str:
    return f"127.0.{2 + n // 250}.{1 + n % 250}"


def host_mac(n: int) -> str:
    return f"52:54:00:bb:{n // 256:02x}:{n % 256:02x}"


def prepare(work: Path, hosts: int, install_mb: int, http_port: int) -> Path:
    """Data dir, media tree and config file; hosts registered and armed. Returns the config file."""
    from helpers import make_media_tree
    from provisioner import media
    from provisioner.boot import attempts
    from provisioner.config import load_config
    from provisioner.model import Host
    from provisioner.store import Store

    (work / "tftp_root").mkdir()
    (work / "tftp_root" / "pxelinux.0").write_bytes(b"PXE" * 1000)
    tree = make_media_tree(work / "tree")
    with open(tree / "install.img", "wb") as f:  # incompressible, so nothing along the way can cheat
        for _ in range(install_mb):
            f.write(os.urandom(1 << 20))
    config_file = work / "provisioner.toml"
    config_file.write_text(
        f'data_dir = "{work / "data"}"\ntftp_root = "{work / "tftp_root"}"\nbind_address = "127.0.0.1"\n'
        f"http_port = {http_port}\ntftp_port = {free_port(socket.SOCK_DGRAM)}\napi_token = \"{TOKEN}\"\n")
    config = load_config(file=config_file, environ={})
    store = Store(config.db_path)
    try:
        media.import_media(store, config, "xs84", tree)
        for n in range(hosts):
            store.add_host(Host.from_fields({"mac": host_mac(n), "name": f"storm{n}", "pool": "storm",
                                             "disk": "/dev/sda"}))
            attempts.arm(store, config, host_mac(n), "xs84")
    finally:
        store.close()
    return config_file


def fetch(port: int, path: str, source: str, sink: bytearray) -> tuple[int, int]:
    """GET on a fresh connection from `source`: (status, body bytes), the body read into `sink`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        view, total = memoryview(sink), 0
        while True:
            n = response.readinto(view)
            if not n:
                break
            total += n
        return response.status, total
    finally:
        conn.close()


def boot_one(port: int, n: int, timings: dict[str, list[float]], lock: threading.Lock) -> str | None:
    """One host's fetches; None when all answered 200, else what failed."""
    source, sink = host_ip(n), bytearray(1 << 20)
    try:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
        conn.request("GET", f"/boot/ipxe/{host_mac(n).replace(':', '-')}")
        response = conn.getresponse()
        script = response.read()
        conn.close()
        took = {"ipxe": [time.monotonic() - started]}
        if response.status != 200 or b"chain ${210:string}pxelinux.0" not in script:
            return f"ipxe {response.status}"
        # The script chains to pxelinux.0 (docs/firmware.md "iPXE on BIOS"); with pxelinux_http, lpxelinux then
        # reads these over HTTP. The per-MAC config comes over TFTP: not part of this HTTP bench.
        for path in ("/media/xs84/boot/xen.gz", "/media/xs84/boot/vmlinuz", "/media/xs84/install.img"):
            kind = "install.img" if path.endswith("install.img") else "kernel"
            started = time.monotonic()
            status, _ = fetch(port, path, source, sink)
            took.setdefault(kind, []).append(time.monotonic() - started)
            if status != 200:
                return f"{kind} {status}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    with lock:
        for kind, values in took.items():
            timings[kind].extend(values)
    return None


class Hostile:
    """One address trying to hold `want` idle connections (over-cap ones are refused), re-opened as closed."""

    def __init__(self, port: int, want: int, server_pid: int):
        self.port, self.want, self.server_pid = port, want, server_pid
        self.stop = threading.Event()
        self.samples: list[int] = []  # connections the SERVER holds from the attacker (accepted, not closed)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((HOSTILE, 0))
        try:
            sock.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            return None
        return sock

    def _server_side(self) -> int:
        """The attacker's connections the server process has accepted (ss lists the owner of accepted sockets
        only; ones still in the listen backlog or already closed by the server are not the server's)."""
        out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", HOSTILE, "sport", "=",
                              f":{self.port}"], capture_output=True, text=True, timeout=10).stdout
        return sum(f"pid={self.server_pid}," in line for line in out.splitlines())

    def _run(self) -> None:
        held: list[socket.socket] = []
        while not self.stop.is_set():
            alive = []
            for sock in held:
                try:
                    gone = sock.recv(1, socket.MSG_PEEK) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    sock.close()
                else:
                    alive.append(sock)
            held = alive
            self.samples.append(self._server_side())
            while len(held) < self.want:
                sock = self._open()
                if sock is None:
                    break
                held.append(sock)
            self.stop.wait(0.2)
        for sock in held:
            sock.close()

    def __enter__(self) -> "Hostile":
        self.thread.start()
        time.sleep(1.0)  # let it reach its cap before the storm
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def storm(port: int, hosts: int, concurrency: int) -> dict:
    timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
    lock = threading.Lock()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        failures = [f for f in pool.map(lambda n: boot_one(port, n, timings, lock), range(hosts)) if f]
    return {"wall": time.monotonic() - started, "timings": timings, "failures": failures,
            "completed": hosts - len(failures)}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def report(name: str, result: dict, hosts: int, extra: str = "") -> None:
    print(f"\n{name}: {result['completed']}/{hosts} hosts completed, {len(result['failures'])} failed, "
          f"wall {result['wall']:.1f} s{extra}")
    print(f"  {'kind':<12} {'fetches':>8} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for kind in KINDS:
        values = result["timings"][kind]
        print(f"  {kind:<12} {len(values):>8} {pct(values, 50) * 1000:>9.1f} {pct(values, 99) * 1000:>9.1f} "
              f"{(max(values) if values else float('nan')) * 1000:>9.1f}")
    for failure in sorted(set(result["failures"]))[:5]:
        print(f"  failure: {failure} (x{result['failures'].count(failure)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--install-mb", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=128, help="hosts booting at once")
    parser.add_argument("--server-tree", type=Path, help="run `serve` from this source tree (e.g. an older "
                        "commit unpacked with `git archive C | tar -x -C DIR`) to compare; default: this one")
    parser.add_argument("--hostile-connections", type=int, default=0,
                        help="connections the attacker tries to hold (default: its cap + 16; 2200 = issue 15's attack)")
    args = parser.parse_args()

    from provisioner.config import load_config

    work = Path(tempfile.mkdtemp(prefix="boot-storm-"))
    port = free_port()
    serve = None
    try:
        config_file = prepare(work, args.hosts, args.install_mb, port)
        cap = load_config(file=config_file, environ={}).http_max_connections_per_client
        serve = Serve(config_file, work, tree=args.server_tree).start()
        print(f"boot storm: {args.hosts} hosts (distinct 127.0.x.y), {args.concurrency} at once, iPXE + xen.gz + "
              f"vmlinuz + {args.install_mb} MB install.img each, `provisioner serve` on 127.0.0.1:{port}, "
              f"{os.cpu_count()} CPUs; hostile address {HOSTILE} holds up to {cap} idle connections "
              f"(http_max_connections_per_client), trying for {args.hostile_connections or cap + 16}")
        report("no attacker", storm(port, args.hosts, args.concurrency), args.hosts)
        # no re-arming needed: an armed host gets its installer script on every boot until its installer starts
        with Hostile(port, args.hostile_connections or cap + 16, serve.pid) as hostile:
            result = storm(port, args.hosts, args.concurrency)
        held = hostile.samples[5:] or hostile.samples
        report("hostile address at its cap", result, args.hosts,
               f"; the server held {min(held)}-{max(held)} of the attacker's connections "
               f"(median {statistics.median(held):.0f}, {len(held)} samples)")
    finally:
        if serve is not None:
            logged = serve.stop()
            if logged:
                print("\nserve's stderr, last lines:", *logged, sep="\n  ")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
