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
import signal
import threading
import time
from pathlib import Path

import requests
from labs import MEDIA, POOL
from serve_lab import ServeLab, make_serve_lab

from provisioner import states
from provisioner.store import Store

DEADLINE = 600.0  # real seconds for the whole upgrade with every kill: a bound, never an expectation


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
        steps = [s for s in states.HOST_STEPS  # POWER_ON: only with --power-cycle; CONVERGE: with --updates
                 if s not in (states.STEP_PENDING, states.STEP_FAILED, states.STEP_POWER_ON, states.STEP_CONVERGE)]
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
