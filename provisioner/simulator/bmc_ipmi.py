"""An IPMI BMC in front of one simulated machine (docs/power.md "The simulator's BMC fronts"): a subclass of
pyghmi's own BMC server class (pyghmi.ipmi.bmc.Bmc, what virtualbmc is built on), on a loopback UDP port, with
one username and password.

The target is any object with the simulator's BMC interface: power_state() -> "On"/"Off" ("Off" also while still
shutting down), power_on(), power_off(graceful), reset(), set_boot_override(device, once, uefi), boot_override()
-> (device, once), supports_override(). pyghmi's base class ignores the persistent and EFI bits of "set system
boot options"; this front reads them (IPMI 2.0 boot flags parameter 5, data 1: bit 7 valid, bit 6 persistent,
bit 5 EFI; data 2 bits 5:2 the device, 0001b = PXE).
"""

from __future__ import annotations

import threading
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.serversession as pyghmi_serversession
import pyghmi.ipmi.private.session as pyghmi_session

from .. import pollselect

_PXE = 0b0001          # boot flags data 2, bits 5:2: force PXE
_DISK = 0b0010         # force boot from default hard drive
_CODE_NOT_SUPPORTED = 0x80  # "parameter not supported" for get/set system boot options
# pyghmi's one packet loop per process selects on every server socket: with select(2) a socket numbered 1024 or
# more (a long test run holds that many) ends the loop, and every BMC front of the process stops answering
pollselect.patch_module_select(pyghmi_session)
_loop_lock = threading.Lock()
_loop: threading.Thread | None = None


_NO_CIPHER_SUITE_MATCH = 0x11  # RMCP+ open session status: no cipher suite matches the proposed algorithms


class _Sha1Session(pyghmi_serversession.ServerSession):
    """pyghmi's server session answers every open-session request with cipher suite 3 (RAKP-HMAC-SHA1), even
    one that proposed SHA-256, and pyghmi's own client (1.6) proposes SHA-256 first: it then fails on the
    RAKP2 length. A real BMC that offers suite 3 only refuses the SHA-256 proposal; the client then retries
    with SHA-1 (session.py, _got_rmcp_response). This session does that refusal."""

    def create_open_session_response(self, request):
        if len(request) > 12 and request[12] != 1:  # authentication algorithm: 1 = RAKP-HMAC-SHA1
            return bytearray([request[0], _NO_CIPHER_SUITE_MATCH, 0, 0]) + bytearray(request[4:8]) + bytearray(4)
        return super().create_open_session_response(request)


class SimulatedIpmiBmc(pyghmi_bmc.Bmc):
    """pyghmi's BMC server answering for one target."""

    def __init__(self, target: Any, username: str, password: str, port: int, address: str = "127.0.0.1"):
        super().__init__({username: password}, port=port, address=address)
        self.target = target
        self.closed = False

    def sessionless_data(self, data, sockaddr) -> None:
        if self.closed:
            return
        raw = bytearray(data)
        if len(raw) >= 22 and raw[0] == 6 and raw[2:4] == b"\xff\x07" and raw[4] == 6 and raw[5] == 16:
            _Sha1Session(self.authdata, self.kg, sockaddr, self.serversocket, raw[16:], self.uuid, bmc=self)
            return
        super().sessionless_data(data, sockaddr)

    # chassis control (pyghmi's Bmc.control_chassis calls these)
    def get_power_state(self) -> str:
        return "on" if self.target.power_state() == "On" else "off"

    def power_on(self) -> None:
        self.target.power_on()

    def power_off(self) -> None:
        self.target.power_off(graceful=False)

    def power_shutdown(self) -> None:
        self.target.power_off(graceful=True)

    def power_reset(self) -> None:
        self.target.reset()

    def power_cycle(self) -> None:
        self.target.power_off(graceful=False)
        self.target.power_on()

    def set_system_boot_options(self, request: dict, session: Any) -> None:
        data = request["data"]
        if data[0] != 5:
            return super().set_system_boot_options(request, session)
        if not self.target.supports_override():
            return session.send_ipmi_response(code=_CODE_NOT_SUPPORTED)
        flags, device = data[1], (data[2] >> 2) & 0b1111
        if not flags & 0x80 or device == 0:
            self.target.set_boot_override(None)
        elif device == _PXE:
            self.target.set_boot_override("network", once=not flags & 0x40, uefi=bool(flags & 0x20))
        elif device == _DISK:
            self.target.set_boot_override("disk", once=not flags & 0x40, uefi=bool(flags & 0x20))
        else:
            return session.send_ipmi_response(code=0xcc)  # invalid data field: a device we do not simulate
        session.send_ipmi_response()

    def get_system_boot_options(self, request: dict, session: Any) -> None:
        if request["data"][0] != 5:
            return session.send_ipmi_response(code=_CODE_NOT_SUPPORTED)
        if not self.target.supports_override():
            return session.send_ipmi_response(code=_CODE_NOT_SUPPORTED)
        device, once = self.target.boot_override()
        code = {"network": _PXE, "disk": _DISK}.get(device or "", 0)
        flags = 0 if not code else 0x80 | (0 if once else 0x40)
        session.send_ipmi_response(data=[1, 5, flags, code << 2, 0, 0, 0])

    def close(self) -> None:
        """Answer nothing from now on. The socket stays open: pyghmi's one packet loop selects on every socket it
        ever assigned (session.iosockets, the first of them its wake-up socket), and a closed one breaks it."""
        self.closed = True

    def handle_raw_request(self, request: dict, session: Any) -> None:
        if not self.closed:
            super().handle_raw_request(request, session)


def _serve_forever() -> None:
    while True:
        pyghmi_session.Session.wait_for_rsp(0.2)


class IpmiFront:
    """Serve `target` over IPMI on (address, port); start() then stop(). pyghmi runs one packet loop per process
    for every session and server; the first front starts a daemon thread that drives it for the process's life
    (a stopped front answers nothing; its socket stays in the loop)."""

    def __init__(self, target: Any, username: str, password: str, port: int, address: str = "127.0.0.1"):
        self.bmc = SimulatedIpmiBmc(target, username, password, port, address)
        self.address = f"{address}:{port}"

    def start(self) -> "IpmiFront":
        global _loop
        with _loop_lock:
            if _loop is None:
                _loop = threading.Thread(target=_serve_forever, name="sim-ipmi", daemon=True)
                _loop.start()
        return self

    def stop(self) -> None:
        self.bmc.close()
