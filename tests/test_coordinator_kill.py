"""Acceptance: `kill -9` of a real `provisioner serve` at every host step boundary of a 3-host upgrade.

The simulated pool and its PXE machines live in this process; `serve` is a subprocess on the same SQLite file.
Deterministic kills: every XAPI call reaches the simulator's call log first, and the gate there holds a call
while a step commit in the database has not been seen by the test yet. Each step re-reads the pool before it
acts, so right after a commit the server sits in that held read: the test kills it there (nothing of the step
done yet), releases the gate, and starts `serve` again, which must resume the run from that committed step.
The machines only fetch over TFTP/HTTP while a server is up (a PXE firmware retries while the server restarts);
the test kills only when no fetch is in flight, so the boots themselves never see a half-dead server.
"""

from __future__ import annotations

import collections
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

from provisioner import media, registry, states
from provisioner.coordinator import pools
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.simulator.builder import build_pool, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.machine import EV_INSTALLING, make_boot_handler
from provisioner.simulator.world import World
from provisioner.store import Store

POOL, MEDIA = "lab", "xs84"
PASSWORD = "kill-test-pw"
DEADLINE = 600.0  # real seconds for the whole upgrade with every kill: a bound, never an expectation


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


class Gate:
    """Holds every XAPI call while a step commit the test has not acknowledged is in the database."""

    def __init__(self, db_path: Path):
        self.store = Store(db_path, migrate=False)
        self.acked = 0
        self.held = threading.Event()
        self.released = threading.Event()
        self.lock = threading.Lock()

    def commits(self) -> list[dict]:
        return [e for e in self.store.events(since_id=self.acked, limit=100_000)
                if e["kind"].startswith("step.") and e["kind"] != "step.skipped"]

    def hold(self) -> None:
        while not self.released.is_set():
            with self.lock:
                if not self.commits():
                    return
                self.held.set()
            time.sleep(0.005)

    def ack(self, upto: int) -> None:
        with self.lock:
            self.acked = upto
            self.held.clear()


class GatedCallLog(list):
    """The simulator's call log; every XAPI call is appended first, so the gate sees each one before it runs."""

    def __init__(self, gate: Gate):
        super().__init__()
        self.gate = gate

    def append(self, item) -> None:
        self.gate.hold()
        super().append(item)


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
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
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
    world = World(Clock(speed))
    build_pool(world, POOL, hosts=hosts, version="8.2.1", vms_per_host=1)
    machines = Machines(world.clock)
    handler = make_boot_handler(("127.0.0.1", config.tftp_port), clock=machines,
                                http_base=f"http://127.0.0.1:{config.http_port}", on_event=machines.on_event)
    world.boot_handler = machines.power_cycle(handler)
    sim = serve_world(world)
    pools.add_pool(store, POOL, sim.master_url(), "root", PASSWORD)
    driver = pools.connect(store, POOL, timeout=5)
    pools.discover(store, POOL, driver)
    driver.close()
    for h in store.list_hosts(pool=POOL):
        registry.update_host(store, h.mac, {"disk": f"/dev/disk/by-id/scsi-{h.name}"})
    return ServeLab(tmp_path, config, store, world, sim, handler, machines, config_file)


def destructive_calls(lab: ServeLab, run_id: str) -> collections.Counter:
    """(host, method) -> successful destructive XAPI calls, from the run's `xapi.call` events."""
    return collections.Counter((e["details"]["host"], e["details"]["method"])
                               for e in lab.store.events(run_id=run_id, kind="xapi.call", limit=100_000)
                               if e["details"].get("ok"))


def test_kill_9_at_every_host_step_boundary(tmp_path):
    lab = make_serve_lab(tmp_path)
    gate = Gate(lab.config.db_path)
    lab.world.call_log = GatedCallLog(gate)
    try:
        lab.start_serve()
        started = requests.post(f"{lab.api}/pools/{POOL}/upgrade", json={"media": MEDIA}, headers=lab.auth,
                                timeout=30)
        assert started.status_code == 202, started.text
        run_id = started.json()["run"]["id"]
        killed: list[tuple[str, str]] = []
        deadline = time.monotonic() + DEADLINE
        while lab.store.get_run(run_id).state not in states.RUN_TERMINAL:
            assert time.monotonic() < deadline, f"run stuck; killed at {killed}\n{lab.output()[-3000:]}"
            if not gate.held.wait(0.05):
                continue
            commits = gate.commits()  # the server is inside its first XAPI read after these commits
            assert lab.kill() == -signal.SIGKILL
            killed += [(e["details"]["host"], e["kind"][len("step."):]) for e in commits]
            gate.ack(commits[-1]["id"])
            lab.start_serve()
        gate.released.set()
        final = lab.store.get_run(run_id)
        boots = {h.name: lab.handler.boots(h.mac) for h in lab.world.pools[POOL].hosts}
        assert final.state == states.RUN_DONE, (final.reason, killed, boots, lab.machines.trace)
        hosts = [h.name for h in lab.world.pools[POOL].hosts]
        steps = [s for s in states.HOST_STEPS if s not in (states.STEP_PENDING, states.STEP_FAILED)]
        for name in hosts:  # every boundary of every host saw a kill -9 and a restart
            # (after the last host's `done` the run may end with no XAPI call left to hold)
            expected = (steps, steps[:-1]) if name == hosts[-1] else (steps,)
            assert [s for h, s in killed if h == name] in expected, (name, killed)
        kills = lab.starts - 1  # a `done` and the next host's `check` are committed with no XAPI call between
        assert len(killed) >= kills >= len(killed) - len(hosts)
        assert "resuming upgrade run " + run_id in lab.output()
        for h in lab.world.pools[POOL].hosts:
            assert lab.handler.machine(h.mac).installs() == 1, h.name
            reboots = [c for c in lab.world.call_log if c[1] == "host.reboot" and h.ref in c[2]]
            assert len(reboots) == 1, h.name
        calls = destructive_calls(lab, run_id)
        for name in hosts:
            for method in ("host.disable", "host.evacuate", "host.reboot"):
                assert calls[(name, method)] == 1, (name, method, calls)
            assert calls[(name, "host.enable")] <= 1
        assert not [c for c in calls if calls[c] > 1]
        versions = {lab.world.pools[POOL].db.get("host", h.ref)["software_version"]["product_version"]
                    for h in lab.world.pools[POOL].hosts}
        assert versions == {"8.4.0"}
        print(f"\n{kills} kill -9 + restarts of serve at {len(killed)} step boundaries")
    finally:
        gate.released.set()
        gate.store.close()
        lab.stop()
