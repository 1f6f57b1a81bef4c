"""Redfish boot control through sushy (the only sushy importer; docs/power.md "Redfish").

The service root URL (https://bmc or http://bmc:8000) with session authentication when the service root links a
Sessions collection, else basic authentication from the start (_AuthByServiceRoot); the system found by
its Id or by the host's MAC among its EthernetInterfaces; power through ComputerSystem.Reset (On, ForceOff,
GracefulShutdown, ForceRestart); the one-time boot override BootSourceOverrideTarget=Pxe (UefiHttp when asked for
and advertised), BootSourceOverrideEnabled=Once, BootSourceOverrideMode=UEFI or Legacy. `verify` is True, False
(a BMC's self-signed certificate) or the path of a CA bundle.
"""

from __future__ import annotations

import sushy
import sushy.auth
from sushy import exceptions as sushy_exceptions

from .base import PowerError, PowerState

# PowerState values a BMC may report (DMTF Resource.PowerState); a machine powering off is not off yet
_ON_STATES = {sushy.PowerState.ON, sushy.PowerState.POWERING_ON, sushy.PowerState.POWERING_OFF}


def _problem(exc: Exception) -> str:
    """Our words for sushy's error (its text can quote a request; it never reaches a message)."""
    if isinstance(exc, sushy_exceptions.AccessError):
        return "wrong username or password (access refused)"
    if isinstance(exc, sushy_exceptions.ConnectionError):
        return "unreachable (no answer from the Redfish service)"
    if isinstance(exc, sushy_exceptions.ResourceNotFoundError):
        return "the Redfish service has no such resource"
    if isinstance(exc, sushy_exceptions.InvalidParameterValueError):
        return "the BMC does not offer that value"
    if isinstance(exc, sushy_exceptions.HTTPError):
        return f"the Redfish service answered HTTP {getattr(exc, 'status_code', '?')}"
    return f"Redfish error ({type(exc).__name__})"


class _AuthByServiceRoot(sushy.auth.SessionOrBasicAuth):
    """sushy's SessionOrBasicAuth, except that a service root without `Links/Sessions` (DSP0266's way to find the
    session service, what sushy's get_sessions_path reads) gets basic authentication at once. sushy would first POST
    to a guessed SessionService/Sessions, log a WARNING ("Could not discover the Session service path"), an ERROR
    from its connector ("Authentication to the session service failed") and another WARNING, then fall back to
    basic: three alarming lines per connection for a BMC that simply has no sessions (the sushy-tools emulator,
    docs/power.md "Redfish"). The service root is read before authentication (sushy/main.py Sushy.__init__), so
    its links are known here."""

    def _do_authenticate(self):
        root = self._root_resource.json if self._root_resource is not None else None
        links = (root or {}).get("Links") or {}
        if not isinstance(links, dict) or not (links.get("Sessions") or {}).get("@odata.id"):
            self._fallback_to_basic_authentication()
            return
        super()._do_authenticate()


def _mac(text: str) -> str:
    return "".join(c for c in text.lower() if c in "0123456789abcdef")


class RedfishBootControl:
    """One ComputerSystem behind a Redfish service: by `system_id`, else the one with an interface `mac`."""

    def __init__(self, address: str, username: str, password: str, system_id: str | None = None,
                 mac: str | None = None, verify: bool | str = True, uefi_http: bool = False,
                 timeout: float = 10.0):
        if not system_id and not mac:
            raise ValueError("a Redfish system is found by its id or by the host's MAC")
        self.address = address.rstrip("/")
        self.name = f"redfish {self.address}" + (f" system {system_id}" if system_id else "")
        self._username, self._password = username, password
        self._system_id, self._mac = system_id, _mac(mac) if mac else None
        self._verify, self._uefi_http, self._timeout = verify, uefi_http, timeout
        self._root: sushy.Sushy | None = None
        self._system = None

    def _call(self, what: str, fn):
        try:
            return fn()
        except sushy_exceptions.SushyError as exc:
            if isinstance(exc, sushy_exceptions.ConnectionError):
                self._root = self._system = None
            raise PowerError(self.name, f"{what}: {_problem(exc)}") from None

    def _connect(self):
        if self._system is None:
            self._root = self._call("connecting", lambda: sushy.Sushy(
                self.address, auth=_AuthByServiceRoot(self._username, self._password), verify=self._verify,
                server_side_retries=0, connect_timeout=self._timeout, read_timeout=self._timeout))
            self._system = self._call("finding the system", self._find_system)
        return self._system

    def _find_system(self):
        assert self._root is not None
        if self._system_id:
            return self._root.get_system(f"{self._root.get_system_collection().path}/{self._system_id}")
        for system in self._root.get_system_collection().get_members():
            for nic in system.ethernet_interfaces.get_members():
                if _mac(nic.mac_address or nic.permanent_mac_address or "") == self._mac:
                    return system
        raise PowerError(self.name, f"no system has an interface with MAC {self._mac}")

    def _fresh(self):
        system = self._connect()
        self._call("reading the system", lambda: system.refresh(force=True))
        return system

    def power_state(self) -> PowerState:
        return "on" if self._fresh().power_state in _ON_STATES else "off"

    def _reset(self, what: str, value) -> None:
        system = self._connect()
        self._call(what, lambda: system.reset_system(value))

    def power_on(self) -> None:
        self._reset("power on", sushy.ResetType.ON)

    def power_off(self, graceful: bool) -> None:
        self._reset("power off", sushy.ResetType.GRACEFUL_SHUTDOWN if graceful else sushy.ResetType.FORCE_OFF)

    def reset(self) -> None:
        self._reset("reset", sushy.ResetType.FORCE_RESTART)

    def _allowed_targets(self) -> list[str] | None:
        """BootSourceOverrideTarget@Redfish.AllowableValues, or None when the BMC does not list them."""
        boot = self._fresh().boot
        return None if boot is None or boot.allowed_values is None else list(boot.allowed_values)

    def supports_network_override(self) -> bool:
        system = self._fresh()
        if system.boot is None or "BootSourceOverrideTarget" not in (system.json.get("Boot") or {}):
            return False
        allowed = self._allowed_targets()
        return allowed is None or "Pxe" in allowed or "UefiHttp" in allowed

    def set_one_time_network_boot(self, uefi: bool) -> None:
        allowed = self._allowed_targets()
        if allowed is not None and "Pxe" not in allowed and not (uefi and "UefiHttp" in allowed):
            raise PowerError(self.name, "does not offer a one-time network boot override (no Pxe target)")
        http = uefi and self._uefi_http and allowed is not None and "UefiHttp" in allowed
        target = sushy.BootSource.UEFI_HTTP if http or (allowed is not None and "Pxe" not in allowed) \
            else sushy.BootSource.PXE
        mode = sushy.BootSourceOverrideMode.UEFI if uefi else sushy.BootSourceOverrideMode.LEGACY
        system = self._connect()
        self._call("one-time network boot", lambda: system.set_system_boot_options(
            target=target, enabled=sushy.BootSourceOverrideEnabled.ONCE, mode=mode))
        # read it back: some BMCs accept the PATCH and keep nothing (docs/power.md "Redfish")
        if self._fresh().boot.target not in (sushy.BootSource.PXE, sushy.BootSource.UEFI_HTTP):
            raise PowerError(self.name, "did not keep the one-time network boot override (read back: "
                                        f"{getattr(self._fresh().boot.target, 'value', None)})")
