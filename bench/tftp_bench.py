"""TFTP bench (issue 17): the SHIPPED `provisioner serve` against tftp-hpa's in.tftpd, two workloads, one run.

Not a test: run it by hand, as root (in.tftpd chroots into its directory), and paste the tables into the README:

    python bench/tftp_bench.py                     # 15 interleaved throughput rounds, then the per-MAC storm
    python bench/tftp_bench.py --rounds 25 --component --stock

"ours" is `python -m provisioner --config FILE serve` (bench/shipped.py), started from a config file holding
only the addresses, ports and directories, over a data dir where 10,000 hosts are registered (500 armed): HTTP
listening, events written to the store, every cap at its default. "--component" adds a row for the TFTP
service alone (provisioner.tftp.server.TftpService with a no-op event callback, the old bench's subject),
"--stock" one for tftpy 0.8.7's own listen() loop.

Throughput: `--clients` curl processes, each from its own loopback address (127.0.x.y via --interface, so the
per-client caps apply as on a LAN), fetch an 8 MiB file at blksize 1468. Clients are C (curl), so the server,
not the client, is what is measured; each round starts all N at once and times until the last one finishes.
Rounds are interleaved and the order rotates every round. Per server: the median round, its range, and per
round the ratio to the tftp-hpa round next to it (the "paired" ratio cancels the drift of a shared machine's
load). CPU per GB: the server's whole process tree, sampled every 20 ms so in.tftpd's per-transfer children
count although they are reaped unseen (they ignore SIGCHLD), and its root process alone ("main": for serve the
deciding thread, HTTP and the event writer); the clients' (rusage); the inter-processor interrupts per block
(RES+CAL in /proc/interrupts, machine-wide); and how often a client was preempted per block.

Storm (bench/tftp_storm.py): 64 and 256 clients at once ask for per-MAC configs like pxelinux, from many
source addresses and from one; served, refused (an ERROR packet) and unanswered (nothing for 5 s) requests,
and p50/p99 from the RRQ to the last block, beside tftp-hpa serving the same configs as files.

The clients share the CPUs with the servers, so on a small machine every number moves with whatever else
runs: compare within one run, not across runs. Everything listens on 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
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
sys.path.insert(0, str(ROOT / "bench"))

import shipped  # noqa: E402
import tftp_storm  # noqa: E402

MB = 1 << 20
PROBE = b"ready"
HOSTS, ARMED = 10_000, 500


def free_udp_port() -> int:
    return shipped.free_port(socket.SOCK_DGRAM)


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

    def stop(self) -> tuple[float, float]:
        """CPU seconds of the whole tree, and of the root process alone (serve: the deciding thread, HTTP, the
        event writer; in.tftpd: its listening process)."""
        self.done.set()
        self.thread.join()
        self._sample()
        total = sum(v - self.base.get(p, 0.0) for p, v in self.seen.items())
        return total, self.seen.get(self.pid, 0.0) - self.base.get(self.pid, 0.0)


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


def serve_component(root: str, port: int, data: str, settings: dict[str, object]) -> None:
    """Child mode: the TFTP service alone, as the old bench ran it (no HTTP, no store writes), until stdin closes."""
    from provisioner.config import load_config
    from provisioner.tftp.server import TftpService

    config = load_config(file=None, environ={}, overrides={
        "tftp_root": root, "tftp_port": port, "bind_address": "127.0.0.1", "data_dir": data, **settings})
    service = TftpService(config, lambda name, ip: None, on_event=lambda kind, *rest: None)
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
    """A server in a child process of this bench (same session), stopped by closing its stdin."""

    def __init__(self, name: str, argv: list[str], port: int):
        self.name, self.argv, self.port = name, argv, port
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

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


class Shipped:
    """`provisioner serve` from a config file (bench/shipped.py)."""

    def __init__(self, name: str, config_file: Path, work: Path, port: int, new_session: bool = False):
        self.name, self.port = name, port
        self.serve = shipped.Serve(config_file, work, new_session=new_session)

    @property
    def pid(self) -> int:
        return self.serve.pid

    def start(self) -> None:
        self.serve.start()
        wait_serving(self.port, self.serve.proc)

    def stop(self) -> None:
        logged = self.serve.stop()
        if any("Traceback" in line or "ERROR" in line for line in logged):
            print("serve's stderr, last lines:", *logged, sep="\n  ")


def prepare_ours(work: Path, root: Path, tftp_port: int, settings: dict[str, object]) -> tuple[Path, list[bytes]]:
    """The data dir `serve` starts on (media imported, HOSTS registered, ARMED of them armed) and its config file;
    and what serve answers for each registered MAC's pxelinux config (rendered from a scratch copy of the
    store, so the real one records no fetch), for tftp-hpa to serve as files."""
    from provisioner.boot import attempts, service
    from provisioner.config import load_config
    from provisioner.demo import synthetic_media_tree
    from provisioner.media import import_media
    from provisioner.model import Host
    from provisioner.store import Store

    config_file = shipped.write_config(
        work / "provisioner.toml", data_dir=work / "data", tftp_root=root, bind_address="127.0.0.1",
        tftp_port=tftp_port, http_port=shipped.free_port(), public_url="http://127.0.0.1:8080", **settings)
    config = load_config(file=config_file, environ={})
    store = Store(config.db_path)
    try:
        import_media(store, config, "xs84", synthetic_media_tree(work / "tree"))
        store.add_hosts([Host(mac=tftp_storm.mac_of(i), name=f"h{i}", pool=f"pool{i // 16}",
                              disk=f"/dev/disk/by-id/d{i}") for i in range(HOSTS)])
        for i in range(ARMED):
            attempts.arm(store, config, tftp_storm.mac_of(i * (HOSTS // ARMED)), "xs84")
    finally:
        store.close()
    scratch = work / "scratch"
    shutil.copytree(work / "data", scratch)
    scratch_config = load_config(file=config_file, environ={}, overrides={"data_dir": scratch})
    store = Store(scratch_config.db_path)
    try:
        payloads = [service.tftp_payload(store, scratch_config, tftp_storm.config_name(i), "127.0.0.1")
                    for i in range(HOSTS)]
    finally:
        store.close()
    shutil.rmtree(scratch)
    return config_file, payloads


def round_once(server, clients: int, size: int, blksize: int, one_address: bool = False) -> dict[str, float]:
    """One round: aggregate MB/s, and the CPU seconds of the server tree, the clients and the machine."""
    url = f"tftp://127.0.0.1:{server.port}/big.bin"
    cmds = [["curl", "-s", "--max-time", "120", "--interface",
             "127.0.0.1" if one_address else tftp_storm.address(n), "--tftp-blksize",
             str(blksize), "-o", "/dev/null", "-w", "%{size_download}", url] for n in range(clients)]
    tree = TreeCpu(server.pid)
    ru0, busy0, ipi0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds(), ipis()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE) for cmd in cmds]
    outs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - t0
    ru1, busy, ipi = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_seconds() - busy0, ipis() - ipi0
    server_cpu, main_cpu = tree.stop()
    bad = [(p.returncode, o) for p, o in zip(procs, outs) if p.returncode != 0 or int(o or 0) != size]
    if bad:
        raise RuntimeError(f"{server.name}: {len(bad)} of {clients} transfers failed: {bad[:3]}")
    client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {"rate": clients * size / elapsed / 1e6, "server": server_cpu, "main": main_cpu, "client": client_cpu,
            "machine": busy,
            "ipis": ipi, "preempted": ru1.ru_nivcsw - ru0.ru_nivcsw}


def verify(server, path: Path, blksize: int) -> None:
    out = subprocess.run(["curl", "-s", "--tftp-blksize", str(blksize), f"tftp://127.0.0.1:{server.port}/big.bin"],
                         capture_output=True, timeout=120)
    if out.stdout != path.read_bytes():
        raise RuntimeError(f"{server.name} served different bytes")


def setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, int(value) if value.lstrip("-").isdigit() else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size-mb", type=float, default=8.0, help="file size in MiB (default 8)")
    parser.add_argument("--blksize", type=int, default=1468)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--storm-requests", type=int, default=2000, help="requests per storm (default 2000)")
    parser.add_argument("--one-address", action="store_true", help="throughput clients all from 127.0.0.1 (then "
                        "--set tftp_max_sessions_per_client=64: the default cap is 16)")
    parser.add_argument("--no-storm", action="store_true", help="throughput rounds only")
    parser.add_argument("--no-throughput", action="store_true", help="the storm only")
    parser.add_argument("--component", action="store_true", help="add the TFTP service alone (the old subject)")
    parser.add_argument("--stock", action="store_true", help="add stock tftpy listen()")
    parser.add_argument("--new-session", action="store_true",
                        help="add `serve` started in a session (scheduler autogroup) of its own, as from another terminal")
    parser.add_argument("--set", action="append", default=[], type=setting, metavar="KEY=VALUE",
                        help="a provisioner.toml key for `serve` (integers as such), e.g. tftp_max_sessions_per_client=64")
    parser.add_argument("--serve", nargs=4, metavar=("KIND", "ROOT", "PORT", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, root, port, data = args.serve
        if kind == "stock":
            serve_stock_tftpy(root, int(port))
        else:
            serve_component(root, int(port), data, dict(args.set))
        return
    if shutil.which("in.tftpd") is None or shutil.which("curl") is None:
        sys.exit("needs in.tftpd (Debian tftpd-hpa) and curl: apt-get install -y tftpd-hpa curl")
    if os.geteuid() != 0:
        sys.exit("run as root: in.tftpd chroots into its directory (-s) and drops to nobody")

    size = int(args.size_mb * MB)
    work = Path(tempfile.mkdtemp(prefix="tftp-bench-"))
    work.chmod(0o755)  # in.tftpd drops to nobody after chroot
    servers: list = []
    try:
        ours_root, hpa_root = work / "root", work / "hpa-root"
        ours_root.mkdir()
        (hpa_root / "pxelinux.cfg").mkdir(parents=True)
        (ours_root / "big.bin").write_bytes(os.urandom(size))
        (ours_root / "probe").write_bytes(PROBE)
        for name in ("big.bin", "probe"):
            os.link(ours_root / name, hpa_root / name)
        ports = [free_udp_port() for _ in range(5)]
        config_file, payloads = prepare_ours(work, ours_root, ports[1], dict(args.set))
        for i, payload in enumerate(payloads):
            (hpa_root / tftp_storm.config_name(i)).write_bytes(payload)
        for path in (hpa_root, hpa_root / "pxelinux.cfg", ours_root):
            path.chmod(0o755)
        for path in hpa_root.rglob("*"):
            if path.is_file():
                path.chmod(0o644)

        me = [sys.executable, str(Path(__file__).resolve()), "--serve"]
        servers = [
            Server("tftp-hpa", ["in.tftpd", "-L", "-s", str(hpa_root), "-a", f"127.0.0.1:{ports[0]}",
                                "-u", "nobody", "-B", str(args.blksize)], ports[0]),
            Shipped("ours (serve)", config_file, work, ports[1]),
        ]
        if args.new_session:
            setsid_config = shipped.write_config(
                work / "setsid.toml", data_dir=work / "setsid-data", tftp_root=ours_root, bind_address="127.0.0.1",
                tftp_port=ports[4], http_port=shipped.free_port(), **dict(args.set))
            servers.append(Shipped("ours, setsid", setsid_config, work, ports[4], new_session=True))
        if args.component:
            servers.append(Server("ours, component", me + ["component", str(ours_root), str(ports[2]),
                                                           str(work / "component-data")]
                                  + [f"--set={key}={value}" for key, value in args.set], ports[2]))
        if args.stock:
            servers.append(Server("tftpy stock", me + ["stock", str(ours_root), str(ports[3]), ""], ports[3]))
        for server in servers:
            server.start()
            verify(server, ours_root / "big.bin", args.blksize)

        busy0 = machine_busy_seconds()
        time.sleep(2.0)
        background = (machine_busy_seconds() - busy0) / 2.0 / (os.cpu_count() or 1)
        if not args.no_throughput:
            results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
            for i in range(args.rounds):
                for server in servers[i % len(servers):] + servers[:i % len(servers)]:  # rotate the order
                    results[server.name].append(round_once(server, args.clients, size, args.blksize,
                                                           args.one_address))
            report(results, args, size, background)
        if not args.no_storm:
            storms(servers[:2], args)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, size: int,
           background: float) -> None:
    total_gb, blocks = args.clients * size / 1e9, args.clients * size / args.blksize
    print(f"TFTP throughput: {args.clients} concurrent curl clients "
          f"({'all from 127.0.0.1' if args.one_address else 'one loopback address each'}) x {args.size_mb:g} "
          f"MiB at blksize {args.blksize}, {os.cpu_count()} CPUs ({background:.0%} busy before the run, "
          f"load {os.getloadavg()[0]:.1f} after), {args.rounds} interleaved rounds")
    ref_rows = results["tftp-hpa"]
    ref = statistics.median(r["rate"] for r in ref_rows)
    print(f"{'server':<16}{'MB/s median':>12}{'min':>7}{'max':>7}{'vs hpa':>8}{'paired (min-max)':>19}"
          f"{'CPU s/GB: server':>18}{'(main)':>8}{'clients':>9}{'machine':>9}{'IPIs/block':>12}"
          f"{'preempted/block':>17}")

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    for name, rows in results.items():
        rates = [r["rate"] for r in rows]
        paired = [r["rate"] / h["rate"] for r, h in zip(rows, ref_rows)]
        spread = f"({min(paired):.2f}-{max(paired):.2f})"
        print(f"{name:<16}{med(rows, 'rate'):>12.1f}{min(rates):>7.1f}{max(rates):>7.1f}"
              f"{med(rows, 'rate') / ref:>7.2f}x{statistics.median(paired):>7.2f}x {spread}"
              f"{med(rows, 'server') / total_gb:>18.2f}{med(rows, 'main') / total_gb:>8.3f}"
              f"{med(rows, 'client') / total_gb:>9.2f}"
              f"{med(rows, 'machine') / total_gb:>9.2f}{med(rows, 'ipis') / blocks:>12.2f}"
              f"{med(rows, 'preempted') / blocks:>17.3f}")
    ours = results["ours (serve)"]
    ratio = med(ours, "rate") / ref
    paired = statistics.median(r["rate"] / h["rate"] for r, h in zip(ours, ref_rows))
    ahead = sum(r["rate"] >= h["rate"] for r, h in zip(ours, ref_rows))
    print(f"ours (serve) ahead of the tftp-hpa round next to it in {ahead} of {len(ref_rows)} rounds")
    met = ratio >= 1.0 and paired >= 1.0
    print(f"ours (serve) / tftp-hpa = {ratio:.3f}x median, {paired:.3f}x paired (target >= 1.00x both): "
          f"{'MET' if met else 'NOT MET'}")


def storms(servers: list, args: argparse.Namespace) -> None:
    print(f"\nper-MAC storm: {args.storm_requests} requests for pxelinux.cfg/01-<mac> of {HOSTS} registered hosts "
          f"({ARMED} armed), pxelinux-style (tsize, blksize {args.blksize}); "
          f"{'serve settings ' + str(dict(args.set)) if args.set else 'default caps'}; unanswered = nothing for 5 s")
    print(f"{'clients':>8} {'from':<16}{'server':<16}{'served':>8}{'refused':>9}{'unanswered':>11}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'wall s':>8}")
    unanswered = 0
    for concurrency in (64, 256):
        for many in (True, False):
            for server in servers:
                r = tftp_storm.storm(("127.0.0.1", server.port), HOSTS, concurrency, args.storm_requests,
                                     many_addresses=many, blksize=args.blksize)
                if server.name.startswith("ours"):
                    unanswered += r.unanswered
                print(f"{concurrency:>8} {'250 addresses' if many else 'one address':<16}{server.name:<16}"
                      f"{r.served:>8}{r.refused:>9}{r.unanswered:>11}{r.pct(50) * 1e3:>9.2f}{r.pct(99) * 1e3:>9.2f}"
                      f"{max(r.latencies or [float('nan')]) * 1e3:>9.2f}{r.wall:>8.2f}"
                      + (f"  errors: {r.errors}" if r.errors else ""))
    print(f"ours (serve): {unanswered} unanswered requests (target 0): {'MET' if unanswered == 0 else 'NOT MET'}")


if __name__ == "__main__":
    main()
