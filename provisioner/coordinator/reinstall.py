"""Lab reinstall-and-join: forget a dead member, fresh-install it over PXE, join the new host to the pool.

The vendor remedy for a member whose upgrade failed ("use host-forget, re-install, then pool-join it as a new
host"), and the lab's routine reinstall. The ONLY flow that may wipe a disk: reinstall_plan.py refuses it unless
every check passes. Steps (provisioner.states, kind REINSTALL), each committed BEFORE its action and each
reading the world first, so a crashed flow resumes without a second host.destroy, a second arming (never two
fresh installs) or a second pool.join:

  FORGET (host.destroy) -> ARM (one-shot fresh-install attempt) -> INSTALLING (installer's start/complete
  scripts) -> WAIT_XAPI (log in to the new standalone host: a new uuid at the media's version) -> JOIN
  (pool.join master, pool credentials) -> WAIT_JOINED (new uuid live and enabled in the pool) -> DONE

A pool.join refusal (updates, edition, ... after the install) is not the end: the flow waits at JOIN_REFUSED with
the new host standalone, and the same command run again retries JOIN. The VM disks the operator accepted to lose
(--accept-data-loss) are journaled when the flow is committed and named in its final report. The flow service
(service.py) drives each flow on a thread, and drives the unfinished ones again when `serve` starts.
"""

from __future__ import annotations

from typing import Callable

from provisioner import sites, states
from provisioner.boot import attempts
from provisioner.config import Config
from provisioner.coordinator import pools, reinstall_converge, selfcheck, wiring
from provisioner.coordinator.plan import at_target
from provisioner.coordinator.reinstall_join import FIX_THEN_RERUN, join_hint
from provisioner.coordinator.reinstall_trust import new_host_trust
from provisioner.coordinator.reinstall_plan import (Connect, ReinstallRefused, check_confirmation, describe_disk,
                                                    make_reinstall_plan)
from provisioner.coordinator.context import ReinstallTimeouts, poll_until
from provisioner.coordinator.steps import RealClock
from provisioner.model import normalize_mac
from provisioner.power.base import PowerError
from provisioner.store import NotFoundError, Store
from provisioner.store.reinstalls import Reinstall
from provisioner.xapi import CertificateRefused, HostInfo, PoolDriver, Trust, XapiError, XapiUnreachable

ConnectHost = Callable[[str, str, str, Trust], PoolDriver]  # (url, username, password, trust) -> one host's driver
_NOT_YET = ("HOST_STILL_BOOTING", "SESSION_INVALID")
# What a refused host.destroy means, and the vendor's way out (docs/xapi.md "Host lifecycle calls").
DESTROY_HINTS = {
    "HOST_IS_LIVE": "the pool still sees the host as live: shut it down (`xe host-disable` + `xe host-shutdown`), "
                    "or after a crash wait until the pool marks it dead (up to 10 minutes), then run the command again",
    "HOST_HAS_RESIDENT_VMS": "VMs are still resident on it: reset their power state (`xe vm-reset-powerstate "
                             "uuid=... --force`, VM.power_state_reset) or `xe host-declare-dead`, then run again",
    "HA_IS_ENABLED": "HA is enabled: `xe pool-ha-disable` first, then run again",
}


class ReinstallFailed(RuntimeError):
    """A step could not reach its effect; the message is the reason shown to the operator."""


class BootServerNotReady(RuntimeError):
    """Our boot server would not give the host its installer (selfcheck.py): it is not powered on, the flow stays
    at INSTALLING, and the same command run again after the fix checks again and powers it on."""


class BmcPowerOnFailed(BootServerNotReady):
    """The host's BMC did not network-boot it (power/base.py PowerError); the flow stays at INSTALLING, resumable."""


class JoinRefused(RuntimeError):
    """pool.join refused the new standalone host; the message says why and what to do (the flow waits)."""


