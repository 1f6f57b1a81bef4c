"""TFTP throughput bench (issue 3, target a): 32 clients fetch an 8 MB file at blksize 1468, ours vs tftp-hpa.

Not a test: run it by hand, as root (in.tftpd chroots into its directory), and paste the table into the README:

    python bench/tftp_bench.py               # ours (provisioner.tftp.server.TftpService) vs in.tftpd, plus stock tftpy
    python bench/tftp_bench.py --rounds 9 --no-stock

"ours" is the service as configured by default (each 8 MB transfer in a forked process, tftp_solo);
"ours, loop" the same with tftp_fork_limit 0 (every transfer in the worker processes' epoll loops).

Needs the Debian packages `tftpd-hpa` (in.tftpd) and `curl`. Clients are `curl --tftp-blksize` processes
(C, so the server, not the client, is what is measured); each round starts all N at once and times until the
last one finishes. Servers run in their own processes, same file, same blksize cap, same clients; rounds are
interleaved and the order rotates every round (no server always runs right after the same other one). Per
server: the median round, its range, and per round the ratio to the tftp-hpa round next to it (the "paired"
ratio cancels the drift of a shared machine's load). CPU per GB: the server's whole process tree, sampled
every 20 ms so in.tftpd's per-transfer children count although they are reaped unseen (they ignore
SIGCHLD); the clients' (rusage); and the inter-processor interrupts per block (RES+CAL in /proc/interrupts,
machine-wide): waking a client that sleeps on the other CPU costs one, and in a VM an IPI is dear; and how
often a client was preempted per block (its involuntary context switches): a switch out and back it did not need.
The clients share the CPUs with the server, so on a small machine every number moves with whatever else
runs: compare within one run, not across runs. Everything listens on 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
        except OSError:
            pass  # it exited meanwhile
    return found


class TreeCpu:
    """CPU seconds (utime + stime) of a process and all its descendants, exited ones included.

    in.tftpd ignores SIGCHLD, so the kernel reaps its per-transfer children and their time never reaches
    its cutime: a thread samples the tree every 20 ms and keeps each process's last value (what a child
    uses in its last 20 ms is missed: well under 1% of an 8 MB transfer).
    """

    def __init__(self, pid: int):
        self.pid, self.seen, self.done = pid, {}, threading.Event()
        self._sample()
        self.base = dict(self.seen)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        for p in _tree(self.pid):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            self.seen[p] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self.done.wait(0.02):
            self._sample()

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        self._sample()
        return sum(v - self.base.get(p, 0.0) for p, v in self.seen.items())


def ipis() -> int:
    """Rescheduling and function-call inter-processor interrupts so far, all CPUs."""
    total = 0
    for line in Path("/proc/interrupts").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in ("RES:", "CAL:"):
            total += sum(int(v) for v in fields[1:] if v.isdigit())
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle, from /proc/stat (includes the clients and anything else running)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def serve_ours(root: str, port: int, fork_limit: int | None = None) -> None:
    """Child mode: our TFTP service, configured as `provisioner serve` would be, until stdin closes."""
    from provisioner.config import load_config
    from provisioner.tftp.server import TftpService

    config = load_config(file=None, environ={}, overrides={
        "tftp_root": root, "tftp_port": port, "bind_address": "127.0.0.1", "data_dir": root + "/../data",
        "tftp_max_sessions_per_client": 64,  # every bench client comes from 127.0.0.1
        **({} if fork_limit is None else {"tftp_fork_limit": fork_limit})})
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


def round_once(server: Server, clients: int, size: int, blksize: int) -> dict[str, float]:
    """One round: aggregate MB/s, and the CPU seconds of the server tree, the clients and the machine."""
    url = f"tftp://127.0.0.1:{server.port}/big.bin"
    cmd = ["curl", "-s", "--max-time", "120", "--tftp-blksize", str(blksize), "-o", "/dev/null",
           "-w", "%{size_download}", url]
    tree = TreeCpu(server.proc.pid)
    ru0, busy0, ipi0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds(), ipis()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for _ in range(clients)]
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - t0
    ru1, busy, ipi = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds() - busy0, ipis() - ipi0
    server_cpu = tree.stop()
    bad = [(p.returncode, o) for p, o in zip(procs, outs) if p.returncode != 0 or int(o or 0) != size]
    if bad:
        raise RuntimeError(f"{server.name}: {len(bad)} of {clients} transfers failed: {bad[:3]}")
    client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {"rate": clients * size / elapsed / 1e6, "server": server_cpu, "client": client_cpu, "machine": busy,
            "ipis": ipi, "preempted": ru1.ru_nivcsw - ru0.ru_nivcsw}


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
        if kind == "stock":
            serve_stock_tftpy(root, int(port))
        else:
            serve_ours(root, int(port), 0 if kind == "ours-loop" else None)
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
        ports = [free_udp_port() for _ in range(4)]
        servers = [
            Server("tftp-hpa", ["in.tftpd", "-L", "-s", str(root), "-a", f"127.0.0.1:{ports[0]}",
                                "-u", "nobody", "-B", str(args.blksize)], ports[0]),
            Server("ours", me + ["ours", str(root), str(ports[1])], ports[1]),
            Server("ours, loop", me + ["ours-loop", str(root), str(ports[3])], ports[3]),
        ]
        if not args.no_stock:
            servers.append(Server("tftpy stock", me + ["stock", str(root), str(ports[2])], ports[2]))
        for server in servers:
            server.start()
            verify(server, root / "big.bin", args.blksize)

        busy0 = machine_busy_seconds()
        time.sleep(2.0)
        background = (machine_busy_seconds() - busy0) / 2.0 / (os.cpu_count() or 1)
        results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
        for i in range(args.rounds):
            for server in servers[i % len(servers):] + servers[:i % len(servers)]:  # rotate the order
                results[server.name].append(round_once(server, args.clients, size, args.blksize))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(results, args, size, background)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, size: int,
           background: float) -> None:
    total_gb, blocks = args.clients * size / 1e9, args.clients * size / args.blksize
    print(f"TFTP: {args.clients} concurrent curl clients x {args.size_mb:g} MiB at blksize {args.blksize}, loopback, "
          f"{os.cpu_count()} CPUs ({background:.0%} busy before the run, load {os.getloadavg()[0]:.1f} after), "
          f"{args.rounds} interleaved rounds")
    ref_rows = results["tftp-hpa"]
    ref = statistics.median(r["rate"] for r in ref_rows)
    print(f"{'server':<14}{'MB/s median':>12}{'min':>7}{'max':>7}{'vs hpa':>8}{'paired (min-max)':>19}"
          f"{'CPU s/GB: server':>18}{'clients':>9}{'machine':>9}{'IPIs/block':>12}{'preempted/block':>17}")

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    for name, rows in results.items():
        rates = [r["rate"] for r in rows]
        paired = [r["rate"] / h["rate"] for r, h in zip(rows, ref_rows)]
        spread = f"({min(paired):.2f}-{max(paired):.2f})"
        print(f"{name:<14}{med(rows, 'rate'):>12.1f}{min(rates):>7.1f}{max(rates):>7.1f}"
              f"{med(rows, 'rate') / ref:>7.2f}x{statistics.median(paired):>7.2f}x {spread}"
              f"{med(rows, 'server') / total_gb:>18.2f}{med(rows, 'client') / total_gb:>9.2f}"
              f"{med(rows, 'machine') / total_gb:>9.2f}{med(rows, 'ipis') / blocks:>12.2f}"
              f"{med(rows, 'preempted') / blocks:>17.3f}")
    ratio = med(results["ours"], "rate") / ref
    ahead = sum(r["rate"] >= h["rate"] for r, h in zip(results["ours"], ref_rows))
    print(f"ours ahead of the tftp-hpa round next to it in {ahead} of {len(ref_rows)} rounds")
    print(f"ours / tftp-hpa = {ratio:.3f}x (target >= 1.00x): {'MET' if ratio >= 1.0 else 'NOT MET'}")


if __name__ == "__main__":
    main()
