"""Scenario 4 (issue 8): a rolling pool upgrade by the coordinator, every host's network boot a real QEMU boot.

The XAPI simulator (in this process, on loopback) plays a 3-host XenServer 8.2.1 pool whose hosts have the
QEMU VMs' MACs; the coordinator's Runner upgrades it to the lab's media (8.4.0, build e2e) through the real
XenAPI client. Each host.reboot hands the host's power cycle to tests/support/power_cycle.py, which boots a VM with
that MAC in the lab (iPXE -> pxelinux -> mboot.c32 -> Xen -> dom0 -> the installer stand-in) against
`provisioner serve`, then boots it again the way the installer's reboot does (it must boot locally); the host
comes back at the version the stand-in read from the media only when it fetched the answer file and ran both
scripts with exit 0. Prints, per boot, seconds from power-on to the answer-file GET and TFTP vs HTTP bytes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import e2e_lab
import power_cycle
from provisioner import output, states
from provisioner.config import load_config
from provisioner.coordinator import pools
from provisioner.coordinator.report import run_report as report
from provisioner.coordinator.runner import Runner, start_run
from provisioner.coordinator.steps import Timeouts
from provisioner.model import BOOT_INSTALLER, BOOT_LOCAL
from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.boot_handler import make_boot_handler

pytestmark = pytest.mark.e2e

POOL, MEDIA, PASSWORD = "e2e-rolling", "xs84", "e2e-rolling-pw"
MACS = ["52:54:00:e2:e1:01", "52:54:00:e2:e1:02", "52:54:00:e2:e1:03"]  # host 0 is the pool master
SPEED = 60.0  # sim seconds per wall second: XAPI's own delays (reboot, xapi start) take seconds, not minutes
INSTALL_WALL, LOCAL_WALL = 300, 120  # wall seconds an install boot / a local boot may take (loaded CI runner)
CYCLE_WALL = INSTALL_WALL + 2 * LOCAL_WALL + 60  # a power cycle: install boot, local boot (a reinstall: 3 boots)
# On the simulator's clock: a real boot lasts about a minute of wall time, i.e. an hour of sim time.
# host_up: after its installer reports, a QEMU host still runs its local boot (up to LOCAL_WALL wall seconds on a
# loaded runner), far more than the field's 20 minutes at SPEED
TIMEOUTS = Timeouts(down=900, up=SPEED * CYCLE_WALL, enable=1800, poll=30, host_up=SPEED * (2 * LOCAL_WALL + 60))


@pytest.fixture
def rolling(lab):
    """The simulated pool, its hosts registered in the lab's store, and the QEMU external boot command."""
    workdir = lab.workdir / "rolling"
    workdir.mkdir()
    world = new_world(Clock(SPEED))
    build_pool(world, POOL, hosts=len(MACS), version="8.2.1", vms_per_host=1, macs=MACS)
    command = [sys.executable, str(Path(power_cycle.__file__).resolve()), "--netns", e2e_lab.NETNS,
               "--workdir", str(workdir), "--install-timeout", str(INSTALL_WALL), "--local-timeout", str(LOCAL_WALL)]
    # The boot order here is the QEMU VM's own (power_cycle.py): an external command takes the whole power cycle
    # and the simulated Machine's boot order is never consulted (machine.Machine._external).
    handler = make_boot_handler((e2e_lab.SERVER_IP, 69), external_command=command,
                                firmware={mac: "bios" for mac in MACS})
    world.boot_handler = handler
    sim = serve_world(world)
    store, driver = lab.store(), None
    try:
        pools.add_pool(store, POOL, sim.master_url(), "root", PASSWORD, fingerprint=sim.master_fingerprint())
        driver = pools.connect(store, POOL, timeout=10)
        found = pools.discover(store, POOL, driver)
        assert sorted(found.added) == [f"{POOL}-host{i}" for i in range(len(MACS))], found
        for host in store.list_hosts(pool=POOL):
            store.update_host(host.mac, {"disk": "/dev/disk/by-id/scsi-e2e-" + host.name})
        yield SimpleNamespace(store=store, driver=driver, handler=handler, world=world, workdir=workdir)
    finally:
        if driver is not None:
            driver.close()
        handler.stop()
        sim.stop()
        e2e_lab.kill_leftover_vms(workdir)
        store.close()


