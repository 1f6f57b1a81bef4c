"""The simulated world: pools, hosts with a power/boot state machine, sim-clock timers, failure injection."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from . import states as st
from .clock import Clock
from .db import NULL_REF, Db, XapiError, xapi_datetime
from .firmware import NoBootableSystem
from .inject import FailureInjection

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


@dataclass(eq=False)
class SimHost:
    """Runtime state of one simulated host that is not in the pool DB (power state, injections)."""

    name: str
    mac: str
    address: str
    pool: "SimPool"
    ref: str = NULL_REF
    state: str = st.XAPI_RUNNING
    port: int = 0
    boot_count: int = 0
    disabled_until_reboot: bool = False  # set when reboot/shutdown starts (xapi_host_helpers.ml:67-102)
    user_disabled: bool = False          # a user disable since this xapi started blocks auto-enable (2.4)
    pending_op: str = ""                 # reboot/shutdown in progress -> OTHER_OPERATION_IN_PROGRESS
    emergency: XapiError | None = None   # member emergency error while startup is blocked (2.6)
    enable_refusals: int = 0             # injected slow boot: host.enable answers HOST_STILL_BOOTING N times
    login_refusals: int = 0              # injected: the coordinator's login answers HOST_STILL_BOOTING N times
    never_returns: bool = False
    pbds_stay_unplugged: bool = False
    hung: threading.Event = field(default_factory=threading.Event)
    boot_error: str = ""
    auto_enable: bool = True             # host.disable(h, false) keeps it disabled across reboots (xapi >= 25.31)
    new_version: dict | None = None      # set by the boot hook, written by dbsync
    local_sessions: set = field(default_factory=set)  # slave_local_login sessions (member's own memory)
    root_password_hash: str | None = None  # root's crypt hash after a fresh install (simulator/fresh.py)

    @property
    def serving(self) -> bool:
        return self.state in st.SERVING

    @property
    def is_master(self) -> bool:
        return self.pool.master is self


@dataclass(eq=False)
class SimPool:
    """One pool: its DB lives on the coordinator; sessions and tasks live in the coordinator's memory."""

    name: str
    db: Db = field(default_factory=Db)
    ref: str = NULL_REF
    hosts: list[SimHost] = field(default_factory=list)
    master: SimHost | None = None
    sessions: dict[str, str] = field(default_factory=dict)  # session ref -> user name
    epoch: int = 0  # bumped when the coordinator goes down: waiting event.from calls get a reset

    def host_by_ref(self, ref: str) -> SimHost:
        for h in self.hosts:
            if h.ref == ref:
                return h
        raise XapiError("HANDLE_INVALID", "host", ref)


