"""XenAPI access behind a narrow PoolDriver Protocol; the only module importing XenAPI.

This is the first slice (what `provisioner demo` needs: read a pool, disable / evacuate / reboot / enable a host,
log in again after a master restart). The coordinator issue grows it; keep every call here, with a timeout.
"""

from __future__ import annotations

import socket
import urllib.parse
import xmlrpc.client
from dataclasses import dataclass
from typing import Protocol

import XenAPI

DEFAULT_TIMEOUT = 30.0
Failure = XenAPI.Failure


class XapiUnreachable(ConnectionError):
    """The host did not answer (refused, reset, timed out): during an upgrade that is expected for a while."""


@dataclass(frozen=True)
class HostInfo:
    """What the coordinator reads of one host (xapi.md section 2.3)."""

    ref: str
    uuid: str
    name: str
    address: str
    mac: str | None  # the management PIF's MAC: what the host network-boots with
    enabled: bool
    live: bool
    product_version: str
    build_number: str
    is_master: bool
    boot_time: str


class PoolDriver(Protocol):
    """The calls the coordinator makes on one pool."""

    def hosts(self) -> list[HostInfo]: ...
    def disable(self, host_ref: str) -> None: ...
    def enable(self, host_ref: str) -> None: ...
    def evacuate(self, host_ref: str) -> None: ...
    def reboot(self, host_ref: str) -> None: ...
    def pool_info(self) -> dict: ...
    def evacuation_blockers(self, host_ref: str) -> dict[str, list[str]]: ...
    def close(self) -> None: ...


class _Timeout:
    """The SDK has no timeout: a hung master would block a step forever (xapi.md section 3)."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class _TimeoutTransport(_Timeout, xmlrpc.client.Transport):
    pass


class _SafeTimeoutTransport(_Timeout, xmlrpc.client.SafeTransport):
    pass


class XenApiDriver:
    """PoolDriver over the official `xenapi` package; re-logs in once on SESSION_INVALID."""

    def __init__(self, url: str, username: str, password: str, *, timeout: float = DEFAULT_TIMEOUT):
        self.url, self._username, self._password, self.timeout = url, username, password, timeout
        self._session = None

    def __repr__(self) -> str:  # never show the password
        return f"XenApiDriver({self.url!r}, user={self._username!r})"

    def _login(self):
        transport = (_SafeTimeoutTransport if urllib.parse.urlsplit(self.url).scheme == "https"
                     else _TimeoutTransport)(self.timeout)
        session = XenAPI.Session(self.url, transport=transport)
        try:
            session.xenapi.login_with_password(self._username, self._password, "1.0", "provisioner")
        except (OSError, socket.timeout, xmlrpc.client.ProtocolError) as exc:
            raise XapiUnreachable(f"{self.url}: {exc}") from None
        self._session = session
        return session

    def call(self, method: str, *args):
        """`method` like 'host.get_all_records'; connection problems become XapiUnreachable."""
        for attempt in (1, 2):
            session = self._session or self._login()
            target = session.xenapi
            for part in method.split("."):
                target = getattr(target, part)
            try:
                return target(*args)
            except Failure as exc:
                if exc.details and exc.details[0] == "SESSION_INVALID" and attempt == 1:
                    self._session = None  # the master restarted: sessions are gone (xapi.md 2.2)
                    continue
                raise
            except (OSError, socket.timeout, xmlrpc.client.ProtocolError) as exc:
                self._session = None
                raise XapiUnreachable(f"{self.url}: {method}: {exc}") from None
        raise AssertionError("unreachable")

    def hosts(self) -> list[HostInfo]:
        master = self.call("pool.get_master", self.call("pool.get_all")[0])
        pifs = self.call("PIF.get_all_records")
        macs = {p["host"]: p["MAC"].lower() for p in pifs.values() if p.get("management")}
        found = []
        for ref, rec in self.call("host.get_all_records").items():
            metrics = self.call("host_metrics.get_record", rec["metrics"])
            version = rec.get("software_version", {})
            found.append(HostInfo(
                ref=ref, uuid=rec["uuid"], name=rec["name_label"], address=rec["address"], mac=macs.get(ref),
                enabled=bool(rec["enabled"]), live=bool(metrics.get("live")),
                product_version=version.get("product_version", ""), build_number=version.get("build_number", ""),
                is_master=ref == master, boot_time=str(rec.get("other_config", {}).get("boot_time", ""))))
        return sorted(found, key=lambda h: (not h.is_master, h.name))

    def disable(self, host_ref: str) -> None:
        self.call("host.disable", host_ref)

    def enable(self, host_ref: str) -> None:
        self.call("host.enable", host_ref)

    def evacuate(self, host_ref: str) -> None:
        self.call("host.evacuate", host_ref)

    def reboot(self, host_ref: str) -> None:
        self.call("host.reboot", host_ref)

    def pool_info(self) -> dict:
        """The pool record's fields the prechecks look at (HA, WLB, master ref, name)."""
        ref = self.call("pool.get_all")[0]
        rec = self.call("pool.get_record", ref)
        return {"ref": ref, "name_label": rec.get("name_label", ""), "master": rec.get("master"),
                "ha_enabled": bool(rec.get("ha_enabled")), "wlb_enabled": bool(rec.get("wlb_enabled"))}

    def evacuation_blockers(self, host_ref: str) -> dict[str, list[str]]:
        """VM ref -> [error code, params...] for the VMs that would stop host.evacuate (xapi.md 2.4)."""
        return {vm: list(err) for vm, err in self.call("host.get_vms_which_prevent_evacuation", host_ref).items()}

    def close(self) -> None:
        if self._session is not None:
            try:
                self._session.xenapi.session.logout()
            except (Failure, OSError, xmlrpc.client.ProtocolError):
                pass  # logging out of a host that went away is not an error
            self._session = None