def start(store: Store, mac: str, pool: str, media_name: str, *, confirm: str | None, forget: bool,
          root_password_hash: str | None, connect: Connect, host_url: str | None = None,
          accept_data_loss: bool = False, fix_before_join: bool = False, **plan_kw) -> Reinstall:
    """Check everything (reinstall_plan), then commit the flow at FORGET or ARM; nothing else is done here.

    The host's reinstall in progress (after a crash or a restart, or waiting at JOIN_REFUSED) is returned instead,
    once the operator has confirmed the same host name again and asked for the same pool and media: no new checks,
    no second arming; running it retries where it stopped.
    """
    host = check_confirmation(store, mac, confirm)
    active = store.active_reinstall(host.mac)
    if active is not None:
        if (active.pool, active.media) != (pool, media_name):
            raise ReinstallRefused([f"host {host.mac} has reinstall {active.id} in progress into pool {active.pool} "
                                    f"with {active.media} (step {active.step}): resume that one"])
        store.add_event("reinstall.resumed", mac=host.mac, details={"reinstall": active.id, "step": active.step})
        return active
    plan = make_reinstall_plan(store, host.mac, pool, media_name, confirm=confirm, forget=forget,
                               root_password_hash=root_password_hash, connect=connect, host_url=host_url,
                               accept_data_loss=accept_data_loss, fix_before_join=fix_before_join, **plan_kw)
    if not plan.ok:
        store.add_event("reinstall.refused", mac=host.mac, details={"pool": pool, "media": media_name,
                                                                    "problems": plan.problems,
                                                                    "data_loss": plan.data_loss})
        raise ReinstallRefused(plan.problems, plan.data_loss)
    return store.create_reinstall(host.mac, pool, media_name, host_name=host.name, forget_first=plan.forget,
                                  old_uuid=plan.old_uuid, old_pool=plan.old_pool, host_url=plan.host_url,
                                  network=plan.network, root_password_hash=root_password_hash,
                                  data_lost=plan.data_loss)


def opening_lines(store: Store, found: Reinstall) -> list[str]:
    """What the operator is told before the flow is driven: the disks accepted lost, and the host.destroy ahead."""
    lines = [f"{found.host_name}: accepted loss: {describe_disk(disk)}" for disk in store.data_lost(found)]
    if found.step == states.RI_FORGET:
        lines.append(f"{found.host_name}: forgetting uuid {found.old_uuid} in pool {found.old_pool} (host.destroy)")
    return lines


def status(store: Store, mac: str) -> list[Reinstall]:
    """The host's reinstalls, newest first."""
    return store.list_reinstalls(normalize_mac(mac))