class World(FailureInjection):
    """Every pool and host of a simulation, its clock, its timers and its failure injections (inject.py)."""

    def __init__(self, clock: Clock | None = None, *, password: str | None = None, **delays: float):
        self.clock = clock or Clock()
        self.delays = {**DELAYS, **delays}
        self.password = password          # None: any password is accepted for root
        self.pools: dict[str, SimPool] = {}
        self.hosts: dict[str, SimHost] = {}  # mac -> host
        self.boot_handler: Callable[[str], dict | None] | None = None
        self.endpoint_listener: Callable[[SimHost, bool], None] | None = None
        self.evacuation_blocks: dict[str, str] = {}   # vm ref -> plan error code
        self.migration_failures: dict[str, str] = {}  # vm ref -> task error code
        self.call_log: list[tuple[str, str, tuple]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ticker: threading.Thread | None = None

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

    # ---- host power and boot state machine (xapi.md 4.3) ----------------------------------------
    def begin_power_off(self, h: SimHost, op: str) -> None:
        """host.reboot/shutdown: return at once, set host_disabled_until_reboot, act 10 s later (2.4, 2.5)."""
        h.pending_op = op
        h.disabled_until_reboot = True
        self.spawn(self._power_off, h, op == "reboot", name=f"sim-{op}-{h.name}")

    def _power_off(self, h: SimHost, reboot: bool) -> None:
        if not self.sleep(self.delays["reboot_delay"]):
            return
        self.shutdown_now(h)
        if not self.sleep(self.delays["shutdown"]):
            return
        h.pending_op = ""
        if reboot:
            self._enter_firmware(h)
        else:
            self._set_state(h, st.OFF)

    def shutdown_now(self, h: SimHost) -> None:
        """xapi stops cleanly: VMs evacuated or halted (prepare_for_poweroff), enabled=false, and the
        coordinator sets live=false AT ONCE on the shutting-down heartbeat (xapi_fuse.ml:144-160; 2.5)."""
        pool, db = h.pool, h.pool.db
        with db.lock:
            from .vm_rules import vm_halt_all_on  # late import: vm_rules imports world types
            vm_halt_all_on(self, pool, h)
            if db.exists("host", h.ref):
                db.update("host", h.ref, enabled=False)
                db.update("host_metrics", db.get("host", h.ref)["metrics"], live=False)
                for pbd in db.find("PBD", host=h.ref):
                    db.update("PBD", pbd, currently_attached=False)
        self._set_state(h, st.SHUTTING_DOWN)
        if h.is_master:
            self.clear_sessions_and_tasks(pool)

    def power_on(self, mac: str) -> None:
        """Press the power button (test hook; host.power_on does the same through the coordinator)."""
        h = self.host(mac)
        if h.state == st.OFF:
            self._enter_firmware(h)

    def boot_again(self, mac: str) -> None:
        """Run the firmware stage again for a host stuck in FIRMWARE (after never_returns is cleared)."""
        h = self.host(mac)
        if h.state == st.FIRMWARE:
            self.spawn(self._firmware, h, name=f"sim-firmware-{h.name}")

    def _enter_firmware(self, h: SimHost) -> None:
        self._set_state(h, st.FIRMWARE)
        self.spawn(self._firmware, h, name=f"sim-firmware-{h.name}")

    def _firmware(self, h: SimHost) -> None:
        """Hand the boot to the pluggable machine; it may install (new version dict) or boot locally (None)."""
        if h.never_returns:
            h.boot_error = "injected: never returns"
            return
        handler = self.boot_handler
        try:
            new_version = handler(h.mac) if handler else None
        except NoBootableSystem as exc:  # installer_breaks: the firmware waits at "no bootable device" (machine.py)
            h.boot_error = str(exc)
            return
        except Exception as exc:  # the machine failed: like a host stuck in firmware, it stays down
            h.boot_error = repr(exc)
            log.warning("host %s (%s): boot hook failed: %r", h.name, h.mac, exc, extra={"mac": h.mac})
            return
        if self.stopping or h.never_returns:
            return
        if new_version and new_version.get("fresh"):  # the disk was wiped: a NEW standalone host (fresh.py)
            from .fresh import become_new_host  # late import: fresh imports world types
            new_version = become_new_host(self, h, new_version)
        self._set_state(h, st.BOOT_LOCAL)
        if not self.sleep(self.delays["boot_local"]):
            return
        self.xapi_start(h, new_version)

    def xapi_start(self, h: SimHost, new_version: dict | None = None) -> None:
        """xapi starts: a fresh startup (user disable forgotten, disabled_until_reboot cleared)."""
        h.boot_count += 1
        h.boot_error = ""
        h.disabled_until_reboot = False
        h.user_disabled = False
        h.new_version = new_version  # applied by dbsync
        if h.is_master:
            self._set_state(h, st.XAPI_STARTING)
            self.dbsync(h)
            self.detect_rolling_upgrade(h.pool)  # also on coordinator start (dbsync_master.ml:359)
            self._startup_window(h)
        else:
            # A member starts in emergency mode until Pool.hello succeeds (xapi.ml:1195-1230).
            h.emergency = XapiError("HOST_STILL_BOOTING")
            self._set_state(h, st.XAPI_STARTING)
            if not self.sleep(self.delays["hello"]):
                return
            while not self.stopping:
                err = self.pool_hello(h)
                if err is None:
                    break
                h.emergency = err
                if not self.sleep(self.delays["emergency_retry"]):
                    return
            h.emergency = None
            self.dbsync(h)
            self._startup_window(h)

    def pool_hello(self, h: SimHost) -> XapiError | None:
        """Pool.hello from a starting member (xapi.ml:396-508): the coordinator must answer and must not be
        older (CP-43901, xen-api#5207: HOST_XAPI_VERSION_HIGHER_THAN_COORDINATOR [version])."""
        m = h.pool.master
        if m is None or m.state != st.XAPI_RUNNING and m.state != st.XAPI_STARTING:
            return XapiError("INTERNAL_ERROR", "Connection refused: the coordinator does not answer")
        sv = self.pending_software_version(h)
        with h.pool.db.lock:
            master_sv = h.pool.db.get("host", m.ref)["software_version"]
        if st.version_key(sv) > st.version_key(master_sv):
            return XapiError("HOST_XAPI_VERSION_HIGHER_THAN_COORDINATOR", sv["xapi"])
        return None

    def pending_software_version(self, h: SimHost) -> dict:
        nv = h.new_version
        with h.pool.db.lock:
            current = h.pool.db.get("host", h.ref)["software_version"]
        if not nv:
            return current
        return st.software_version({**nv}, current.get("hostname", h.name))[0]

    def dbsync(self, h: SimHost) -> None:
        """dbsync_slave.ml:106-139: software_version, API version, boot_time and agent_start_time are
        rewritten on every xapi start; the first heartbeat sets live=true (db_gc.ml:102-116)."""
        db, now = h.pool.db, self.clock.now()
        nv = h.new_version
        with db.lock:
            rec = db.get("host", h.ref)
            fields = {"other_config": {**rec["other_config"], "boot_time": f"{int(now) - 30}.",
                                       "agent_start_time": f"{now:.2f}"}}
            if nv:
                sv, minor = st.software_version(nv, rec["software_version"].get("hostname", h.name))
                fields.update(software_version=sv, API_version_minor=minor)
            db.update("host", h.ref, **fields)
            db.update("host_metrics", rec["metrics"], live=True, last_updated=xapi_datetime(now))
        h.new_version = None

    def _startup_window(self, h: SimHost) -> None:
        """HOST_STILL_BOOTING until startup completes, then consider_enabling_host (xapi_host_helpers.ml:387-500)."""
        extra = h.enable_refusals * self.delays["still_booting"]
        if not self.sleep(self.delays["still_booting"] + extra):
            return
        db = h.pool.db
        with db.lock:
            if not h.pbds_stay_unplugged:
                for pbd in db.find("PBD", host=h.ref):
                    db.update("PBD", pbd, currently_attached=True)
            self._set_state(h, st.XAPI_RUNNING)
            h.enable_refusals = 0
            ha = db.get("pool", h.pool.ref)["ha_enabled"]
            if not h.user_disabled and h.auto_enable and not ha:
                db.update("host", h.ref, enabled=True)
        if h.is_master:
            self.detect_rolling_upgrade(h.pool)
