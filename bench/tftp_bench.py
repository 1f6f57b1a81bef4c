"""TFTP throughput bench (issue 3, target a): 32 clients fetch an 8 MB file at blksize 1468, ours vs tftp-hpa.

Not a test: run it by hand, as root (in.tftpd chroots into its directory), and paste the table into the README:

    python bench/tftp_bench.py               # ours (provisioner.tftp.TftpService) vs in.tftpd, plus stock tftpy
    python bench/tftp_bench.py --rounds 9 --no-stock

Needs the Debian packages `tftpd-hpa` (in.tftpd) and `curl`. Clients are `curl --tftp-blksize` processes
(C, so the server, not the client, is what is measured); each round starts all N at once and times until the
last one finishes. Servers run in their own processes and are measured in alternation, rounds interleaved;
the median round is reported, with the CPU time the server used per GB (its own plus reaped children:
in.tftpd forks one child per transfer). The clients share the CPUs with the server, so on a small machine
both numbers move with whatever else runs: compare within one run, not across runs.
Everything listens on 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1 << 20
PROBE = b"ready"


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """A TFTP server is up when it answers an RRQ for the probe file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on udp port {port} exited with {proc.returncode}")
        out = subprocess.run(["curl", "-s", "--max-time", "1", f"tftp://127.0.0.1:{port}/probe"],
                             capture_output=True)
        if out.stdout == PROBE:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no TFTP server answering on udp port {port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc.

    in.tftpd ignores SIGCHLD, so its per-transfer children are reaped by the kernel and their CPU time
    is lost: for it only the machine-wide figure is available.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle, from /proc/stat (includes the clients and anything else running)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def serve_ours(root: str, port: int) -> None:
    """Child mode: our TFTP service, configured as `provisioner serve` would be, until stdin closes."""
    from provisioner.config import load_config
    from provisioner.tftp import TftpService

    config = load_config(file=None, environ={}, overrides={
        "tftp_root": root, "tftp_port": port, "bind_address": "127.0.0.1", "data_dir": root + "/../data",
        "tftp_max_sessions_per_client": 64})  # every bench client comes from 127.0.0.1
    sent = []
    service = TftpService(config, lambda name, ip: None, on_event=lambda kind, *rest: sent.append(kind))
    service.start()
    sys.stdin.read()
    service.stop()


def serve_stock_tftpy(root: str, port: int) -> None:
    """Child mode: tftpy 0.8.7's own listen() loop, read-only, logging at WARNING (its best case)."""
    import logging

    import tftpy

    logging.getLogger("tftpy").setLevel(logging.WARNING)
    tftpy.TftpServer(root, upload_open=lambda *a, **k: None).listen("127.0.0.1", port)


class Server:
    def __init__(self, name: str, argv: list[str], port: int):
        self.name, self.argv, self.port = name, argv, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wait_serving(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(5)


def round_once(server: Server, clients: int, size: int, blksize: int) -> tuple[float, float, float]:
    """One round: (aggregate MB/s, server CPU seconds, machine busy CPU seconds)."""
    url = f"tftp://127.0.0.1:{server.port}/big.bin"
    cmd = ["curl", "-s", "--max-time", "120", "--tftp-blksize", str(blksize), "-o", "/dev/null",
           "-w", "%{size_download}", url]
    cpu0, busy0 = cpu_seconds(server.proc.pid), machine_busy_seconds()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(clients)]
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - t0
    cpu, busy = cpu_seconds(server.proc.pid) - cpu0, machine_busy_seconds() - busy0
    bad = [(p.returncode, o) for p, o in zip(procs, outs) if p.returncode != 0 or int(o or 0) != size]
    if bad:
        raise RuntimeError(f"{server.name}: {len(bad)} of {clients} transfers failed: {bad[:3]}")
    return clients * size / elapsed / 1e6, cpu, busy


def verify(server: Server, path: Path, blksize: int) -> None:
    out = subprocess.run(["curl", "-s", "--tftp-blksize", str(blksize), f"tftp://127.0.0.1:{server.port}/big.bin"],
                         capture_output=True, timeout=120)
    if out.stdout != path.read_bytes():
        raise RuntimeError(f"{server.name} served different bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size-mb", type=float, default=8.0, help="file size in MiB (default 8)")
    parser.add_argument("--blksize", type=int, default=1468)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-stock", action="store_true", help="skip stock tftpy listen()")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "ROOT", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, root, port = args.serve
        (serve_ours if kind == "ours" else serve_stock_tftpy)(root, int(port))
        return
    if shutil.which("in.tftpd") is None or shutil.which("curl") is None:
        sys.exit("needs in.tftpd (Debian tftpd-hpa) and curl: apt-get install -y tftpd-hpa curl")
    if os.geteuid() != 0:
        sys.exit("run as root: in.tftpd chroots into its directory (-s) and drops to nobody")

    size = int(args.size_mb * MB)
    work = Path(tempfile.mkdtemp(prefix="tftp-bench-"))
    servers: list[Server] = []
    try:
        root = work / "root"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(size))
        (root / "probe").write_bytes(PROBE)
        for path in (work, root):
            path.chmod(0o755)  # in.tftpd drops to nobody after chroot
        for path in root.iterdir():
            path.chmod(0o644)

        me = [sys.executable, str(Path(__file__).resolve()), "--serve"]
        ports = [free_udp_port() for _ in range(3)]
        servers = [
            Server("tftp-hpa", ["in.tftpd", "-L", "-s", str(root), "-a", f"127.0.0.1:{ports[0]}",
                                "-u", "nobody", "-B", str(args.blksize)], ports[0]),
            Server("ours", me + ["ours", str(root), str(ports[1])], ports[1]),
        ]
        if not args.no_stock:
            servers.append(Server("tftpy stock", me + ["stock", str(root), str(ports[2])], ports[2]))
        for server in servers:
            server.start()
            verify(server, root / "big.bin", args.blksize)

        busy0 = machine_busy_seconds()
        time.sleep(2.0)
        background = (machine_busy_seconds() - busy0) / 2.0 / (os.cpu_count() or 1)
        results: dict[str, list[tuple[float, float, float]]] = {s.name: [] for s in servers}
        for _ in range(args.rounds):
            for server in servers:
                results[server.name].append(round_once(server, args.clients, size, args.blksize))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    total_gb = args.clients * size / 1e9
    print(f"TFTP: {args.clients} concurrent curl clients x {args.size_mb:g} MiB at blksize {args.blksize}, loopback, "
          f"{os.cpu_count()} CPUs ({background:.0%} busy before the run), median of {args.rounds} interleaved rounds")
    ref = statistics.median(r[0] for r in results["tftp-hpa"])
    print(f"{'server':<18}{'MB/s (median)':>14}{'min':>8}{'max':>8}{'vs tftp-hpa':>13}"
          f"{'server CPU s/GB':>17}{'machine CPU s/GB':>18}")
    for name, rows in results.items():
        rates = [r[0] for r in rows]
        med = statistics.median(rates)
        server_cpu = "n/a" if name == "tftp-hpa" else f"{statistics.median(r[1] for r in rows) / total_gb:.2f}"
        machine = statistics.median(r[2] for r in rows) / total_gb
        print(f"{name:<18}{med:>14.1f}{min(rates):>8.1f}{max(rates):>8.1f}{med / ref:>12.2f}x"
              f"{server_cpu:>17}{machine:>18.2f}")
    ratio = statistics.median(r[0] for r in results["ours"]) / ref
    print(f"ours / tftp-hpa = {ratio:.2f}x (target >= 1.00x): {'MET' if ratio >= 1.0 else 'NOT MET'}")


if __name__ == "__main__":
    main()
