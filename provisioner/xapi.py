"""XenAPI access behind a narrow PoolDriver Protocol; the only module importing XenAPI.

Nothing else sees the SDK: an error XAPI answers (the SDK's XenAPI.Failure) leaves this module as XapiError, with
the same `details` ([code, *params], docs/xapi.md "Wire format"); a host that does not answer is XapiUnreachable.

Every call has a timeout (the SDK has none); long operations (evacuate, suspend, migrate, HA) run as Async tasks
polled to completion. After the master reboots, relogin_master() logs in again every few seconds, tolerating
refused connections, HOST_STILL_BOOTING and SESSION_INVALID, and never following a HOST_IS_SLAVE redirect.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
import xmlrpc.client
from typing import Callable, Protocol

import XenAPI

from provisioner import xapi_checks, xapi_prechecks, xapi_reinstall, xapi_tls, xapi_updates, xapi_vms
from provisioner.xapi_tls import Trust
from provisioner.xapi_model import HostInfo, JoinFacts, LocalDisk, PbdInfo, VmInfo  # what the calls return

DEFAULT_TIMEOUT = 30.0
TASK_TIMEOUT = 4 * 3600.0  # an evacuation of a big host or a suspend of a big VM takes minutes, not seconds

# While the master's xapi restarts these mean "not back yet" (docs/xapi.md "Sessions",
# "Waiting for the master to return"); anything else is an answer.
MASTER_RESTART_ERRORS = ("HOST_STILL_BOOTING", "SESSION_INVALID")


class XapiError(Exception):
    """XAPI refused a call: `details` is its ErrorDescription, [code, *params] (callers look at details[0])."""

    def __init__(self, details):
        super().__init__(details)
        self.details = details

    def __str__(self) -> str:  # as the SDK's Failure shows itself: the details list
        return str(self.details)


class XapiUnreachable(ConnectionError):
    """The host did not answer (refused, reset, timed out): during an upgrade that is expected for a while."""


class CertificateRefused(XapiUnreachable):
    """The host's certificate is not the trusted one (xapi_tls.py): nothing was sent; the message names the fix."""


def _unreachable(exc: BaseException, where: str) -> XapiUnreachable:
    why = xapi_tls.explain(exc, where)
    return CertificateRefused(why) if why else XapiUnreachable(f"{where}: {exc}")


