"""IPMI boot control through pyghmi (the only pyghmi importer; docs/power.md "IPMI"): chassis power and the
one-time boot device "network" with the EFI flag on UEFI hosts. pyghmi has no boot-override capability query:
a BMC that answers "get system boot options" is taken to support the override, and one that refuses the set is
reported then."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

from pyghmi import exceptions as pyghmi_exceptions
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import simplesession as ipmi_simplesession

from .. import pollselect
from .base import PowerError, PowerState

DEFAULT_PORT = 623

# pyghmi's synchronous client session (pyghmi/ipmi/private/simplesession.py): one socket per session, no packet
# loop shared with other sessions. The default session shares one process-wide loop and handler table with any
# IPMI server in the same process (the simulator's BMC fronts) and then stops answering after one command.
ipmi_command.select_simplesession()
# its waits use select.select(), which raises for a socket numbered 1024 or more (a busy `serve` holds that many):
# the same waits over poll(2) (docs/power.md "Descriptors above 1023")
pollselect.patch_module_select(ipmi_simplesession)

_SHA1_LEN, _RAKP2_FIXED = 20, 40  # RAKP message 2: tag, status, reserved, ids, random, GUID (40 bytes), then the HMAC


class _Session(ipmi_simplesession.Session):
    """pyghmi's simple session, retrying with SHA-1 when a BMC ignores the SHA-256 proposal (docs/power.md "IPMI").
    pyghmi's client proposes RAKP-HMAC-SHA256 first and takes the BMC's acceptance for granted (its TODO in
    _got_rmcp_response); a BMC built on pyghmi's own server, virtualbmc, answers every proposal with cipher suite 3
    (serversession.py create_open_session_response): the RAKP2 then carries a 20-byte SHA-1 HMAC and pyghmi dies
    on struct.error in _got_rakp2. Such a RAKP2 restarts the open session with SHA-1, as pyghmi itself does when a
    BMC refuses SHA-256 with a status code."""

    def _got_rakp2(self, data):
        if self.attemptedhash == 256 and len(data) == _RAKP2_FIXED + _SHA1_LEN and data[0] == self.rmcptag \
                and data[1] == 0:
            self.attemptedhash = 1
            self._open_rmcpplus_request()
            return None
        return super()._got_rakp2(data)


ipmi_command.session = SimpleNamespace(Session=_Session)  # what Command builds its sessions from


def parse_address(address: str) -> tuple[str, int]:
    """'host' or 'host:port' (IPv6 as '[addr]:port') -> (host, port)."""
    text = address.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, DEFAULT_PORT


# RMCP + IPMI 1.5 sessionless "Get Channel Authentication Capabilities" (channel 0xE, IPMI 2.0 bit, admin
# level): every IPMI-over-LAN BMC answers it before any session (docs/power.md "IPMI")
_PRESENCE_PROBE = bytes.fromhex("0600ff07000000000000000000092018c88100388e04b5")


def _answers(host: str, port: int, seconds: float) -> bool:
    """Whether something at (host, port) answers the sessionless probe within `seconds`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.settimeout(seconds / 3)
            for _ in range(3):
                probe.sendto(_PRESENCE_PROBE, address)
                try:
                    probe.recvfrom(512)
                    return True
                except socket.timeout:
                    continue
    except OSError:
        return False
    return False


def _problem(exc: Exception) -> str:
    """Our words for pyghmi's error (never its text verbatim: nothing a library says reaches a message unread)."""
    text = str(exc).lower()
    if "password" in text or "unauthorized" in text or "user" in text or "privilege" in text:
        return "wrong username or password"
    if text in ("", "none") or any(word in text for word in ("timeout", "unable to establish", "not connected")):
        return "unreachable (no IPMI answer)"
    return f"IPMI error ({type(exc).__name__})"


class IpmiBootControl:
    """One machine behind an IPMI BMC at `address` (host[:port])."""

    def __init__(self, address: str, username: str, password: str, login_seconds: float = 10.0):
        self.host, self.port = parse_address(address)
        self._login_seconds = login_seconds
        self.name = f"ipmi {self.host}:{self.port}"
        self._username, self._password = username, password
        self._command: ipmi_command.Command | None = None

    def _session(self) -> ipmi_command.Command:
        if self._command is None:
            self._command = self._login()
        return self._command

    def _login(self) -> ipmi_command.Command:
        """A session, or PowerError. The simple session's login to an address where nothing answers can wait far
        longer than its own retry limits suggest, so the login runs in a thread given `login_seconds`."""
        # the whole login budget: a busy BMC (or one sharing a loaded machine) may take seconds to its first answer
        if not _answers(self.host, self.port, self._login_seconds):
            raise PowerError(self.name, "unreachable (no IPMI answer)")
        outcome: dict = {}

        def login() -> None:
            try:
                outcome["command"] = ipmi_command.Command(bmc=self.host, userid=self._username,
                                                          password=self._password, port=self.port, keepalive=False)
            except (pyghmi_exceptions.IpmiException, OSError) as exc:
                outcome["error"] = exc
            except Exception as exc:  # noqa: BLE001 - a pyghmi crash on a BMC's odd answer, not "unreachable"
                outcome["error"] = exc

        worker = threading.Thread(target=login, name=f"ipmi-login-{self.host}", daemon=True)
        worker.start()
        worker.join(self._login_seconds)
        if "command" in outcome:
            return outcome["command"]
        if "error" in outcome:
            raise PowerError(self.name, _problem(outcome["error"]))
        raise PowerError(self.name, f"unreachable (no IPMI answer in {self._login_seconds:.0f}s)")

    def _call(self, what: str, fn, *args, **kwargs):
        command = self._session()
        try:
            result = fn(command, *args, **kwargs)
        except (pyghmi_exceptions.IpmiException, OSError) as exc:
            problem = _problem(exc)
            if problem.startswith("unreachable"):
                self._command = None  # a new session next time; a refused command leaves the session usable
            raise PowerError(self.name, f"{what}: {problem}") from None
        if isinstance(result, dict) and "error" in result:
            raise PowerError(self.name, f"{what}: the BMC refused ({result.get('code', 'error')})")
        return result

    def power_state(self) -> PowerState:
        result = self._call("reading the power state", lambda c: c.get_power())
        return "on" if result.get("powerstate") == "on" else "off"

    def power_on(self) -> None:
        self._call("power on", lambda c: c.set_power("on"))

    def power_off(self, graceful: bool) -> None:
        self._call("power off", lambda c: c.set_power("shutdown" if graceful else "off"))

    def reset(self) -> None:
        self._call("reset", lambda c: c.set_power("reset"))

    def set_one_time_network_boot(self, uefi: bool) -> None:
        try:
            self._call("one-time network boot", lambda c: c.set_bootdev("network", persist=False, uefiboot=uefi))
        except PowerError as exc:
            if "refused" in exc.problem or "IPMI error" in exc.problem:
                raise PowerError(self.name, "does not accept a one-time network boot device") from None
            raise

    def supports_network_override(self) -> bool:
        try:
            self._call("reading the boot device", lambda c: c.get_bootdev())
        except PowerError as exc:
            if "refused" in exc.problem or "IPMI error" in exc.problem:
                return False
            raise
        return True

    def close(self) -> None:
        """Log out and close the session's socket."""
        if self._command is not None:
            session = self._command.ipmi_session
            try:
                session.logout()
            except (pyghmi_exceptions.IpmiException, OSError):
                pass  # a session that is gone is closed
            if getattr(session, "socket", None) is not None:
                session.socket.close()
            self._command = None