class Flow:
    """Drives one reinstall to DONE or FAILED; construct it again on the same store after a crash (resume)."""

    def __init__(self, store: Store, config: Config, reinstall_id: int, *, connect: Connect | None = None,
                 connect_host: ConnectHost | None = None, clock=None, timeouts: ReinstallTimeouts | None = None,
                 say: Callable[[str], None] = lambda line: None, power_on: Callable[[], None] | None = None,
                 on_commit: Callable[[Reinstall], None] | None = None):
        found = store.get_reinstall(reinstall_id)
        if found is None:
            raise NotFoundError(f"no reinstall {reinstall_id}")
        self.store, self.config, self.id, self.say = store, config, reinstall_id, say
        self.connect = connect or (lambda name: pools.connect(store, name))
        self.connect_host = connect_host or wiring.host_driver
        self.clock = clock or RealClock()
        self.timeouts = timeouts or wiring.reinstall_timeouts(config)
        self.power_on, self.on_commit = power_on, on_commit or (lambda r: None)
        if power_on is None:  # a host with a BMC is network-booted once through it; else the operator powers it on
            self.power_on = wiring.bmc_power_on(store, config, store.get_host(found.mac), clock=self.clock, say=say)
        self.media = store.get_media(found.media)
        self.username = pools.get_pool(store, found.pool).username
        self._password = pools.pool_password(store, found.pool)  # for the logins only; never shown
        self._drivers: dict[str, PoolDriver] = {}

    def _pool(self, name: str) -> PoolDriver:
        """One logged-in driver per pool for the whole flow (it logs in again by itself after SESSION_INVALID)."""
        if name not in self._drivers:
            self._drivers[name] = self.connect(name)
        return self._drivers[name]

    @property
    def record(self) -> Reinstall:
        return self.store.get_reinstall(self.id)

    def run(self) -> Reinstall:
        steps = {states.RI_FORGET: self._forget, states.RI_ARM: self._arm, states.RI_INSTALLING: self._installing,
                 states.RI_WAIT_XAPI: self._wait_xapi, states.RI_CONVERGE: self._converge, states.RI_JOIN: self._join,
                 states.RI_WAIT_JOINED: self._wait_joined}
        r = self.record
        if r.step in states.REINSTALL_WAITING:  # the operator ran the command again: converge (a no-op at the
            r = self._next(r, states.RI_CONVERGE)  # pool's level), then retry pool.join
        try:
            while r.step not in states.REINSTALL_TERMINAL and r.step not in states.REINSTALL_WAITING:
                try:
                    r = steps[r.step](r)
                except JoinRefused as exc:  # a waiting state, not the end: nothing to undo, the host is standalone
                    self.say(f"{r.host_name}: WAITING at {states.RI_JOIN_REFUSED}: {exc}")
                    r = self.store.set_reinstall_step(self.id, states.RI_JOIN_REFUSED, reason=str(exc))
                except BootServerNotReady as exc:  # nothing was powered on: stop here, resumable as it is
                    self.say(f"{r.host_name}: NOT powered on, stopped at {r.step}: {exc}; fix it, then run the same "
                             "command again")
                    self.store.add_event("reinstall.not_powered_on", mac=r.mac, details={
                        "reinstall": r.id, "why": str(exc)[:500]})
                    break
                except (ReinstallFailed, XapiError, XapiUnreachable, NotFoundError, ValueError) as exc:
                    reason = f"{r.step}: {exc}"
                    self.say(f"{r.host_name}: FAILED at {reason}")
                    r = self.store.set_reinstall_step(self.id, states.RI_FAILED, reason=reason)
                self.on_commit(r)  # tests stop the flow here to stand for a crash at a step boundary
        finally:
            for driver in self._drivers.values():
                driver.close()
        self.say(f"{r.host_name}: reinstall {r.id} {r.step}" + (f" ({r.reason})" if r.reason else ""))
        return r

    def _next(self, r: Reinstall, step: str, **updates) -> Reinstall:
        self.say(f"{r.host_name}: {step}")
        return self.store.set_reinstall_step(self.id, step, **updates)

    def _wait(self, what: str, timeout: float, probe: Callable[[], tuple[bool, str]]) -> None:
        poll_until(self.clock, self.timeouts.poll, timeout, probe, who=self.record.host_name, what=what,
                   say=self.say, fail=ReinstallFailed)

    def _pool_host(self, uuid: str | None) -> HostInfo | None:
        try:
            return next((h for h in self._pool(self.record.pool).hosts() if h.uuid == uuid), None)
        except (XapiUnreachable, XapiError):
            return None

    # --- steps: each reads the world first and returns the committed next step ---

    def _forget(self, r: Reinstall) -> Reinstall:
        driver = self._pool(r.old_pool)
        info = next((h for h in driver.hosts() if h.uuid == r.old_uuid), None)
        if info is not None:  # else: already forgotten (before a crash, or by hand)
            if info.live:
                raise ReinstallFailed(f"host.destroy not sent: HOST_IS_LIVE: {DESTROY_HINTS['HOST_IS_LIVE']}")
            try:
                driver.destroy_host(info.ref)
            except XapiError as exc:
                code = exc.details[0] if exc.details else "?"
                raise ReinstallFailed(f"host.destroy refused: {code}: "
                                      f"{DESTROY_HINTS.get(code, ' '.join(exc.details[1:]))}") from None
            self.store.add_event("xapi.call", mac=r.mac, details={"method": "host.destroy", "ok": True,
                                                                  "uuid": r.old_uuid, "pool": r.old_pool})
        return self._next(r, states.RI_ARM)

    def _arm(self, r: Reinstall) -> Reinstall:
        attempt = attempts.arm_fresh_install(self.store, r.id)  # ARM -> INSTALLING in one transaction
        self.say(f"{r.host_name}: fresh install armed (attempt {attempt.id}): power the host on or reboot it so "
                 "that it network-boots; its next PXE boot gets the installer, once")
        return self.record

    def _installing(self, r: Reinstall) -> Reinstall:
        attempt = self.store.get_attempt(r.attempt_id)
        if attempt.state == states.ARMED:
            try:  # the operator powers it on when we do not: then a failed check is a warning for them
                host = self.store.get_host(r.mac)
                selfcheck.check_boot_server(sites.site_config(self.store, self.config, host), host, self.media,
                                            attempt)
            except selfcheck.SelfCheckFailed as exc:
                if self.power_on is not None:
                    raise BootServerNotReady(f"the boot server would not give it the installer: {exc}") from None
                self.say(f"{r.host_name}: WARNING: do not power it on yet: {exc}")
        if self.power_on is not None and attempt.state == states.ARMED:
            try:
                self.power_on()
            except PowerError as exc:
                raise BmcPowerOnFailed(f"not powered on through its BMC: {exc}") from None
            self.power_on = None

        def probe() -> tuple[bool, str]:
            attempt = self.store.get_attempt(r.attempt_id)
            if attempt.state in (states.FAILED, states.DISARMED, states.EXPIRED):
                raise ReinstallFailed(f"the fresh-install attempt {attempt.id} ended {attempt.state}"
                                      + (f" (installer exit code {attempt.exit_code})" if attempt.exit_code else "")
                                      + "; the disk may be half-written: check the host's console")
            waiting = {states.ARMED: "waiting for the host to network-boot the installer",
                       states.STARTED: "installer running (boot window closed)"}
            return attempt.state == states.SUCCEEDED, waiting.get(attempt.state, attempt.state)
        self._wait("fresh install", self.timeouts.install, probe)
        return self._next(r, states.RI_WAIT_XAPI)

    def _standalone(self, r: Reinstall) -> tuple[HostInfo | None, str]:
        """The new host as its own XAPI shows it (None while it is not answering) and what was seen."""
        trust = new_host_trust(self.store, r, self.say)  # pinned before the first password is sent
        if trust is None:
            return None, "not answering (no TLS handshake yet)"
        driver = self.connect_host(r.host_url, self.username, self._password, trust)
        try:
            found = driver.hosts()
        except CertificateRefused as exc:  # not "not answering": another certificate than the pinned one
            raise ReinstallFailed(str(exc)) from None
        except XapiUnreachable as exc:
            return None, f"not answering ({exc})"
        except XapiError as exc:
            code = exc.details[0] if exc.details else "?"
            if code in _NOT_YET:
                return None, f"starting ({code})"
            if code == "SESSION_AUTHENTICATION_FAILED":
                raise ReinstallFailed("the new host refused the pool's credentials: its root password is not the "
                                      "pool's (the hash given did not match?)") from None
            if code == "HOST_IS_SLAVE":
                return None, f"already a pool member (HOST_IS_SLAVE {' '.join(exc.details[1:])})"
            raise
        finally:
            driver.close()
        if len(found) != 1 or not found[0].is_master:
            raise ReinstallFailed(f"{r.host_url} is not a standalone host ({len(found)} hosts in its pool)")
        return found[0], f"standalone host {found[0].uuid} at {found[0].product_version}"

    def _wait_xapi(self, r: Reinstall) -> Reinstall:
        seen: list[HostInfo] = []

        def probe() -> tuple[bool, str]:
            info, what = self._standalone(self.record)  # the record: its pin, once taken, is used from then on
            if info is not None:
                if info.uuid == r.old_uuid:
                    raise ReinstallFailed(f"{r.host_url} still answers as the old host {info.uuid}: no fresh install")
                if self.media is not None and not at_target(info, self.media):
                    raise ReinstallFailed(f"the new host runs {info.product_version}, not the media's "
                                          f"{self.media.product_version}")
                seen.append(info)
                # xapi's startup is not complete until the host is enabled (docs/xapi.md "Host lifecycle calls")
                if not info.enabled:
                    return False, f"{what}, starting (not enabled yet)"
            return info is not None, what
        self._wait("new host's XAPI", self.timeouts.xapi, probe)
        return self._next(r, states.RI_CONVERGE, new_uuid=seen[-1].uuid)

    def _converge(self, r: Reinstall) -> Reinstall:
        """CONVERGE: the new host at the master's update level before pool.join (reinstall_converge.py)."""
        if self._pool_host(r.new_uuid) is not None:  # joined before a crash
            return self._next(r, states.RI_JOIN)

        def host() -> PoolDriver:
            trust = new_host_trust(self.store, self.record, self.say)
            if trust is None:
                raise XapiUnreachable(f"{r.host_url}: no TLS handshake yet")
            return self.connect_host(r.host_url, self.username, self._password, trust)
        pool = pools.get_pool(self.store, r.pool)
        try:
            reinstall_converge.Converger(
                self.store, r, self._pool(r.pool), host, username=self.username, password=self._password,
                pinned=pool.tls_fingerprint, clock=self.clock, poll=self.timeouts.poll, timeout=self.timeouts.xapi,
                say=self.say).run()
        except reinstall_converge.ConvergeFailed as exc:
            raise ReinstallFailed(f"not at the pool's update level: {exc}") from None
        return self._next(r, states.RI_JOIN)

    def _join(self, r: Reinstall) -> Reinstall:
        if self._pool_host(r.new_uuid) is not None:  # joined before a crash
            return self._next(r, states.RI_WAIT_JOINED)
        master = next((h for h in self._pool(r.pool).hosts() if h.is_master), None)
        if master is None:
            raise ReinstallFailed(f"pool {r.pool} names no master")

        def probe() -> tuple[bool, str]:
            trust = new_host_trust(self.store, self.record, self.say)
            if trust is None:
                return False, "not answering (no TLS handshake yet)"
            driver = self.connect_host(r.host_url, self.username, self._password, trust)
            try:
                driver.join_pool(master.address, self.username, self._password)
            except CertificateRefused as exc:
                raise ReinstallFailed(str(exc)) from None
            except XapiUnreachable as exc:
                return False, f"not answering ({exc})"
            except XapiError as exc:
                code = exc.details[0] if exc.details else "?"
                # pool.join's first pre-check: the management interface is up (docs/xapi.md "Host lifecycle calls")
                if code in _NOT_YET:
                    return False, f"starting ({code})"
                if code == "HOST_IS_SLAVE":  # an earlier pool.join went through (answer lost): a member already
                    return True, "already a member"
                hint = join_hint(code, list(exc.details[1:]))
                if code == "POOL_HOSTS_NOT_COMPATIBLE":
                    hint = (f"the new host and the master ({master.product_version}) must run the same version: "
                            f"upgrade the master, then `xe pool-join master-address={master.address}` on the new "
                            f"host ({r.host_url})")
                raise JoinRefused(f"pool.join refused: {code}: {hint}; {FIX_THEN_RERUN}") from None
            finally:
                driver.close()
            return True, "sent"
        self._wait("pool.join", self.timeouts.xapi, probe)
        self.store.add_event("xapi.call", mac=r.mac, details={"method": "pool.join", "master": master.address,
                                                              "uuid": r.new_uuid, "ok": True})
        return self._next(r, states.RI_WAIT_JOINED)

    def _wait_joined(self, r: Reinstall) -> Reinstall:
        found: list[HostInfo] = []

        def probe() -> tuple[bool, str]:
            info = self._pool_host(r.new_uuid)
            if info is None:
                return False, f"uuid {r.new_uuid} not in pool {r.pool} yet"
            found.append(info)
            return info.live and info.enabled, f"live={info.live} enabled={info.enabled}"
        self._wait(f"joining pool {r.pool}", self.timeouts.joined, probe)
        info = found[-1]
        host = self.store.get_host(r.mac)
        changes = {k: v for k, v in (("pool", r.pool), ("name", info.name)) if host and getattr(host, k) != v}
        if changes:
            self.store.update_host(r.mac, changes)
        self.store.add_event("host.reinstalled", mac=r.mac, details={
            "reinstall": r.id, "pool": r.pool, "old_uuid": r.old_uuid, "new_uuid": r.new_uuid, "name": info.name,
            "version": info.product_version, "data_lost": self.store.data_lost(r)})
        return self._next(r, states.RI_DONE)