def _cycles(workdir: Path) -> list[dict]:
    path = power_cycle.records_file(workdir)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _print_boots(lab, cycles: list[dict]) -> dict[str, dict]:
    """Per boot: seconds to the answer-file GET and TFTP / HTTP bytes, from the server's events during it."""
    events = lab.events()
    numbers = {}
    for cycle in cycles:
        for boot in cycle["boots"]:
            during = [e for e in events if boot["started"] - 0.5 <= e2e_lab.event_ts(e) <= boot["ended"] + 0.5]
            console = Path(boot["console_log"]).read_text(errors="replace")
            label = f"rolling {boot['name']} ({boot['outcome']}, {boot['ended'] - boot['started']:.1f} s)"
            numbers[boot["name"]] = e2e_lab.boot_numbers(during, cycle["mac"], boot["started"], console, label)
    return numbers


def test_rolling_upgrade_master_first_each_host_installs_once(lab, rolling):
    store, driver, handler, workdir = rolling.store, rolling.driver, rolling.handler, rolling.workdir
    media = store.get_media(MEDIA)
    run = start_run(store, POOL, MEDIA, driver)
    started = time.time()
    # the Runner runs outside the lab's namespace, where public_url (10.77.0.1) is unreachable: docs/lab.md
    runner_config = load_config(file=None, environ={**lab.env, "PROVISIONER_BOOT_SELF_CHECK": "false"})
    final = Runner(store, runner_config, run.id, driver, clock=rolling.world.clock,
                   timeouts=TIMEOUTS, say=lambda line: print(f"[e2e] rolling: {line}", flush=True)).run()
    print(f"\n[e2e] rolling upgrade of {len(MACS)} hosts: {time.time() - started:.1f} s wall")
    after = {h.mac: h for h in driver.hosts()}
    run_report = report(store, run.id)
    print(output.run_report(run_report))
    cycles = _cycles(workdir)
    numbers = _print_boots(lab, cycles)
    for mac in MACS:
        print(f"[e2e] attempts of {mac}:\n{lab.cli('hosts', 'attempts', mac)}")

    # Every host verified by the coordinator at the media's version and build.
    assert final.state == states.RUN_DONE, (final.reason, run_report)
    assert [(h["mac"], h["role"], h["step"]) for h in run_report["hosts"]] == [
        (MACS[0], "master", states.STEP_DONE)] + [(mac, "member", states.STEP_DONE) for mac in MACS[1:]]
    for mac in MACS:
        assert (after[mac].product_version, after[mac].build_number) == (media.product_version, media.build)
        assert after[mac].enabled and after[mac].live
        assert len(store.events(run_id=run.id, mac=mac, kind="step.verify")) == 1

    # Master first, then one member at a time: each reboot only after the previous host was done, and the
    # VMs' power cycles one after the other, in that order.
    step_ts = {(e["mac"], e["kind"]): e2e_lab.event_ts(e) for e in store.events(run_id=run.id, limit=100_000)}
    assert [e["mac"] for e in store.events(run_id=run.id, kind="step.reboot")] == MACS
    for before, nxt in zip(MACS, MACS[1:]):
        assert step_ts[(before, "step.done")] <= step_ts[(nxt, "step.reboot")]
    assert [c["mac"] for c in cycles] == MACS
    for earlier, later in zip(cycles, cycles[1:]):
        assert earlier["boots"][-1]["ended"] <= later["boots"][0]["started"]

    # Each host booted the installer exactly once: one power cycle per MAC, an install boot then a local boot
    # (the installer's reboot), one answer-file fetch, the installer then the local config, attempt succeeded.
    events = lab.events()
    for cycle, rh in zip(cycles, run_report["hosts"]):
        mac = cycle["mac"]
        assert handler.machine(mac).cycles == 1
        assert [b["outcome"] for b in cycle["boots"]] == ["installed", "local"], cycle
        assert cycle["version"]["product_version"] == media.product_version
        assert len(e2e_lab.fetches(events, mac, "answerfile")) == 1
        decisions = [(e["details"]["decision"], e["details"]["state"]) for e in e2e_lab.fetches(events, mac, "config")]
        assert decisions == [(BOOT_INSTALLER, states.ARMED), (BOOT_LOCAL, states.SUCCEEDED)], decisions
        attempt = store.get_attempt(rh["attempt_id"])
        assert (attempt.state, attempt.exit_code, attempt.run_id) == (states.SUCCEEDED, 0, run.id)
        install = cycle["boots"][0]
        console = Path(install["console_log"]).read_text(errors="replace")
        assert "(XEN)" in console and "STANDIN: installation-complete exit 0" in console, console[-3000:]
        assert numbers[install["name"]]["seconds"] is not None
        local = Path(cycle["boots"][1]["console_log"]).read_text(errors="replace")
        assert "STANDIN" not in local and "Booting from Hard Disk" in local, local[-3000:]

