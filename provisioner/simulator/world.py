"""The simulated world: pools, hosts, sim-clock timers and threads, the pool-level rules (memory, RPU detection).

World inherits the host power/boot state machine (power.py) and the failure injections (inject.py); neither
imports this module. The hooks power.py calls out to (VM halts, fresh installs) come in at construction:
builder.new_world wires the simulator's own (vm_ops.py, fresh.py), so this module imports neither of those.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from . import states as st
from .bmc_target import BmcTarget
from .clock import Clock
from .hosts import SimHost, SimPool
from .inject import FailureInjection
from .power import HostPower, WorldHooks
from .reconnect import MemberLinks
from .updates import UpdateConf

log = logging.getLogger(__name__)

# Delays in sim seconds, each from the real system.
DELAYS = {
    "reboot_delay": 10.0,     # `shutdown -r now` starts 10 s after host.reboot returns (xapi_host.ml:914-923)
    "shutdown": 20.0,         # systemd stop, firmware power cycle
    "boot_local": 60.0,       # bootloader + dom0 boot before xapi starts
    "still_booting": 30.0,    # xapi startup: host.enable says HOST_STILL_BOOTING meanwhile (xapi_host.ml:77-110)
    "hello": 5.0,             # member: HOST_STILL_BOOTING emergency error before Pool.hello (xapi.ml:396-508)
    "emergency_retry": 5.0,   # member retries Pool.hello every 5 s after a temporary error (xapi.ml:1212-1228)
    "migrate": 5.0,           # one live migration
    "gc_period": 30.0,        # DB-GC pass that recomputes rolling_upgrade_in_progress (db_gc.ml:26,287-299)
    "assumed_dead": 600.0,    # host_assumed_dead_interval: live=false 10 min after a crash (xapi_globs.ml:723)
}


class World(HostPower, FailureInjection, MemberLinks):
    """Every pool and host of a simulation, its clock, its timers, its host power/boot state machine (power.py),
    its failure injections (inject.py) and its members' links to their coordinator (reconnect.py). Build one
    with builder.new_world (it passes the hooks)."""

    def __init__(self, clock: Clock | None = None, *, hooks: WorldHooks, password: str | None = None,
                 **delays: float):
        self.clock = clock or Clock()
        self.hooks = hooks
        self.delays = {**DELAYS, **delays}
        self.password = password          # None: any password is accepted for root
        self.pools: dict[str, SimPool] = {}
        self.hosts: dict[str, SimHost] = {}  # mac -> host
        self.boot_handler: Callable[[str], dict | None] | None = None
        self.endpoint_listener: Callable[[SimHost, bool], None] | None = None
        self.evacuation_blocks: dict[str, str] = {}   # vm ref -> plan error code
        self.migration_failures: dict[str, str] = {}  # vm ref -> task error code
        self.pbd_plug_delays: dict[str, float] = {}  # SR ref -> sim seconds each PBD.plug takes (devices.py)
        self.call_log: list[tuple[str, str, tuple]] = []
        self.update_conf = UpdateConf()  # xapi.conf repository settings every ISO ships (updates.py)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ticker: threading.Thread | None = None
        self._bmcs: dict[str, BmcTarget] = {}
        self._bmc_lock = threading.Lock()

    # ---- plumbing -------------------------------------------------------------------------------
    def spawn(self, fn: Callable, *args, name: str = "sim") -> threading.Thread:
        t = threading.Thread(target=self._guard, args=(fn, args), name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return t

    def _guard(self, fn, args):
        try:
            fn(*args)
        except Exception:  # a sim thread must never die noisily; the failure is logged and the host stays put
            log.exception("simulator thread %s failed", getattr(fn, "__name__", fn))

    def sleep(self, sim_seconds: float) -> bool:
        """Sleep on the sim clock; False when the world is stopping."""
        return self.clock.sleep(sim_seconds, self._stop)

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = self.spawn(self._gc_loop, name="sim-db-gc")

    def stop(self) -> None:
        self._stop.set()
        for h in self.hosts.values():
            h.hung.clear()
        for pool in self.pools.values():
            with pool.db.cond:
                pool.db.cond.notify_all()

    @property
    def stop_event(self) -> threading.Event:
        return self._stop

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def host(self, mac: str) -> SimHost:
        return self.hosts[mac.lower()]

    def bmc(self, mac: str) -> BmcTarget:
        """The machine's BMC face (bmc_target.py): what the Redfish and IPMI servers in front of it drive."""
        h = self.host(mac)
        with self._bmc_lock:
            return self._bmcs.setdefault(h.mac, BmcTarget(self, h.mac))

    def _set_state(self, h: SimHost, new: str) -> None:
        st.check_transition(h.state, new)
        was_serving = h.serving
        h.state = new
        log.info("host %s (%s): %s", h.name, h.mac, new, extra={"mac": h.mac})
        if was_serving != h.serving and self.endpoint_listener:
            self.endpoint_listener(h, h.serving)

    # ---- pool-level rules -------------------------------------------------------------------------
    def update_memory(self, pool: SimPool) -> None:
        """host_metrics.memory_free = total - resident VMs (dom0 included), as the memory check sees it."""
        db = pool.db
        with db.lock:
            for h in pool.hosts:
                if not db.exists("host", h.ref):
                    continue
                m = db.get("host", h.ref)["metrics"]
                total = int(db.get("host_metrics", m)["memory_total"])
                used = sum(int(db.get("VM", v)["memory_target"]) for v in db.find("VM", resident_on=h.ref))
                free = str(max(0, total - used))
                if db.get("host_metrics", m)["memory_free"] != free:
                    db.update("host_metrics", m, memory_free=free)

    def detect_rolling_upgrade(self, pool: SimPool) -> None:
        """db_gc.ml:146-235 detect_rolling_upgrade: any host whose platform_version or xapi differs from the
        coordinator's sets pool.other_config["rolling_upgrade_in_progress"]="true"; all equal removes it (2.9)."""
        if pool.master is None or not pool.master.serving:
            return
        db = pool.db
        with db.lock:
            mine = st.version_key(db.get("host", pool.master.ref)["software_version"])
            mixed = any(st.version_key(db.get("host", r)["software_version"]) != mine for r in db.all("host"))
            oc = dict(db.get("pool", pool.ref)["other_config"])
            if mixed and oc.get("rolling_upgrade_in_progress") != "true":
                oc["rolling_upgrade_in_progress"] = "true"
                db.update("pool", pool.ref, other_config=oc)
            elif not mixed and "rolling_upgrade_in_progress" in oc:
                del oc["rolling_upgrade_in_progress"]
                db.update("pool", pool.ref, other_config=oc)

    def rpu_in_progress(self, pool: SimPool) -> bool:
        with pool.db.lock:
            return "rolling_upgrade_in_progress" in pool.db.get("pool", pool.ref)["other_config"]

    def _gc_loop(self) -> None:
        while self.sleep(self.delays["gc_period"]):
            for pool in list(self.pools.values()):
                self.detect_rolling_upgrade(pool)

    def clear_sessions_and_tasks(self, pool: SimPool) -> None:
        """Session and task are PersistNothing: they vanish when the coordinator's xapi restarts (2.2, 2.8)."""
        db = pool.db
        with db.lock:
            pool.sessions.clear()
            for t in db.all("task"):
                db.delete("task", t)
            pool.epoch += 1
            db.cond.notify_all()
