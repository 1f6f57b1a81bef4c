"""HTTP throughput bench (issue 3, target b): N concurrent clients download a 100 MB install.img, ours vs nginx.

Not a test: run it by hand (root, for nginx) and paste the table into the README:

    python bench/http_bench.py                  # ours (provisioner.web.server + the real app) vs nginx
    python bench/http_bench.py --candidates     # also ours with one loop, stock waitress, cheroot, gunicorn

Needs the Debian packages `nginx` (or `nginx-light`) and `curl`. Clients are `curl -o /dev/null`
processes (C, so the server, not the client, is what is measured); each round starts all N at once and
times until the last one finishes; the servers are measured in alternation, rounds interleaved, and the
median round is reported, with the CPU time the server process tree used per GB (steadier than MB/s
when something else runs on the machine). Everything listens on 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def make_tree(work: Path, size_mb: int) -> Path:
    """A media tree with a random (incompressible) install.img and a tftp_root beside it."""
    tree = work / "media" / "xs84"
    tree.mkdir(parents=True)
    (tree / ".treeinfo").write_text("[system-v1]\nproduct_version = 8.4.0\n")
    with open(tree / "install.img", "wb") as f:
        for _ in range(size_mb):
            f.write(os.urandom(MB))
    (work / "tftp_root").mkdir()
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children (nginx workers), from /proc; 0.0 where unreadable."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            pass
    return total


def round_mbps(url: str, clients: int, size: int) -> float:
    """Start `clients` curls at once; aggregate MB/s until the last one is done. Checks every byte count."""
    start = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}", url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(clients)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0 or int(out or 0) != size:
            raise RuntimeError(f"{url}: curl exit {p.returncode}, got {out} bytes of {size}: {err.strip()}")
    elapsed = time.perf_counter() - start
    return clients * size / MB / elapsed


# --- servers: each is a context (start() -> url of install.img, stop()) ---

class Nginx:
    name = "nginx"

    def __init__(self, work: Path, tree: Path):
        self.work, self.tree, self.proc = work / "nginx", tree, None

    def start(self) -> str:
        if not shutil.which("nginx"):
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
        self.work.mkdir(exist_ok=True)
        port = free_port()
        conf = self.work / "nginx.conf"
        tmp = self.work / "tmp"
        # The stock Debian settings for static files: sendfile + tcp_nopush, one worker per core.
        conf.write_text(textwrap.dedent(f"""\
            worker_processes auto;
            daemon off;
            pid {self.work}/nginx.pid;
            error_log {self.work}/error.log;
            events {{ worker_connections 1024; }}
            http {{
                access_log off;
                sendfile on;
                tcp_nopush on;
                client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
                uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
                types {{ application/octet-stream img; }}
                server {{
                    listen 127.0.0.1:{port};
                    location /media/xs84/ {{ alias {self.tree}/; }}
                }}
            }}
        """))
        tmp.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(self.work)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(port, self.proc)
        return f"http://127.0.0.1:{port}/media/xs84/install.img"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: workers exit, then the master
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PythonServer:
    """Our app under a server, in a child process (so the bench's own Python does not share its GIL)."""

    def __init__(self, name: str, work: Path, tree: Path, threads: int):
        self.name, self.work, self.tree, self.threads, self.proc = name, work, tree, threads, None

    def start(self) -> str:
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", self.name, "--port", str(port), "--work", str(self.work),
             "--tree", str(self.tree), "--threads", str(self.threads)],
            stdout=subprocess.DEVNULL, stderr=open(self.work / f"{self.name}.log", "w"))
        wait_listening(port, self.proc)
        return f"http://127.0.0.1:{port}/media/xs84/install.img"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def build_app(work: Path, tree: Path):
    from provisioner.config import load_config
    from provisioner.model import Media
    from provisioner.store import Store
    from provisioner.web.app import create_app

    config = load_config(file=None, environ={}, overrides={
        "data_dir": work / "data", "tftp_root": work / "tftp_root", "bind_address": "127.0.0.1"})
    store = Store(config.db_path)
    if store.get_media("xs84") is None:
        store.add_media(Media(name="xs84", path=str(tree), product_name="XenServer", product_version="8.4.0",
                              platform_version="3.4.0", build=None))
    return create_app(config, store=store)


