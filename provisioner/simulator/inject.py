"""Failure injection on the simulated world (docs/simulator.md "Failure injection"): a mixin World inherits from.

Each method sets a flag on the world or a host (or drops sessions, or cuts a host's power); power.py's state
machine and the call handlers act on them. It imports nothing of world.py (the world's types come from hosts.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import states as st

if TYPE_CHECKING:
    from .hosts import SimHost


class FailureInjection:
    """World's failure-injection methods; they use World's hosts, pools, delays and threads."""

    def block_evacuation(self, vm_ref: str, code: str = "VM_REQUIRES_SR") -> None:
        """Plan error for this VM: VM_REQUIRES_SR, HOST_NOT_ENOUGH_FREE_MEMORY, NO_HOSTS_AVAILABLE,
        VM_MISSING_PV_DRIVERS, VM_LACKS_FEATURE, ... (xapi_host.ml:285-424)."""
        self.evacuation_blocks[vm_ref] = code

    def fail_migration(self, vm_ref: str, code: str = "VM_MIGRATE_FAILED") -> None:
        """The next migrations of this VM fail midway with `code` (datamodel_errors.ml:1149-1151)."""
        self.migration_failures[vm_ref] = code

    def slow_boot(self, mac: str, times: int) -> None:
        """host.enable answers HOST_STILL_BOOTING `times` more times; auto-enable comes later by itself."""
        self.host(mac).enable_refusals = times

    def still_booting_logins(self, mac: str, times: int) -> None:
        """The host's next `times` logins answer HOST_STILL_BOOTING [] (a coordinator whose startup is not done)."""
        self.host(mac).login_refusals = times

    def keep_pbds_unplugged(self, mac: str, on: bool = True) -> None:
        """After boot this host's PBDs stay currently_attached=false until PBD.plug."""
        self.host(mac).pbds_stay_unplugged = on

    def hang(self, mac: str, on: bool = True) -> None:
        """The endpoint accepts connections but never answers (tests the client timeout)."""
        h = self.host(mac)
        h.hung.set() if on else h.hung.clear()

    def lose_sessions(self, pool_name: str | None = None) -> None:
        """Every session becomes SESSION_INVALID [ref] (the SDK logs in again once)."""
        for pool in self.pools.values():
            if pool_name in (None, pool.name):
                with pool.db.lock:
                    pool.sessions.clear()

    def crash(self, mac: str) -> None:
        """Power loss: no shutting-down heartbeat, so live stays true until host_assumed_dead_interval
        (10 min) passes without a heartbeat (xapi_globs.ml:723; db_gc.ml:80-135). Back with power_on(mac)."""
        h = self.host(mac)
        was_serving = h.serving
        h.power_epoch += 1  # the threads of the power cycle it cuts stop at their next step (power.py)
        h.state = st.OFF  # outside the table on purpose: a crash can happen in any state
        h.pending_op = ""
        if was_serving and self.endpoint_listener:
            self.endpoint_listener(h, False)
        self.link_lost(h)  # reconnect.py
        if h.is_master:
            self.clear_sessions_and_tasks(h.pool)
        boot_count = h.boot_count
        self.spawn(self._declare_dead_later, h, boot_count, name=f"sim-dead-{h.name}")

    def _declare_dead_later(self, h: SimHost, boot_count: int) -> None:
        if not self.sleep(self.delays["assumed_dead"]) or h.boot_count != boot_count or h.serving:
            return
        db = h.pool.db
        with db.lock:
            if db.exists("host", h.ref):
                db.update("host_metrics", db.get("host", h.ref)["metrics"], live=False)

    def drop_power_on(self, mac: str, count: int = 1) -> None:
        """The machine's BMC silently drops its next `count` power-ons (docs/firmware.md "A reboot does not reach
        the network": real BMCs drop one sent while the host shuts down; this drops them at any time)."""
        self.host(mac).power_on_drops += count

    def no_override(self, mac: str, on: bool = True) -> None:
        """The machine's BMC has no boot-override support: set_boot_override raises OverrideUnsupported."""
        self.host(mac).override_supported = not on

    def slow_reconnect(self, mac: str, after: float = 0.0, *, never: bool = False,
                       unreachable: bool = False) -> None:
        """After the coordinator's xapi restarts, this member misses its startup kick and reconnects on its own
        backoff (2 s doubling to 256 s since its link died), at the first retry at least `after` sim seconds
        after the coordinator's start; `never`: it does not reconnect; `unreachable`: until then forwarded
        calls get CANNOT_CONTACT_HOST instead of waiting (reconnect.py, docs/simulator.md)."""
        h = self.host(mac)
        h.reconnect_after, h.reconnect_never, h.reconnect_unreachable = after, never, unreachable

    def never_returns(self, mac: str, on: bool = True) -> None:
        """The host stays in firmware on its next boots: live stays false, boot_time never changes."""
        self.host(mac).never_returns = on