class MasterNotBack(XapiUnreachable):
    """The master accepted no login within the timeout; the message says what it answered last."""


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class PoolDriver(Protocol):
    """The calls the coordinator makes on one pool."""

    def hosts(self) -> list[HostInfo]: ...
    def disable(self, host_ref: str) -> None: ...
    def enable(self, host_ref: str) -> None: ...
    def evacuate(self, host_ref: str) -> None: ...
    def reboot(self, host_ref: str) -> None: ...
    def shutdown(self, host_ref: str) -> None: ...
    def power_on(self, host_ref: str) -> None: ...
    def pool_info(self) -> dict: ...
    def evacuation_blockers(self, host_ref: str) -> dict[str, list[str]]: ...
    def memory_needs(self, vm_ref: str, host_ref: str) -> tuple[int, int]: ...
    def vms(self) -> list[VmInfo]: ...
    def pbds(self) -> list[PbdInfo]: ...
    def plug_pbd(self, pbd_ref: str, timeout: float | None = None) -> None: ...
    def eject_cd(self, vbd_ref: str) -> None: ...
    def suspend_vm(self, vm_ref: str) -> None: ...
    def clean_shutdown_vm(self, vm_ref: str) -> None: ...
    def hard_shutdown_vm(self, vm_ref: str) -> None: ...
    def resume_vm_on(self, vm_ref: str, host_ref: str) -> None: ...
    def start_vm_on(self, vm_ref: str, host_ref: str, paused: bool = False) -> None: ...
    def migrate_vm(self, vm_ref: str, host_ref: str) -> None: ...
    def assert_can_boot_here(self, vm_ref: str, host_ref: str) -> None: ...
    def fork(self) -> "PoolDriver": ...
    def set_auto_poweron(self, vm_ref: str, on: bool) -> None: ...
    def disable_ha(self) -> None: ...
    def enable_ha(self, heartbeat_srs: list[str], failures_to_tolerate: int) -> None: ...
    def set_wlb_enabled(self, on: bool) -> None: ...
    def relogin_master(self, *, timeout: float, clock: Clock, interval: float = 5.0,
                       progress: Callable[[str], None] = ...) -> float: ...
    def close(self) -> None: ...
    # lab reinstall-and-join (coordinator/reinstall.py)
    def management_network(self, host_ref: str) -> dict: ...
    def destroy_host(self, host_ref: str) -> None: ...
    def join_pool(self, master_address: str, username: str, password: str) -> None: ...
    def local_disks(self, host_ref: str) -> list[LocalDisk]: ...
    def join_facts(self, host_ref: str) -> JoinFacts: ...
    def test_upgrade_url(self, host_ref: str, url: str) -> str: ...
    def prepare_upgrade(self, host_ref: str, url: str) -> str: ...
    # plan prechecks (xapi_prechecks.py, docs/prechecks.md)
    def precheck_facts(self) -> xapi_prechecks.PoolFacts: ...
    def safe_to_upgrade(self, host_ref: str) -> str: ...
    def dom0_memory_after_upgrade(self, host_ref: str) -> int | None: ...
    def server_key_bits(self, host_ref: str) -> int | None: ...
    # update level (coordinator/converge.py, xapi_updates.py, docs/converge.md)
    def repositories(self) -> list[xapi_updates.RepositoryInfo]: ...
    def introduce_bundle_repository(self, name: str, description: str) -> str: ...
    def introduce_mirror_repository(self, name: str, description: str, binary_url: str, source_url: str = "",
                                    gpgkey_path: str = "") -> str: ...
    def introduce_remote_pool_repository(self, name: str, description: str, binary_url: str,
                                         certificate: str) -> str: ...
    def pool_repositories(self) -> list[str]: ...
    def set_pool_repositories(self, refs: list[str]) -> None: ...
    def sync_updates(self, *, force: bool = False, username: str = "", password: str = "") -> str: ...
    def upload_bundle(self, path: str, timeout: float | None = None) -> None: ...
    def update_level(self, host_ref: str) -> xapi_updates.UpdateLevel: ...
    def apply_updates(self, host_ref: str, hash_: str) -> list[list[str]]: ...
    def restart_toolstack(self, host_ref: str) -> None: ...
    def host_operations(self, host_ref: str) -> list[str]: ...
    def server_certificate(self, host_ref: str) -> str: ...


