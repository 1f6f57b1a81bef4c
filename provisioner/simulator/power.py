"""Host power and boot in the simulator: reboot, shutdown, power-on, firmware, xapi start-up (docs/simulator.md
"Host power and boot states").

A mixin World inherits from: its methods use World's clock, delays, threads and state changes. What happens to
the VMs of a host going down (vm_ops.py) and to a machine a fresh install wiped (fresh.py) are hooks the world
gets at construction (WorldHooks, wired by builder.new_world), so this module imports neither.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from . import host_facts, updates
from . import states as st
from .db import xapi_datetime
from .errors import NoBootableSystem, XapiError
from .hosts import SimHost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldHooks:
    """What the power/boot state machine calls out to; builder.new_world passes the simulator's own."""

    halt_vms: Callable[..., None]        # (world, pool, host): prepare_for_poweroff (vm_ops.vm_halt_all_on)
    fresh_install: Callable[..., dict]   # (world, host, version) -> plain version (fresh.become_new_host)


class HostPower:
    """World's host power and boot state machine (states.py holds its transition table)."""

    def begin_power_off(self, h: SimHost, op: str) -> None:
        """host.reboot/shutdown: return at once, set host_disabled_until_reboot, act 10 s later (2.4, 2.5)."""
        h.pending_op = op
        h.disabled_until_reboot = True
        self.spawn(self._power_off, h, op == "reboot", name=f"sim-{op}-{h.name}")

    def _power_off(self, h: SimHost, reboot: bool) -> None:
        epoch = h.power_epoch  # a hard power cut (crash, BMC) ends this shutdown where it is
        if not self.sleep(self.delays["reboot_delay"]) or h.power_epoch != epoch:
            return
        self.shutdown_now(h)
        if not self.sleep(self.delays["shutdown"]) or h.power_epoch != epoch:
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
            self.hooks.halt_vms(self, pool, h)
            if db.exists("host", h.ref):
                db.update("host", h.ref, enabled=False)
                db.update("host_metrics", db.get("host", h.ref)["metrics"], live=False)
                for pbd in db.find("PBD", host=h.ref):
                    db.update("PBD", pbd, currently_attached=False)
        self._set_state(h, st.SHUTTING_DOWN)
        self.link_lost(h)  # reconnect.py
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
        epoch = h.power_epoch
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
        if self.stopping or h.never_returns or h.power_epoch != epoch:  # power cut meanwhile: a new cycle runs
            return
        if new_version and new_version.get("fresh"):  # the disk was wiped: a NEW standalone host (fresh.py)
            new_version = self.hooks.fresh_install(self, h, new_version)
        self._set_state(h, st.BOOT_LOCAL)
        if not self.sleep(self.delays["boot_local"]) or h.power_epoch != epoch:
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
            h.linked = True  # the coordinator's database is its own (reconnect.py)
            h.link_up.set()
            self._set_state(h, st.XAPI_STARTING)
            self.dbsync(h)
            self.coordinator_restarted(h.pool)  # members live for 10 min, reconnecting (reconnect.py)
            self.detect_rolling_upgrade(h.pool)  # also on coordinator start (dbsync_master.ml:359)
            self._startup_window(h)
        else:
            # A member starts in emergency mode until Pool.hello succeeds (xapi.ml:1195-1230).
            h.emergency = XapiError("HOST_STILL_BOOTING")
            self._set_state(h, st.XAPI_STARTING)
            epoch = h.power_epoch
            if not self.sleep(self.delays["hello"]) or h.power_epoch != epoch:
                return
            while not self.stopping:
                err = self.pool_hello(h)
                if err is None:
                    break
                h.emergency = err
                if not self.sleep(self.delays["emergency_retry"]) or h.power_epoch != epoch:
                    return
            h.emergency = None
            h.linked = True  # Pool.hello answered: its database link is up
            h.link_up.set()
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
                host_facts.installed(db, h)  # the new version's dom0 memory
            db.update("host", h.ref, **fields)
            # a system boot: guidances done, an ISO install at its base level (updates.py)
            updates.on_xapi_start(db, h, system_boot=True, installed=bool(nv))
            db.update("host_metrics", rec["metrics"], live=True, last_updated=xapi_datetime(now))
        h.new_version = None
        if nv:
            self.update_memory(h.pool)

    def _startup_window(self, h: SimHost) -> None:
        """HOST_STILL_BOOTING until startup completes, then consider_enabling_host (xapi_host_helpers.ml:387-500)."""
        extra, epoch = h.enable_refusals * self.delays["still_booting"], h.power_epoch
        if not self.sleep(self.delays["still_booting"] + extra) or h.power_epoch != epoch:
            return
        db = h.pool.db
        with db.lock:
            if h.state != st.XAPI_STARTING:  # a reboot/shutdown accepted during startup got there first
                return
            if not h.pbds_stay_unplugged:
                for pbd in db.find("PBD", host=h.ref):
                    db.update("PBD", pbd, currently_attached=True)
            self._set_state(h, st.XAPI_RUNNING)
            h.enable_refusals = 0
            ha = db.get("pool", h.pool.ref)["ha_enabled"]
            # consider_enabling_host: not while a mandatory update guidance is pending (xapi_host_helpers.ml:415-420)
            if not h.user_disabled and h.auto_enable and not ha and not db.get("host", h.ref)["pending_guidances"]:
                db.update("host", h.ref, enabled=True)
        if h.is_master:
            self.detect_rolling_upgrade(h.pool)
