"""Coordinator overhead bench (issue 6): wall time of a simulated 8-host rolling upgrade divided by the sum of the
simulator's unavoidable waits. Target <= 1.05.

Not a test: run it by hand and paste the line into the README.

    python bench/upgrade_bench.py                 # 8 hosts, clock x150, 2 repetitions
    python bench/upgrade_bench.py --hosts 3 --reps 1

Everything runs on loopback: the real boot service (TFTP + HTTP), the XAPI simulator, simulated PXE machines that
really fetch their boot configs, answer files and scripts, and the coordinator's Runner through the real `xenapi`
package. Times are in simulated seconds (the clock runs `--speed` times faster than real time).

What counts as unavoidable, per host, measured from the simulator's own host-state timeline (not from the
coordinator): the VM migrations of its evacuation (one `migrate` delay each), the `reboot_delay` the real host takes
before it shuts down, and everything from shutdown to xapi's startup being complete (shutdown, firmware and PXE,
the installer, the local boot, xapi's HOST_STILL_BOOTING window). Added once per run: the wait from the last host's
startup to XAPI clearing `rolling_upgrade_in_progress` (the DB-GC tick). Everything else (reaction to a host coming
back, polling granularity, XAPI calls, the TFTP/HTTP fetches' share of real time) is the coordinator's overhead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from provisioner import media, states  # noqa: E402
from provisioner.coordinator import pools, runner  # noqa: E402
from provisioner.demo import demo_config, synthetic_media_tree  # noqa: E402
from provisioner.runtime import Runtime  # noqa: E402
from provisioner.simulator import states as sim_states  # noqa: E402
from provisioner.simulator import vm_ops  # noqa: E402
from provisioner.simulator.builder import build_pool, new_world, serve_world  # noqa: E402
from provisioner.simulator.clock import Clock  # noqa: E402
from provisioner.simulator.boot_handler import make_boot_handler  # noqa: E402
from provisioner.simulator.world import World  # noqa: E402
from provisioner.store import Store  # noqa: E402

POOL, MEDIA = "bench", "xs84"


MIGRATIONS = {"count": 0}
_migrate = vm_ops.migrate


def _counted_migrate(*args, **kw):
    """Every live migration the simulator performs (host.evacuate and VM.pool_migrate both land here)."""
    MIGRATIONS["count"] += 1
    return _migrate(*args, **kw)


vm_ops.migrate = _counted_migrate  # instrumentation of the bench only: counts, changes nothing


class TimedWorld(World):
    """A World that remembers when each host entered each power/boot state (sim seconds)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.timeline: list[tuple[float, str, str]] = []  # (sim time, mac, state)

    def _set_state(self, h, new):
        super()._set_state(h, new)
        self.timeline.append((self.clock.now(), h.mac, new))


def unavoidable(world: TimedWorld, macs: list[str], migrations: int, rpu_cleared: float | None) -> float:
    """Sum of the simulator-imposed waits (see the module docstring), in sim seconds."""
    total = migrations * world.delays["migrate"]
    last_up = None
    for mac in macs:
        marks = [(t, s) for t, m, s in world.timeline if m == mac]
        down = next((t for t, s in marks if s == sim_states.SHUTTING_DOWN), None)
        up = next((t for t, s in marks if s == sim_states.XAPI_RUNNING and down is not None and t > down), None)
        if down is None or up is None:
            raise RuntimeError(f"host {mac} never went down and came back: not a complete upgrade")
        total += world.delays["reboot_delay"] + (up - down)
        last_up = up if last_up is None else max(last_up, up)
    if rpu_cleared is not None and last_up is not None and rpu_cleared > last_up:
        total += rpu_cleared - last_up
    return total


def watch_rpu(world: World, stop: threading.Event, seen: dict) -> None:
    """Note the sim time at which the pool's rolling_upgrade_in_progress flag was last cleared."""
    was = False
    while not stop.is_set():
        pool = world.pools.get(POOL)
        if pool is not None:
            flag = "rolling_upgrade_in_progress" in pool.db.get("pool", pool.ref).get("other_config", {})
            if was and not flag:
                seen["cleared"] = world.clock.now()
            was = flag
        stop.wait(0.005)


def one_run(hosts: int, speed: float, vms_per_host: int, install_seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="upgrade-bench-") as tmp:
        tmp = Path(tmp)
        config = demo_config(tmp)
        store = Store(config.db_path)
        media.import_media(store, config, MEDIA, synthetic_media_tree(tmp / "tree"))
        runtime = Runtime(config, store).start()
        world = new_world(Clock(speed), world_class=TimedWorld)
        build_pool(world, POOL, hosts=hosts, version="8.2.1", vms_per_host=vms_per_host)
        handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url,
                                    install_seconds=install_seconds, boot_order="bios-network-first")  # PXE-first
        world.boot_handler = handler
        sim = serve_world(world)
        stop, seen = threading.Event(), {}
        MIGRATIONS["count"] = 0
        watcher = threading.Thread(target=watch_rpu, args=(world, stop, seen), daemon=True)
        try:
            pools.add_pool(store, POOL, sim.master_url(), "root", "bench", fingerprint=sim.master_fingerprint())
            driver = pools.connect(store, POOL, timeout=5)
            pools.discover(store, POOL, driver)
            for h in store.list_hosts(pool=POOL):
                store.update_host(h.mac, {"disk": f"/dev/disk/by-id/scsi-{h.name}"})
            watcher.start()
            run = runner.start_run(store, POOL, MEDIA, driver)
            started = world.clock.now()
            final = runner.Runner(store, config, run.id, driver, clock=world.clock).run()
            elapsed = world.clock.now() - started
            if final.state != states.RUN_DONE:
                raise RuntimeError(f"run ended {final.state}: {final.reason}")
            macs = [h.mac for h in world.pools[POOL].hosts]
            installs = {mac: handler.machine(mac).installs() for mac in macs}
            if set(installs.values()) != {1}:
                raise RuntimeError(f"each host must install exactly once: {installs}")
            floor = unavoidable(world, macs, MIGRATIONS["count"], seen.get("cleared"))
            driver.close()
        finally:
            stop.set()
            handler.stop()
            sim.stop()
            runtime.stop()
    return {"elapsed": elapsed, "unavoidable": floor, "ratio": elapsed / floor}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--speed", type=float, default=150.0, help="simulated seconds per real second")
    parser.add_argument("--vms-per-host", type=int, default=2)
    parser.add_argument("--install-seconds", type=float, default=600.0, help="the installer's run time (sim s)")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    results = []
    for rep in range(args.reps):
        r = one_run(args.hosts, args.speed, args.vms_per_host, args.install_seconds)
        results.append(r)
        print(f"run {rep + 1}: wall {r['elapsed'] / 60:.1f} sim min, unavoidable waits {r['unavoidable'] / 60:.1f} "
              f"sim min, ratio {r['ratio']:.3f}", flush=True)
    ratios = [r["ratio"] for r in results]
    print(f"{args.hosts}-host rolling upgrade: wall / unavoidable = {statistics.median(ratios):.3f} "
          f"(median of {len(ratios)}; range {min(ratios):.3f}-{max(ratios):.3f}; target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
