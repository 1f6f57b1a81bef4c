"""Acceptance (issue 21): `kill -9` of a real `provisioner serve` in the middle of a wave of 4, then a new `serve`
resumes the run: every host of the wave goes on from its own committed step and is installed exactly once.

The simulated pool and its PXE machines live in this process (serve_lab.py); `serve` is a subprocess on the same
SQLite file, started over REST with `parallel: 4`."""

from __future__ import annotations

import signal
import time

import requests
from labs import MEDIA, POOL
from serve_lab import make_serve_lab

from provisioner import states

DEADLINE = 600.0  # real seconds: a bound, never an expectation


def test_kill_9_in_the_middle_of_a_wave_of_four_then_resume(tmp_path):
    lab = make_serve_lab(tmp_path, hosts=5)
    try:
        lab.start_serve()
        started = requests.post(f"{lab.api}/pools/{POOL}/upgrade", json={"media": MEDIA, "parallel": 4},
                                headers=lab.auth, timeout=30)
        assert started.status_code == 202, started.text
        run_id = started.json()["run"]["id"]
        deadline = time.monotonic() + DEADLINE
        while True:  # the wave is in flight: a member waits for its install, none of the wave is done
            assert time.monotonic() < deadline, lab.output()[-3000:]
            steps = {h.name: h.step for h in lab.store.run_hosts(run_id) if h.role != "master"}
            if states.STEP_WAIT_UP in steps.values() and states.STEP_DONE not in steps.values():
                break
            assert lab.store.get_run(run_id).state not in states.RUN_TERMINAL, lab.output()[-3000:]
            time.sleep(0.01)
        assert lab.kill() == -signal.SIGKILL
        at_kill = {h.name: h.step for h in lab.store.run_hosts(run_id)}
        lab.start_serve()
        while lab.store.get_run(run_id).state not in states.RUN_TERMINAL:
            assert time.monotonic() < deadline, lab.output()[-3000:]
            time.sleep(0.1)
        final = lab.store.get_run(run_id)
        assert final.state == states.RUN_DONE, (final.reason, at_kill)
        assert "resuming upgrade run " + run_id in lab.output()
        resumed = [e["details"]["steps"] for e in lab.store.events(run_id=run_id, kind="wave.start")]
        assert len(resumed) == 2 and resumed[1] == {k: v for k, v in at_kill.items() if k != "lab-host0"}, at_kill
        for h in lab.world.pools[POOL].hosts:
            assert lab.handler.machine(h.mac).installs() == 1, (h.name, at_kill)
            reboots = [c for c in lab.world.call_log if c[1] == "host.reboot" and h.ref in c[2]]
            assert len(reboots) == 1, (h.name, at_kill)
    finally:
        lab.stop()