def child(args: argparse.Namespace) -> None:
    """Run one candidate server in this process until SIGTERM."""
    app = build_app(Path(args.work), Path(args.tree))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.child in ("ours", "ours-1loop"):
        from provisioner.web.server import serve_http

        loops = 1 if args.child == "ours-1loop" else None
        handle = serve_http(app, "127.0.0.1", args.port, threads=args.threads, loops=loops)
        try:
            signal.pause()
        finally:
            handle.stop()
    elif args.child == "waitress-stock":
        import waitress

        waitress.serve(app, host="127.0.0.1", port=args.port, threads=args.threads, _quiet=True)
    elif args.child == "cheroot":
        from cheroot import wsgi

        server = wsgi.Server(("127.0.0.1", args.port), app, numthreads=args.threads)
        try:
            server.start()
        finally:
            server.stop()
    elif args.child == "gunicorn":
        from gunicorn.app.base import BaseApplication

        class App(BaseApplication):
            def load_config(self):
                self.cfg.set("bind", f"127.0.0.1:{args.port}")
                self.cfg.set("workers", os.cpu_count() or 2)
                self.cfg.set("worker_class", "gthread")
                self.cfg.set("threads", max(1, args.threads // (os.cpu_count() or 2)))

            def load(self):
                return app

        App().run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=16, help="worker threads of the Python servers")
    parser.add_argument("--candidates", action="store_true", help="also stock waitress, cheroot, gunicorn")
    parser.add_argument("--only", help="comma-separated subset of server names to run (nginx always runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if not shutil.which("curl"):
        sys.exit("curl is not installed (apt-get install -y curl)")

    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx workers run as an unprivileged user and must read the tree
        tree = make_tree(work, args.size_mb)
        build_app(work, tree)  # create the DB once, before the children share it
        servers = [PythonServer("ours", work, tree, args.threads), Nginx(work, tree)]
        if args.candidates:
            import importlib.util

            servers += [PythonServer(name, work, tree, args.threads)
                        for name, module in (("ours-1loop", "waitress"), ("waitress-stock", "waitress"),
                                             ("cheroot", "cheroot"), ("gunicorn", "gunicorn"))
                        if importlib.util.find_spec(module)]
        if args.only:
            keep = set(args.only.split(",")) | {"nginx", "ours"}
            servers = [s for s in servers if s.name in keep]
        size = args.size_mb * MB
        results: dict[str, list[float]] = {s.name: [] for s in servers}
        cpu: dict[str, float] = {s.name: 0.0 for s in servers}
        urls = {}
        try:
            for server in servers:
                urls[server.name] = server.start()
                round_mbps(urls[server.name], 1, size)  # warm the page cache and the server
            for _ in range(args.rounds):
                for server in servers:
                    before = tree_cpu_seconds(server.proc.pid)
                    results[server.name].append(round_mbps(urls[server.name], args.clients, size))
                    cpu[server.name] += tree_cpu_seconds(server.proc.pid) - before
        finally:
            for server in servers:
                server.stop()

    print(f"HTTP: {args.clients} concurrent clients x {args.size_mb} MB install.img, loopback, "
          f"{os.cpu_count()} CPUs, median of {args.rounds} rounds")
    ref = statistics.median(results["nginx"])
    # CPU seconds the server spent per GB sent: less sensitive than MB/s to other load on the machine.
    gigabytes = args.rounds * args.clients * size / (1 << 30)
    print(f"{'server':<16}{'MB/s (median)':>14}{'min':>8}{'max':>8}{'vs nginx':>10}{'CPU s/GB':>10}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<16}{med:>14.0f}{min(values):>8.0f}{max(values):>8.0f}{med / ref:>9.2f}x"
              f"{cpu[name] / gigabytes:>10.3f}")
    ours = statistics.median(results["ours"]) / ref
    print(f"ours / nginx = {ours:.2f}x (target >= 0.90x): {'MET' if ours >= 0.9 else 'NOT MET'}")


if __name__ == "__main__":
    main()