class XenApiDriver(xapi_vms.VmCalls, xapi_reinstall.ReinstallCalls, xapi_checks.CheckCalls,
                   xapi_prechecks.PrecheckCalls, xapi_updates.UpdateCalls):
    """PoolDriver over the official `xenapi` package; re-logs in once on SESSION_INVALID."""

    def __init__(self, url: str, username: str, password: str, *, timeout: float = DEFAULT_TIMEOUT,
                 task_timeout: float = TASK_TIMEOUT, trust: Trust | None = None):
        self.url, self._username, self._password, self.timeout = url, username, password, timeout
        self.trust = trust or Trust()  # how its HTTPS certificate is checked (xapi_tls.py, docs/xapi.md "TLS")
        self.task_timeout = task_timeout
        self._session = None

    def __repr__(self) -> str:  # never show the password
        return f"XenApiDriver({self.url!r}, user={self._username!r})"

    def _login(self):
        session = XenAPI.Session(self.url, transport=xapi_tls.transport(self.url, self.timeout, self.trust))
        try:
            session.xenapi.login_with_password(self._username, self._password, "1.0", "provisioner")
        except XenAPI.Failure as exc:
            raise XapiError(exc.details) from None
        except (OSError, socket.timeout, xmlrpc.client.ProtocolError) as exc:
            raise _unreachable(exc, self.url) from None
        self._session = session
        return session

    def call(self, method: str, *args):
        """`method` like 'host.get_all_records'; the one funnel of every call: XAPI's refusals become XapiError,
        connection problems XapiUnreachable."""
        for attempt in (1, 2):
            session = self._session or self._login()
            target = session.xenapi
            for part in method.split("."):
                target = getattr(target, part)
            try:
                return target(*args)
            except XenAPI.Failure as exc:
                if exc.details and exc.details[0] == "SESSION_INVALID" and attempt == 1:
                    self._session = None  # the master restarted: sessions are gone (docs/xapi.md "Sessions")
                    continue
                raise XapiError(exc.details) from None
            except (OSError, socket.timeout, xmlrpc.client.ProtocolError) as exc:
                self._session = None
                raise _unreachable(exc, f"{self.url}: {method}") from None
        raise AssertionError("unreachable")

    def hosts(self) -> list[HostInfo]:
        """Every host of the pool, master first: five XAPI calls whatever the pool's size (docs/xapi.md
        "Connections": each call is a connection of its own). The metrics are read before the hosts, so a host
        missing from them joined in between: its own record is read then."""
        master = self.call("pool.get_master", self.call("pool.get_all")[0])
        pifs = self.call("PIF.get_all_records")
        macs = {p["host"]: p["MAC"].lower() for p in pifs.values() if p.get("management")}
        all_metrics = self.call("host_metrics.get_all_records")
        found = []
        for ref, rec in self.call("host.get_all_records").items():
            metrics = all_metrics.get(rec["metrics"]) or self.call("host_metrics.get_record", rec["metrics"])
            version = rec.get("software_version", {})
            found.append(HostInfo(
                ref=ref, uuid=rec["uuid"], name=rec["name_label"], address=rec["address"], mac=macs.get(ref),
                enabled=bool(rec["enabled"]), live=bool(metrics.get("live")),
                product_version=version.get("product_version", ""), build_number=version.get("build_number", ""),
                is_master=ref == master, boot_time=str(rec.get("other_config", {}).get("boot_time", "")),
                power_on_mode=str(rec.get("power_on_mode") or ""),
                memory_free=int(metrics.get("memory_free") or 0)))
        return sorted(found, key=lambda h: (not h.is_master, h.name))

    def disable(self, host_ref: str) -> None:
        self.call("host.disable", host_ref)

    def enable(self, host_ref: str) -> None:
        self.call("host.enable", host_ref)

    def evacuate(self, host_ref: str) -> None:
        self.task("host.evacuate", host_ref)

    def reboot(self, host_ref: str) -> None:
        self.call("host.reboot", host_ref)

    def shutdown(self, host_ref: str) -> None:
        self.call("host.shutdown", host_ref)

    def power_on(self, host_ref: str) -> None:
        self.task("host.power_on", host_ref)  # runs the power-on plugin (wake-on-lan, IPMI) on the master

    def pool_info(self) -> dict:
        """The pool record's fields the prechecks, PREPARE and FINALIZE look at: HA (with what re-enabling it
        needs: the heartbeat SRs of its statefiles and the failures to tolerate), WLB, rolling_upgrade_in_progress."""
        ref = self.call("pool.get_all")[0]
        rec = self.call("pool.get_record", ref)
        srs = []
        for vdi in rec.get("ha_statefiles", []):
            try:
                srs.append(self.call("VDI.get_SR", vdi))
            except XapiError:
                pass  # a statefile that went away: enable_ha then falls back to the pool's default SR
        return {"ref": ref, "name_label": rec.get("name_label", ""), "master": rec.get("master"),
                "ha_enabled": bool(rec.get("ha_enabled")), "wlb_enabled": bool(rec.get("wlb_enabled")),
                "ha_host_failures_to_tolerate": int(rec.get("ha_host_failures_to_tolerate") or 0),
                "ha_heartbeat_srs": sorted(set(srs)),
                "rolling_upgrade_in_progress": "rolling_upgrade_in_progress" in rec.get("other_config", {})}

    def evacuation_blockers(self, host_ref: str) -> dict[str, list[str]]:
        """VM ref -> [error code, params...] for the VMs that would stop host.evacuate (docs/xapi.md
        "Host lifecycle calls")."""
        return {vm: list(err) for vm, err in self.call("host.get_vms_which_prevent_evacuation", host_ref).items()}

    def memory_needs(self, vm_ref: str, host_ref: str) -> tuple[int, int]:
        """(bytes the VM needs: memory_target + memory_overhead, the most host_metrics.memory_free of another enabled
        live host): how much memory HOST_NOT_ENOUGH_FREE_MEMORY [vm] of an evacuation plan is short (docs/xapi.md
        "Host lifecycle calls")."""
        vm = self.call("VM.get_record", vm_ref)
        need = int(vm.get("memory_target") or 0) + int(vm.get("memory_overhead") or 0)
        metrics, best = self.call("host_metrics.get_all_records"), 0
        for ref, rec in self.call("host.get_all_records").items():
            found = metrics.get(rec.get("metrics"), {})
            if ref != host_ref and rec.get("enabled") and found.get("live"):
                best = max(best, int(found.get("memory_free") or 0))
        return need, best

    def task(self, method: str, *args, timeout: float | None = None):
        """Run `Async.<method>` and poll its task to the end (XenCenter polls every 100 ms, docs/xapi.md
        "XenCenter's plan for each host"); the task's error comes back as the same XapiError the synchronous call
        would raise; the result is returned."""
        ref = self.call(f"Async.{method}", *args)
        try:
            return self.wait_task(ref, method, timeout=timeout)
        finally:
            self.destroy_task(ref)

    def wait_task(self, ref: str, method: str, *, timeout: float | None = None):
        """Wait for task `ref` to end: its result, or its error as an XapiError; cancelled after the timeout.

        Through event.from on that one task (`task/<ref>`, docs/xapi.md "Tasks and events"): the first call returns
        the task as it is, each next one blocks until the task changes, so its end is seen when it happens, with a
        call per change of the task instead of a poll every 50 ms to 2 s (and its record carries the result)."""
        limit = self.task_timeout if timeout is None else timeout
        deadline, token, record = time.monotonic() + limit, "", None
        while record is None or record.get("status") in ("pending", "cancelling"):
            left = deadline - time.monotonic()
            if record is not None and left <= 0:
                self.call("task.cancel", ref)
                raise XapiUnreachable(f"{self.url}: {method} still running after {limit / 60:.0f} min "
                                      "(asked to cancel)")
            # token "" answers at once; later waits stay shorter than the socket's timeout
            wait = max(0.0, min(left, self.timeout / 3)) if token else 0.0
            batch = self.call("event.from", [f"task/{ref}"], token, float(wait))
            for event in batch.get("events", []):
                if event.get("ref") == ref:
                    if event.get("operation") == "del":
                        raise XapiError(["HANDLE_INVALID", "task", ref])  # destroyed under us (a master restart)
                    record = event.get("snapshot") or record
            if not token and record is None:
                raise XapiError(["HANDLE_INVALID", "task", ref])  # token "" returns it if it exists at all
            token = batch["token"]
        if record["status"] != "success":
            raise XapiError(list(record.get("error_info") or []) or [f"TASK_{str(record['status']).upper()}"])
        return record.get("result", "")

    def destroy_task(self, ref: str) -> None:
        try:
            self.call("task.destroy", ref)
        except (XapiError, XapiUnreachable):
            pass  # tasks vanish with a master restart anyway (docs/xapi.md "Tasks and events")

    def put(self, uri: str, path: str, *, task: str, timeout: float | None = None) -> None:
        """HTTP PUT of the file at `path` to `uri` on this host, with this session and `task` as query parameters
        (how xe and XenCenter upload to XAPI's HTTP handlers), over the same TLS trust as the XML-RPC calls. A
        refusal before the task took it (400, 403, ...) is an XapiError naming the status."""
        session = self._session or self._login()
        query = urllib.parse.urlencode({"session_id": session._session, "task_id": task})
        try:
            status, body = xapi_tls.put_file(f"{self.url.rstrip('/')}{uri}?{query}", path, self.trust,
                                             timeout if timeout is not None else self.task_timeout)
        except (OSError, socket.timeout) as exc:
            raise _unreachable(exc, f"{self.url}: PUT {uri}") from None
        if status >= 300:
            raise XapiError([f"HTTP_{status}", f"PUT {uri}", body[:200]])

    def fork(self) -> "XenApiDriver":
        """The same pool and credentials with a session of its own: one per thread of a wave (the XenAPI session
        object is not meant to be shared between threads)."""
        return XenApiDriver(self.url, self._username, self._password, timeout=self.timeout,
                            task_timeout=self.task_timeout, trust=self.trust)

    def disable_ha(self) -> None:
        self.task("pool.disable_ha")

    def enable_ha(self, heartbeat_srs: list[str], failures_to_tolerate: int) -> None:
        """As XenCenter's EnableHAAction: failures to tolerate first, then enable_ha on the heartbeat SRs."""
        pool = self.call("pool.get_all")[0]
        self.call("pool.set_ha_host_failures_to_tolerate", pool, str(int(failures_to_tolerate)))
        self.task("pool.enable_ha", list(heartbeat_srs), {})

    def set_wlb_enabled(self, on: bool) -> None:
        self.call("pool.set_wlb_enabled", self.call("pool.get_all")[0], bool(on))

    def probe_master(self) -> str | None:
        """One fresh login at this URL plus one call: None when the master answers, else why not. Refused / reset /
        timed-out, HOST_STILL_BOOTING and SESSION_INVALID mean "not back yet"; HOST_IS_SLAVE [address] is reported
        and NOT followed: during an upgrade it names the master being upgraded (docs/xapi.md
        "Waiting for the master to return")."""
        self._session = None  # sessions die with the master's xapi (docs/xapi.md "Sessions"): never reuse the old one
        try:
            self.call("pool.get_all")
        except CertificateRefused:
            raise  # not "not back yet": a new certificate is the operator's decision (docs/xapi.md "TLS")
        except XapiUnreachable as exc:
            return f"not answering ({exc})"
        except XapiError as exc:
            code = exc.details[0] if exc.details else ""
            if code in MASTER_RESTART_ERRORS:
                self._session = None
                return f"starting ({code})"
            if code == "HOST_IS_SLAVE":
                self._session = None
                where = exc.details[1] if len(exc.details) > 1 else "?"
                return (f"{self.url} answers HOST_IS_SLAVE (master at {where}): redirect not followed, "
                        "it names the host being upgraded")
            raise
        return None

    def relogin_master(self, *, timeout: float, clock: Clock, interval: float = 5.0,
                       progress: Callable[[str], None] = lambda why: None) -> float:
        """Log in again after the master's restart, every `interval` s (XenCenter: 5 s) for at most `timeout` s of
        `clock`: the seconds waited, or MasterNotBack. `progress` gets each new reason it is not back yet."""
        start, last = clock.now(), None
        while True:
            why = self.probe_master()
            if why is None:
                return clock.now() - start
            if why != last:
                progress(why)
                last = why
            if clock.now() - start >= timeout:
                raise MasterNotBack(f"the master at {self.url} accepted no login for {timeout / 60:.0f} min "
                                    f"(last: {why})")
            clock.sleep(interval)

    def close(self) -> None:
        if self._session is not None:
            try:
                self._session.xenapi.session.logout()
            except (XenAPI.Failure, OSError, xmlrpc.client.ProtocolError):
                pass  # logging out of a host that went away is not an error
            self._session = None

    # --- XenCenter's host plugin (coordinator/hostplugin.py, docs/host-plugin.md) ---

    def call_plugin(self, host_ref: str, plugin: str, fn: str, args: dict[str, str]) -> str:
        """host.call_plugin: runs /etc/xapi.d/plugins/<plugin> <fn> in the host's dom0; its failure is an
        XapiError (XENAPI_PLUGIN_FAILURE [fn, class, message], XENAPI_MISSING_PLUGIN [plugin], ...)."""
        return str(self.call("host.call_plugin", host_ref, plugin, fn, dict(args)))

    def test_upgrade_url(self, host_ref: str, url: str) -> str:
        """prepare_host_upgrade.py testUrl: the host reaches the media at `url` and it is not older than it."""
        return self.call_plugin(host_ref, "prepare_host_upgrade.py", "testUrl", {"url": url})

    def prepare_upgrade(self, host_ref: str, url: str) -> str:
        """prepare_host_upgrade.py main: the host downloads the installer and makes its one-shot upgrade entry
        (with its own answer file) the default of its bootloader; the next host.reboot enters the installer."""
        return self.call_plugin(host_ref, "prepare_host_upgrade.py", "main", {"url": url})
