"""The `provisioner serve` lab shared by the test modules: a simulated pool (POOL, media MEDIA) and its PXE machines
in this process, and `provisioner serve` started (and killed) as subprocesses on one data dir.

- `make_serve_lab` / `ServeLab`: ports chosen up front, the pool registered and discovered; `start_serve`, `kill`.
- `Machines`: lets the machines fetch only while a server is up, and tells when none is mid-fetch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from helpers import API_TOKEN
from labs import MEDIA, POOL
import sim_tls
from provisioner import media, registry
from provisioner.coordinator import pools
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.boot_handler import make_boot_handler
from provisioner.simulator.machine import EV_INSTALLING
from provisioner.simulator.world import World
from provisioner.store import Store

SERVE_PASSWORD = "kill-test-pw"
"""The pool password of a ServeLab."""


class Machines:
    """Lets the simulated machines fetch only while a server is up, and tells when none is mid-fetch."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.cond = threading.Condition()
        self.up = False
        self.busy: dict[int, bool] = {}  # machine thread -> may be in a fetch right now
        self.trace: list[tuple] = []  # (time, what, ...) for the failure message

    def _park(self) -> None:
        with self.cond:
            self.busy[threading.get_ident()] = False
            self.cond.notify_all()
            while not self.up:
                self.cond.wait()
            self.busy[threading.get_ident()] = True

    def on_event(self, kind: str, mac: str, details: dict) -> None:
        """Each machine event comes before the next fetch: wait there while no server is up."""
        self.trace.append((round(time.monotonic(), 3), kind, mac[-2:], {k: v for k, v in details.items()
                                                                       if k in ("what", "status", "outcome")}))
        if kind == EV_INSTALLING:  # the install sleep follows, then the complete-script fetch
            with self.cond:
                self.busy[threading.get_ident()] = False
                self.cond.notify_all()
            return
        self._park()

    def sleep(self, sim_seconds: float) -> None:
        """The machines' clock: the install sleep, then wait for a server before the next fetch."""
        with self.cond:
            self.busy[threading.get_ident()] = False
            self.cond.notify_all()
        self.clock.sleep(sim_seconds)
        self._park()

    def power_cycle(self, handler):
        def run(mac: str):
            try:
                return handler(mac)
            finally:
                with self.cond:
                    self.busy.pop(threading.get_ident(), None)
                    self.cond.notify_all()
        return run

    def server_down(self) -> None:
        """Stop new fetches and wait until none is in flight."""
        self.trace.append((round(time.monotonic(), 3), "server down"))
        with self.cond:
            self.up = False
            while any(self.busy.values()):
                self.cond.wait()

    def server_up(self) -> None:
        self.trace.append((round(time.monotonic(), 3), "server up"))
        with self.cond:
            self.up = True
            self.cond.notify_all()



@dataclass
class ServeLab:
    """A simulated pool in this process, and `provisioner serve` subprocesses on one data dir."""

    tmp: Path
    config: object
    store: Store
    world: World
    sim: object
    handler: object
    machines: Machines
    config_file: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    outputs: list[Path] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.config.http_port}/api/v1"

    def start_serve(self) -> None:
        self.starts += 1
        out = self.tmp / f"serve-{self.starts}.log"
        self.outputs.append(out)
        with open(out, "wb") as handle:
            self.proc = subprocess.Popen([sys.executable, "-m", "provisioner", "--config", str(self.config_file),
                                          "serve"], stdout=handle, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1",
                                              "PROVISIONER_ALLOW_ROOT": "1"})  # tests run as root
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, out.read_text()
            try:
                if requests.get(f"{self.api}/runs", headers=self.auth, timeout=2).status_code == 200:
                    self.machines.server_up()
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve did not come up: {out.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.machines.server_down()
        self.proc.send_signal(sig)
        return self.proc.wait(60)

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {API_TOKEN}"}

    def output(self) -> str:
        return "".join(p.read_text() for p in self.outputs)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(60)
        self.handler.stop()
        self.sim.stop()
        self.store.close()


def make_serve_lab(tmp_path: Path, hosts: int = 3, speed: float = 100.0) -> ServeLab:
    """Ports chosen up front, the pool registered (password encrypted, key file in data_dir) and discovered."""
    config = demo_config(tmp_path).replace(api_token=API_TOKEN, upgrade_poll_ms=50)
    config_file = tmp_path / "provisioner.toml"
    config_file.write_text("".join(f'{k} = "{getattr(config, k)}"\n' for k in (
        "data_dir", "bind_address", "tftp_root", "public_url", "api_token"))
        + f"http_port = {config.http_port}\ntftp_port = {config.tftp_port}\npxelinux_http = true\n"
        "upgrade_poll_ms = 50\n")
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    world = new_world(Clock(speed))
    build_pool(world, POOL, hosts=hosts, version="8.2.1", vms_per_host=1)
    machines = Machines(world.clock)
    handler = make_boot_handler(("127.0.0.1", config.tftp_port), clock=machines,
                                http_base=f"http://127.0.0.1:{config.http_port}", on_event=machines.on_event,
                                boot_order="bios-network-first")  # a PXE-first site
    world.boot_handler = machines.power_cycle(handler)
    sim = serve_world(world)
    pools.add_pool(store, POOL, sim.master_url(), "root", SERVE_PASSWORD, **sim_tls.trust(sim))
    driver = pools.connect(store, POOL, timeout=5)
    pools.discover(store, POOL, driver)
    driver.close()
    for h in store.list_hosts(pool=POOL):
        registry.update_host(store, h.mac, {"disk": f"/dev/disk/by-id/scsi-{h.name}"})
    return ServeLab(tmp_path, config, store, world, sim, handler, machines, config_file)
