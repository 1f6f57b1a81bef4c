"""Takeover bench (issue 22): two shipped `provisioner serve` on one PostgreSQL, the driving one killed with SIGKILL
in the middle of a member's install; the other takes the pool's lease over and finishes the run.

Not a test: run it by hand and paste the lines into the README.

    python bench/takeover_bench.py              # 1 uninterrupted reference run + 3 takeover runs
    python bench/takeover_bench.py --reps 1

Each run: a real PostgreSQL (Debian's initdb + pg_ctl in a temporary directory: tests/support/pg_server.py), a fresh
database, two shipped servers A and B (`python -m provisioner --config FILE serve`, each its own data_dir and ports,
the same database_url, the same credentials key file and, where the config knows sites, the same site) and a
simulated 4-host pool in this bench process (XAPI over HTTPS on loopback, PXE machines). The media is imported with
A's config (A's copy); B fetches its own copy from A at start (docs/sites.md) and the run starts once it has it. The machines network-boot from B (their DHCP next-server and HTTP base are B's), so
the installers keep their server when A dies; the run is started through A's REST API (POST /api/v1/pools/NAME/
upgrade with the api_token), so A's serve process drives it (coordinator/service.py: a run started through REST is
driven by the serve that received it; `upgrade start` would drive it in the CLI's own process instead). Once a
member's installer runs (its attempt STARTED: the start script was fetched), A is killed with SIGKILL after checking
that the pool's lease names A's pid. B's lease watch (coordinator/takeover.py) takes the expired lease and resumes
the run from the store.

Measured: the takeover time from the kill to B's `lease.taken` event (the lease row's owner change), to the
`run.taken_over` event and to B's first step event of the resumed run (its first step commit, which for a member in
its install comes once the host is back), all from the events' timestamps (one machine, one clock); the lease_ttl_s
the servers ran with; total wall time from the POST to RUN_DONE. Checked, from the simulator (not from the
coordinator): each host ran its installer once and booted into it once, and the XAPI calls that change a host
(host.disable, host.evacuate, host.reboot, host.shutdown, host.power_on, VM.pool_migrate) and the live migrations
the simulator performed, per host, equal those of the uninterrupted reference run of the same setup.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from pg_server import PgServer  # noqa: E402
from simpool import register_pool  # noqa: E402
from shipped import Serve, free_port, write_config  # noqa: E402

from provisioner import credentials, media, states  # noqa: E402
from provisioner.config import Config, load_config  # noqa: E402
from provisioner.coordinator.locks import owner_pid, pool_lease  # noqa: E402
from provisioner.demo import synthetic_media_tree  # noqa: E402
from provisioner.simulator import vm_ops  # noqa: E402
from provisioner.simulator.boot_handler import make_boot_handler  # noqa: E402
from provisioner.simulator.builder import build_pool, new_world, serve_world  # noqa: E402
from provisioner.simulator.clock import Clock  # noqa: E402
from provisioner.store import Store  # noqa: E402

POOL, MEDIA, PASSWORD, TOKEN = "bench", "xs84", "bench-pw", "bench-token-0123456789abcdef"
HOSTS = 4
SITE = "dc1"  # A and B serve the same site (docs/sites.md), where the config knows sites
CHANGING = ("host.disable", "host.evacuate", "host.reboot", "host.shutdown", "host.power_on")
"""XAPI calls on a host that change it (a repeated one would be a destructive step done twice)."""
MIGRATED: Counter = Counter()  # VM uuid -> live migrations the simulator performed (host.evacuate, VM.pool_migrate)
_migrate = vm_ops.migrate


def _counted_migrate(world, pool, vm, *args, **kw):
    """Every live migration the simulator performs lands here: counted per VM, nothing changed."""
    result = _migrate(world, pool, vm, *args, **kw)
    MIGRATED[pool.db.get("VM", vm)["uuid"]] += 1
    return result


vm_ops.migrate = _counted_migrate  # the bench's instrument: counts only


def _serve_config(path: Path, data: Path, url: str, http: int, tftp: int, speed: float) -> Path:
    return write_config(path, data_dir=data, database_url=url, bind_address="127.0.0.1",
                        tftp_root=ROOT / "tftp_root", public_url=f"http://127.0.0.1:{http}", api_token=TOKEN,
                        http_port=http, tftp_port=tftp, pxelinux_http=True, upgrade_poll_ms=round(10_000 / speed),
                        **({"allow_root": True} if os.geteuid() == 0 else {}),
                        **({"site": SITE} if "site" in Config.__dataclass_fields__ else {}))  # one site: both boot it


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def _member_installing(store: Store, run_id: str) -> str | None:
    """The name of a member whose installer runs now (attempt STARTED), or None."""
    for rh in store.run_hosts(run_id):
        if rh.role != "master" and rh.attempt_id:
            attempt = store.get_attempt(rh.attempt_id)
            if attempt is not None and attempt.state == states.STARTED:
                return rh.name
    return None


def _wait_for_media_copy(store: Store, server: str) -> None:
    """Where the store knows sites (docs/sites.md): wait until B has its own ready copy of the media, synced from A
    at B's start, so the installers B serves need nothing of A's."""
    if not hasattr(store, "media_copy"):
        return
    deadline = time.time() + 120
    while (copy := store.media_copy(MEDIA, server)) is None or copy.state != "ready":
        if time.time() > deadline:
            raise RuntimeError(f"server B ({server}) has no ready copy of {MEDIA} after 120 s: {copy}")
        time.sleep(0.2)


def _xapi_changes(world, names: dict[str, str]) -> dict[str, Counter]:
    """Per host name: how many times each changing XAPI call named it (the host ref is the first argument after the
    session; Async.<method> counted as <method>); VM.pool_migrate calls counted together under "(VMs)" (the live
    migrations per VM: MIGRATED)."""
    counts = {name: Counter() for name in names.values()}
    for _, method, params in world.call_log:
        method = method.removeprefix("Async.")  # host.evacuate and others run as tasks
        if method in CHANGING and len(params) > 1 and params[1] in names:
            counts[names[params[1]]][method] += 1
        elif method == "VM.pool_migrate":
            counts.setdefault("(VMs)", Counter())[method] += 1
    return counts


def one_run(pg: PgServer, kill: bool, speed: float, install_seconds: float) -> dict:
    MIGRATED.clear()
    url = pg.create_database("takeover")
    with tempfile.TemporaryDirectory(prefix="takeover-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        ports = {side: (free_port(), free_port(socket.SOCK_DGRAM)) for side in "ab"}
        conf = {side: _serve_config(tmp / side / "provisioner.toml", tmp / side / "data", url, *ports[side], speed)
                for side in "ab"}
        config_a = load_config(conf["a"])
        store = Store.from_config(config_a)
        media.import_media(store, config_a, MEDIA, synthetic_media_tree(tmp / "tree"))
        world = new_world(Clock(speed))
        build_pool(world, POOL, hosts=HOSTS, version="8.2.1", vms_per_host=2)
        b_http, b_tftp = ports["b"]
        handler = make_boot_handler(("127.0.0.1", b_tftp), clock=world.clock, install_seconds=install_seconds,
                                    http_base=f"http://127.0.0.1:{b_http}", boot_order="bios-network-first")
        world.boot_handler = handler
        sim = serve_world(world)
        a = b = None
        try:
            register_pool(store, sim, POOL, PASSWORD)
            key_b = credentials.key_path(tmp / "b" / "data")  # every server on one database: the same key file
            key_b.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(credentials.key_path(config_a.data_dir), key_b)
            a = Serve(conf["a"], tmp / "a").start()
            b = Serve(conf["b"], tmp / "b").start()
            _wait_for_media_copy(store, load_config(conf["b"]).base_url)
            started = time.time()
            started_on_a = _post(f"http://127.0.0.1:{ports['a'][0]}/api/v1/pools/{POOL}/upgrade", {"media": MEDIA})
            run_id = started_on_a["run"]["id"]
            killed_at = victim = None
            while True:
                run = store.get_run(run_id)
                if run.state in states.RUN_TERMINAL:
                    break
                if time.time() - started > 1800:
                    raise RuntimeError(f"run {run_id} still {run.state} after 30 min")
                if kill and killed_at is None and (victim := _member_installing(store, run_id)):
                    holder = store.lease_holder(pool_lease(POOL))
                    if holder is None or owner_pid(holder.owner) != a.pid:
                        raise RuntimeError(f"the run's driver is not A (pid {a.pid}): lease {holder}")
                    os.kill(a.pid, signal.SIGKILL)
                    killed_at = time.time()
                    a.proc.wait()
                    last_event = store.events(since_id=0, limit=1_000_000)[-1]["id"]  # A's last: it is dead
                time.sleep(0.05)
            wall = time.time() - started
            if run.state != states.RUN_DONE:
                raise RuntimeError(f"run ended {run.state}: {run.reason}")
            names = {h.ref: h.name for h in world.pools[POOL].hosts}
            macs = {h.name: h.mac for h in world.pools[POOL].hosts}
            result = {
                "wall": wall, "run_id": run_id, "ttl": config_a.lease_ttl_s,
                "installs": {n: handler.machine(m).installs() for n, m in macs.items()},
                "installer_boots": {n: sum(1 for boot in handler.machine(m).boots if boot.fetched("answerfile"))
                                    for n, m in macs.items()},
                "xapi": {n: dict(c) for n, c in _xapi_changes(world, names).items()},
                "migrations": sum(MIGRATED.values()), "migrated_twice": sum(1 for c in MIGRATED.values() if c > 1),
            }
            if kill:
                after = store.events(since_id=last_event, limit=1_000_000)
                first = {kind: next((e for e in after if e["kind"] == kind), None)
                         for kind in ("lease.taken", "run.taken_over")}
                step = next((e for e in after if e["run_id"] == run_id and e["kind"].startswith("step.")), None)
                if first["lease.taken"] is None or step is None:
                    raise RuntimeError(f"no takeover seen after the kill: {[e['kind'] for e in after][:40]}")
                owner = store.lease_holder(pool_lease(POOL))
                result.update(victim=victim, lease_s=_ts(first["lease.taken"]) - killed_at,
                              taken_over_s=_ts(first["run.taken_over"]) - killed_at,
                              step_s=_ts(step) - killed_at, step=f"{step['kind']} ({step['mac']})",
                              expired_for_s=first["lease.taken"]["details"]["expired_for_s"],
                              new_owner=first["lease.taken"]["details"]["owner"], b_pid=b.pid,
                              lease_after=owner.owner if owner else None)
                if owner_pid(result["new_owner"]) != b.pid:
                    raise RuntimeError(f"the lease went to {result['new_owner']}, not B (pid {b.pid})")
            return result
        finally:
            for server in (a, b):
                if server is not None:
                    server.stop()
            handler.stop()
            sim.stop()
            store.close()


def check(reference: dict, r: dict) -> list[str]:
    """What the takeover run did differently from the uninterrupted one (empty: nothing)."""
    problems = []
    for what in ("installs", "installer_boots"):
        if set(r[what].values()) != {1}:
            problems.append(f"{what} per host {r[what]} (expected 1 each)")
    if r["xapi"] != reference["xapi"]:
        problems.append(f"changing XAPI calls {r['xapi']} vs uninterrupted {reference['xapi']}")
    if (r["migrations"], r["migrated_twice"]) != (reference["migrations"], reference["migrated_twice"]):
        problems.append(f"live migrations {r['migrations']} ({r['migrated_twice']} VMs twice) vs uninterrupted "
                        f"{reference['migrations']} ({reference['migrated_twice']})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="takeover runs (after one uninterrupted reference)")
    parser.add_argument("--speed", type=float, default=30.0, help="simulated seconds per real second")
    parser.add_argument("--install-seconds", type=float, default=600.0, help="the installer's run time (sim s)")
    args = parser.parse_args()
    pg = PgServer().start()
    try:
        reference = one_run(pg, False, args.speed, args.install_seconds)
        print(f"uninterrupted (A drives, nothing killed): wall {reference['wall']:.1f} s, installs "
              f"{sorted(reference['installs'].values())}, changing XAPI calls per host {reference['xapi']}, "
              f"{reference['migrations']} live migrations", flush=True)
        takeovers, ok = [], True
        for rep in range(args.reps):
            r = one_run(pg, True, args.speed, args.install_seconds)
            problems = check(reference, r)
            ok = ok and not problems
            takeovers.append(r["lease_s"])
            print(f"  takeover {rep + 1}: A killed during {r['victim']}'s install; lease_ttl_s {r['ttl']}; kill -> "
                  f"lease owner B {r['lease_s']:.1f} s (expired {r['expired_for_s']:.1f} s before), -> run.taken_over "
                  f"{r['taken_over_s']:.1f} s, -> B's first step event {r['step_s']:.1f} s ({r['step']}); wall "
                  f"{r['wall']:.1f} s; installs {sorted(r['installs'].values())}, installer boots "
                  f"{sorted(r['installer_boots'].values())}, changing XAPI calls "
                  + ("= uninterrupted run's" if not problems else "DIFFER: " + "; ".join(problems)), flush=True)
        if takeovers:
            print(f"takeover (kill -> B owns the lease), lease_ttl_s {reference['ttl']}: median "
                  f"{statistics.median(takeovers):.1f} s, max {max(takeovers):.1f} s over {len(takeovers)} run(s) "
                  f"(target < 30 s{'; met' if ok and max(takeovers) < 30 else '; NOT met'})", flush=True)
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
