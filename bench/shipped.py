"""The shipped process for the benches: `python -m provisioner --config FILE serve`, started as an operator starts
it (a config file, a data dir prepared beforehand), in the bench's own session (the same scheduler autogroup as
the reference server and the clients, so neither side gets a CPU share of its own), stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, **keys: object) -> Path:
    """A provisioner.toml holding `keys` (str, Path, int, bool values), as an operator writes one."""
    lines = []
    for key, value in keys.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return path


class Serve:
    """`provisioner serve` from `config_file`; start() returns once it announced its ports (or raises)."""

    def __init__(self, config_file: Path, work: Path, tree: Path | None = None, new_session: bool = False):
        self.config_file, self.work, self.tree, self.new_session = config_file, work, tree or ROOT, new_session
        self.proc: subprocess.Popen | None = None
        self.errors_path = work / "serve.err"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Serve":
        env = {**os.environ, "PYTHONPATH": str(self.tree)}
        env.pop("PROVISIONER_CONFIG", None)
        errors = open(self.errors_path, "w+")
        # the bench runs as root; trees older than `serve --allow-root` did not refuse it (nor know the flag)
        allow = ["--allow-root"] if "allow_root" in (self.tree / "provisioner" / "config.py").read_text() else []
        self.proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--config", str(self.config_file), "serve",
                                      *allow],
                                     env=env, stdout=subprocess.PIPE, stderr=errors, text=True, cwd=self.work,
                                     start_new_session=self.new_session)
        line = self.proc.stdout.readline()
        if "HTTP on" not in line:
            self.stop()
            raise RuntimeError(f"serve did not start: {line!r} {self.errors_path.read_text()[:2000]}")
        return self

    def stop(self) -> list[str]:
        """SIGTERM, wait; the last lines serve wrote to stderr."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()
        try:
            return self.errors_path.read_text().strip().splitlines()[-5:]
        except OSError:
            return []

    def __enter__(self) -> "Serve":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
