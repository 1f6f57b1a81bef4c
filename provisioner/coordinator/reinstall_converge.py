"""A reinstalled host converges before it joins: the pool's update level on the new standalone host.

An ISO install lands on the ISO's base level, and pool.join refuses a host whose software differs from the pool's
(docs/real-world.md "What pool.join requires"). XenServer 8's way for exactly this case: the standalone host takes
the pool's coordinator as its update source (Repository.introduce_remote_pool, binary_url
https://<coordinator>/repository/enabled, certificate the coordinator's; datamodel_repository.ml), enables it
alone, pool.sync_updates with the pool's credentials, host.apply_updates with the synced hash, and carries out its
pending guidances (docs/converge.md). Each part reads the world first; a reboot for a guidance is journaled with the
boot_time before it (reinstall.converge_reboot) and never sent twice.
"""

from __future__ import annotations

import ssl
from typing import Callable

from provisioner.coordinator.context import poll_until
from provisioner.store import Store
from provisioner.store.reinstalls import Reinstall
from provisioner.xapi import HostInfo, PoolDriver, XapiError, XapiUnreachable
from provisioner.xapi_tls import fingerprint_of
from provisioner.xapi_updates import ENABLED_REPOSITORY_URI, REBOOT_GUIDANCES, TOOLSTACK_GUIDANCES, UpdateLevel

REBOOT = "reinstall.converge_reboot"
"""{reinstall, boot_time}: about to host.reboot the new standalone host for its guidances (boot_time before)."""
LEVEL = "reinstall.converged"
"""{reinstall, hash}: the new host is at the master's update level (or the pool has none)."""


class ConvergeFailed(RuntimeError):
    """The new host could not be brought to the pool's level; the message says why."""


def label(pool: str) -> str:
    return f"provisioner-pool-{pool}"


def master_level(pool: PoolDriver) -> tuple[HostInfo, UpdateLevel]:
    master = next((h for h in pool.hosts() if h.is_master), None)
    if master is None:
        raise ConvergeFailed("the pool names no master")
    return master, pool.update_level(master.ref)


def master_certificate(pool: PoolDriver, master: HostInfo, pinned: str | None) -> str:
    """The coordinator's PEM certificate (host.get_server_certificate), checked against the pool's pinned
    fingerprint when it has one: the new host will trust exactly what we trust."""
    pem = pool.server_certificate(master.ref)
    if pinned:
        if fingerprint_of(ssl.PEM_cert_to_DER_cert(pem)) != pinned:
            raise ConvergeFailed(f"the master's certificate from host.get_server_certificate is not the one the pool "
                                 f"is pinned to ({pinned[:16]}...): check the pool's trust (`pools trust`)")
    return pem


