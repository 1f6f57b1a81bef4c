"""Waves bench (issue 21): wall time of a rolling upgrade with `--parallel auto` divided by the same upgrade one host
at a time, both in ONE bench run, side by side. Target <= 0.40 on a 16-host pool of 4 VMs per host with memory for
25% headroom, with no migration refused for memory and no VM stopped that one at a time would not stop.

Not a test: run it by hand and paste the lines into the README.

    python bench/parallel_bench.py --reps 3           # 16 hosts, the acceptance ratio (about 18 minutes)
    python bench/parallel_bench.py --hosts 8 16 32    # one ratio per size
    python bench/parallel_bench.py --speed 150        # a quicker look (about 2.5 minutes a pair), see below

The clock (--speed, default x50). Both runs are timed in real seconds, but the simulated world (installer 600 s,
reboots, migrations) runs --speed times faster than real time while the processes themselves (the CLI starting,
every XAPI call's TLS handshake and XML, the boot service, on the 2 CPUs that also run the simulated pool) do not:
each real second of their work counts as --speed simulated seconds. A real pool puts a second of such work against
a 10-20 minute install; x150 puts it against 4 seconds. Those costs weigh more in the waved run (fixed start and end
costs are a larger share of a shorter run, and a wave's three hosts make their calls at once), so the ratio rises
with the clock: 16 hosts measured 0.401 at x150 and 0.379 at x50 (README bench (f)); with none of that work it
would tend to 6/16 = 0.375 (the master, then 5 waves, against 16 hosts one at a time). x50 is the default: the
slowest clock whose three pairs still fit in about 18 minutes.

The shipped processes: `python -m provisioner --config FILE serve` (the boot service the machines PXE-boot from) and
the run started with the shipped CLI `python -m provisioner --config FILE upgrade start POOL --media M
[--parallel auto]`, which drives it in its own process until it ends (as an operator's terminal does). The simulated
pool (XAPI over HTTPS on loopback) and its PXE machines live in this bench process: a simulated world cannot be
reached from another process except over its sockets, which is exactly how both shipped processes reach it. The
simulator's clock runs --speed times faster than real time; the coordinator in the CLI process polls every
upgrade_poll_ms = 10 s of simulated time (a real run's default poll, steps.Timeouts.poll: 200 ms at x50, 67 ms at x150).
Memory per host: dom0 4 GiB, 4 VMs of 3 GiB = 75% of the 16 GiB left, i.e.
25% headroom. Counted in the simulator: migrations refused for memory (HOST_NOT_ENOUGH_FREE_MEMORY from
VM.pool_migrate or host.evacuate) and VMs stopped (halted or suspended) during the run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from simpool import register_pool  # noqa: E402
from shipped import Serve, free_port, write_config  # noqa: E402

from provisioner import media, states  # noqa: E402
from provisioner.demo import synthetic_media_tree  # noqa: E402
from provisioner.simulator import vm_ops  # noqa: E402
from provisioner.simulator.builder import build_pool, new_world, serve_world  # noqa: E402
from provisioner.simulator.clock import Clock  # noqa: E402
from provisioner.simulator.errors import XapiError  # noqa: E402
from provisioner.store import Store  # noqa: E402
from provisioner.config import load_config  # noqa: E402

try:  # the simulator's boot handler (moved out of machine.py by issue 20's work)
    from provisioner.simulator.boot_handler import make_boot_handler  # noqa: E402
except ImportError:  # pragma: no cover
    from provisioner.simulator.machine import make_boot_handler  # noqa: E402

POOL, MEDIA, PASSWORD, TOKEN = "bench", "xs84", "bench-pw", "bench-token-0123456789abcdef"
COUNTS = {"refused_for_memory": 0, "vms_stopped": 0}
_migrate, _set_power = vm_ops.migrate, vm_ops.set_power


def _counted_migrate(*args, **kw):
    """Every live migration (VM.pool_migrate and host.evacuate both land here): count the memory refusals."""
    try:
        return _migrate(*args, **kw)
    except XapiError as exc:
        if exc.code == "HOST_NOT_ENOUGH_FREE_MEMORY":
            COUNTS["refused_for_memory"] += 1
        raise


def _counted_set_power(world, pool, vm, state, host=vm_ops.NULL_REF):
    if state in ("Halted", "Suspended") and pool.db.get("VM", vm)["power_state"] in ("Running", "Paused") \
            and not pool.db.get("VM", vm)["is_control_domain"]:
        COUNTS["vms_stopped"] += 1
    return _set_power(world, pool, vm, state, host)


vm_ops.migrate, vm_ops.set_power = _counted_migrate, _counted_set_power  # the bench's instruments: count only


def one_run(hosts: int, parallel: str | None, speed: float, install_seconds: float) -> dict:
    COUNTS.update(refused_for_memory=0, vms_stopped=0)
    with tempfile.TemporaryDirectory(prefix="parallel-bench-") as tmp:
        tmp = Path(tmp)
        http_port, tftp_port = free_port(), free_port(socket.SOCK_DGRAM)
        config_file = write_config(tmp / "provisioner.toml", data_dir=tmp / "data", bind_address="127.0.0.1",
                                   tftp_root=ROOT / "tftp_root", public_url=f"http://127.0.0.1:{http_port}",
                                   api_token=TOKEN, http_port=http_port, tftp_port=tftp_port, pxelinux_http=True,
                                   upgrade_poll_ms=round(10_000 / speed), **({"allow_root": True} if os.geteuid() == 0 else {}))
        config = load_config(config_file)
        store = Store(config.db_path)
        media.import_media(store, config, MEDIA, synthetic_media_tree(tmp / "tree"))
        world = new_world(Clock(speed))
        build_pool(world, POOL, hosts=hosts, version="8.2.1", vms_per_host=4, memory_gib=20, vm_memory_gib=3,
                   dom0_memory_gib=4)
        handler = make_boot_handler(("127.0.0.1", tftp_port), clock=world.clock, install_seconds=install_seconds,
                                    http_base=f"http://127.0.0.1:{http_port}", boot_order="bios-network-first")
        world.boot_handler = handler
        sim = serve_world(world)
        try:
            register_pool(store, sim, POOL, PASSWORD)
            with Serve(config_file, tmp):
                cmd = [sys.executable, "-m", "provisioner", "--config", str(config_file), "upgrade", "start", POOL,
                       "--media", MEDIA] + (["--parallel", parallel] if parallel else [])
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                env.pop("PROVISIONER_CONFIG", None)
                started, sim_started = time.monotonic(), world.clock.now()
                done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=3600)
                wall, sim_wall = time.monotonic() - started, world.clock.now() - sim_started
            run = store.list_runs(POOL)[0]
            if run.state != states.RUN_DONE:
                raise RuntimeError(f"run ended {run.state}: {run.reason}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            installs = {h.name: handler.machine(h.mac).installs() for h in world.pools[POOL].hosts}
            if set(installs.values()) != {1}:
                raise RuntimeError(f"each host must install exactly once: {installs}")
            waves = [e for e in store.events(run_id=run.id, kind="wave.start", limit=1000)]
            steps = step_seconds(store.events(run_id=run.id, limit=1_000_000))
            store.close()
        finally:
            handler.stop()
            sim.stop()
    return {"wall": wall, "sim": sim_wall, "waves": len(waves), "steps": steps, **COUNTS}


def step_seconds(events: list[dict]) -> dict[str, float]:
    """Mean real seconds a member spent in each step (from the step.<name> commits' timestamps)."""
    from datetime import datetime
    by_host: dict[str, list[tuple[float, str]]] = {}
    for e in events:
        if e["kind"].startswith("step.") and e["kind"] != "step.skipped" and e["mac"]:
            by_host.setdefault(e["mac"], []).append((datetime.fromisoformat(e["ts"]).timestamp(), e["kind"][5:]))
    spent: dict[str, list[float]] = {}
    for line in list(by_host.values())[1:]:  # members only: the master is the first host
        for (t0, step), (t1, _) in zip(line, line[1:]):
            spent.setdefault(step, []).append(t1 - t0)
    return {step: sum(v) / len(v) for step, v in spent.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[16])
    parser.add_argument("--speed", type=float, default=50.0, help="simulated seconds per real second (see the "
                        "module's docstring: the faster the clock, the more the processes' own CPU time weighs)")
    parser.add_argument("--install-seconds", type=float, default=600.0, help="the installer's run time (sim s)")
    parser.add_argument("--reps", type=int, default=1, help="pairs per size (the order alternates; the median "
                        "ratio is the result: the machine's load moves between the two runs of a pair)")
    args = parser.parse_args()
    for hosts in args.hosts:
        ratios, met = [], True
        for rep in range(args.reps):
            modes = [None, "auto"] if rep % 2 == 0 else ["auto", None]
            runs = {mode: one_run(hosts, mode, args.speed, args.install_seconds) for mode in modes}
            serial, auto = runs[None], runs["auto"]
            for name, r in (("one at a time", serial), ("--parallel auto", auto)):
                print(f"  {hosts} hosts, {name}: wall {r['wall']:.1f} s ({r['sim'] / 60:.1f} sim min), "
                      f"{r['waves']} member waves, migrations refused for memory {r['refused_for_memory']}, "
                      f"VMs stopped {r['vms_stopped']}", flush=True)
            print("  mean real seconds per member step (one at a time / auto): " + ", ".join(
                f"{k} {serial['steps'].get(k, 0):.1f}/{auto['steps'].get(k, 0):.1f}" for k in serial["steps"]),
                flush=True)
            ratios.append(auto["wall"] / serial["wall"])
            met = met and auto["refused_for_memory"] == 0 and auto["vms_stopped"] <= serial["vms_stopped"]
        ratio = statistics.median(ratios)
        print(f"{hosts}-host pool, 4 VMs per host, 25% headroom: wall(--parallel auto) / wall(one at a time) = "
              f"{ratio:.3f}" + (f" (median of {len(ratios)}: {', '.join(f'{r:.3f}' for r in ratios)})"
                                if len(ratios) > 1 else "")
              + f" (target <= 0.40{'; met' if met and ratio <= 0.40 else '; NOT met'})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