class Converger:
    """Brings the new standalone host (through `host`, a driver on its own XAPI) to the master's level."""

    def __init__(self, store: Store, r: Reinstall, pool: PoolDriver, host: Callable[[], PoolDriver], *,
                 username: str, password: str, pinned: str | None, clock, poll: float, timeout: float,
                 say: Callable[[str], None]):
        self.store, self.r, self.pool, self.host = store, r, pool, host
        self.username, self._password, self.pinned = username, password, pinned
        self.clock, self.poll, self.timeout, self.say = clock, poll, timeout, say

    def _event(self, kind: str, **details) -> None:
        self.store.add_event(kind, mac=self.r.mac, details={"reinstall": self.r.id, **details})

    def _mine(self, kind: str) -> list[dict]:
        return [e["details"] for e in self.store.events(mac=self.r.mac, kind=kind)
                if e["details"].get("reinstall") == self.r.id]

    def run(self) -> str:
        """The hash the new host is at (the master's); '' when the pool has no update level to reach."""
        master, want = master_level(self.pool)
        if not want.last_update_hash:
            self._event(LEVEL, hash="")
            return ""
        self._answering()
        drv = self.host()
        try:
            me = self._me(drv)
            level = drv.update_level(me.ref)
            if level.last_update_hash != want.last_update_hash or self._reboot_pending(drv):
                self._converge(drv, master, me, want.last_update_hash)
                drv = self._fresh(drv)
                me = self._me(drv)
                level = drv.update_level(me.ref)
            if level.last_update_hash != want.last_update_hash:
                raise ConvergeFailed(f"the new host is at update level {level.last_update_hash or 'base'}, the master "
                                     f"at {want.last_update_hash}: the pool's enabled repository is newer than what "
                                     "its master applied; apply it to the pool first (`xe host-apply-updates`)")
            left = set(level.pending) & (REBOOT_GUIDANCES | TOOLSTACK_GUIDANCES)
            if left:
                raise ConvergeFailed(f"guidances still pending on the new host: {', '.join(sorted(left))}")
        finally:
            drv.close()
        self._event(LEVEL, hash=want.last_update_hash)
        self.say(f"{self.r.host_name}: at the pool's update level ({want.last_update_hash[:12]})")
        return want.last_update_hash

    def _answering(self) -> None:
        """Wait until the new host answers; after a crash during its guidance reboot (the call accepted: it is
        journaled, its event may be lost), until it is back from it."""
        journaled = self._mine(REBOOT)
        if not journaled:
            self._wait_back(lambda info: True, "the new host answers")
            return
        before = journaled[-1]["boot_time"]
        sent = self._sent(before)
        self._wait_back(lambda info: info.boot_time != before or not sent, "the new host answers")

    def _sent(self, before: str) -> bool:
        return any(e.get("method") == "host.reboot" and e.get("before") == before for e in self._mine("xapi.call"))

    def _me(self, drv: PoolDriver) -> HostInfo:
        found = drv.hosts()
        if len(found) != 1:
            raise ConvergeFailed(f"{self.r.host_url} is not a standalone host ({len(found)} hosts)")
        return found[0]

    def _fresh(self, drv: PoolDriver) -> PoolDriver:
        drv.close()
        return self.host()

    def _reboot_pending(self, drv: PoolDriver) -> bool:
        """A guidance reboot journaled for this flow whose host has not come back from it yet."""
        journaled = self._mine(REBOOT)
        if not journaled:
            return False
        try:
            return self._me(drv).boot_time == journaled[-1]["boot_time"]
        except (XapiError, XapiUnreachable):
            return True

    def _converge(self, drv: PoolDriver, master: HostInfo, me: HostInfo, want: str) -> None:
        repos = drv.repositories()
        repo = next((x for x in repos if x.name == label(self.r.pool)), None)
        if repo is None:
            self.say(f"{self.r.host_name}: taking updates from pool {self.r.pool} (Repository.introduce_remote_pool)")
            cert = master_certificate(self.pool, master, self.pinned)
            ref = drv.introduce_remote_pool_repository(
                label(self.r.pool), f"provisioner: the update source of pool {self.r.pool}",
                f"https://{master.address}{ENABLED_REPOSITORY_URI}", cert)
            self._event("xapi.call", method="Repository.introduce_remote_pool", ok=True, master=master.address)
        else:
            ref = repo.ref
        if sorted(drv.pool_repositories()) != [ref]:
            drv.set_pool_repositories([ref])
        level = drv.update_level(me.ref)
        if level.last_update_hash != want:
            hash_ = drv.sync_updates(force=False, username=self.username, password=self._password)
            self.say(f"{self.r.host_name}: applying the pool's updates (hash {str(hash_)[:12]})")
            drv.apply_updates(me.ref, hash_)
            self._event("xapi.call", method="host.apply_updates", ok=True, hash=hash_)
            level = drv.update_level(me.ref)
        if set(level.pending) & REBOOT_GUIDANCES or self._reboot_pending(drv):
            self._reboot(drv, me)
        else:
            self._toolstack(drv, me, level)

    def _reboot(self, drv: PoolDriver, me: HostInfo) -> None:
        """host.reboot once per journaled boot_time (REBOOT); a host back from it is rebooted again only if its level
        read now still asks for it. A reboot already under way (host.current_operations `shutdown`,
        OTHER_OPERATION_IN_PROGRESS) is not sent again."""
        journaled = self._mine(REBOOT)
        if journaled and journaled[-1]["boot_time"] != me.boot_time:
            if not set(drv.update_level(me.ref).pending) & REBOOT_GUIDANCES:
                return  # back from the journaled one
            journaled = []  # back, and asking again: a new one
        if not journaled:
            self._event(REBOOT, boot_time=me.boot_time)
        before = journaled[-1]["boot_time"] if journaled else me.boot_time
        if not self._sent(before) and me.boot_time == before and "shutdown" not in drv.host_operations(me.ref):
            self.say(f"{self.r.host_name}: rebooting the new host (guidance reboot_host)")
            try:
                drv.disable(me.ref)
                drv.reboot(me.ref)
            except XapiError as exc:
                if not (exc.details and exc.details[0] == "OTHER_OPERATION_IN_PROGRESS"):
                    raise
            self._event("xapi.call", method="host.reboot", ok=True, before=before)
        self._wait_back(lambda info: info.boot_time != before and info.enabled, "reboot for guidance")

    def _toolstack(self, drv: PoolDriver, me: HostInfo, level: UpdateLevel) -> None:
        if set(level.pending) & TOOLSTACK_GUIDANCES:
            self.say(f"{self.r.host_name}: restarting the new host's toolstack (guidance restart_toolstack)")
            drv.restart_toolstack(me.ref)
            self._wait_back(lambda info: info.enabled, "toolstack restart")

    def _wait_back(self, done: Callable[[HostInfo], bool], what: str) -> None:
        def probe() -> tuple[bool, str]:
            drv = self.host()
            try:
                info = self._me(drv)
            except XapiUnreachable as exc:
                return False, f"not answering ({exc})"
            except XapiError as exc:
                return False, f"starting ({exc.details[0] if exc.details else '?'})"
            finally:
                drv.close()
            if not done(info):
                return False, f"live, boot_time {info.boot_time}, enabled={info.enabled}"
            return True, "back"
        poll_until(self.clock, self.poll, self.timeout, probe, who=self.r.host_name, what=what, say=self.say,
                   fail=ConvergeFailed)
