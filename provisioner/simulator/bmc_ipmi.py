"""An IPMI BMC in front of one simulated machine (docs/power.md "The simulator's BMC fronts"): a subclass of
pyghmi's own BMC server class (pyghmi.ipmi.bmc.Bmc, what virtualbmc is built on), on a loopback UDP port, with
one username and password.

The target is any object with the simulator's BMC interface: power_state() -> "On"/"Off" ("Off" also while still
shutting down), power_on(), power_off(graceful), reset(), set_boot_override(device, once, uefi), boot_override()
-> (device, once), supports_override(). pyghmi's base class ignores the persistent and EFI bits of "set system
boot options"; this front reads them (IPMI 2.0 boot flags parameter 5, data 1: bit 7 valid, bit 6 persistent,
bit 5 EFI; data 2 bits 5:2 the device, 0001b = PXE).

Each BMC runs in a process of its own, as virtualbmc runs each of its BMCs (IpmiFront); the target stays in the
caller's process and answers the BMC's calls over a pipe.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.serversession as pyghmi_serversession
import pyghmi.ipmi.private.session as pyghmi_session

from .. import pollselect

_PXE = 0b0001          # boot flags data 2, bits 5:2: force PXE
_DISK = 0b0010         # force boot from default hard drive
_CODE_NOT_SUPPORTED = 0x80  # "parameter not supported" for get/set system boot options
log = logging.getLogger(__name__)


ACT_SECONDS = 2.0
"""How long the BMC waits for a target call before it answers anyway (_TargetChannel)."""
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

    def __init__(self, target: Any, username: str, password: str, port: int, address: str = "127.0.0.1",
                 like_virtualbmc: bool = False):
        super().__init__({username: password}, port=port, address=address)
        self.target = target
        self.address = f"{address}:{port}"
        self.like_virtualbmc = like_virtualbmc  # pyghmi's server session as is: suite 3 whatever was proposed

    def sessionless_data(self, data, sockaddr) -> None:
        raw = bytearray(data)
        open_session = len(raw) >= 22 and raw[0] == 6 and raw[2:4] == b"\xff\x07" and raw[4] == 6 and raw[5] == 16
        if open_session and not self.like_virtualbmc:
            _Sha1Session(self.authdata, self.kg, sockaddr, self.serversocket, raw[16:], self.uuid, bmc=self)
            return
        super().sessionless_data(data, sockaddr)

    def _act(self, name: str, *args: Any, answer_anyway: bool = True) -> Any:
        """Call the target's `name` through its channel to the parent process (_TargetChannel)."""
        return self.target.call(name, args, answer_anyway)

    # chassis control (pyghmi's Bmc.control_chassis calls these)
    def get_power_state(self) -> str:
        return "on" if self._act("power_state", answer_anyway=False) == "On" else "off"

    def power_on(self) -> None:
        self._act("power_on")

    def power_off(self) -> None:
        self._act("power_off", False)

    def power_shutdown(self) -> None:
        self._act("power_off", True)

    def power_reset(self) -> None:
        self._act("reset")

    def power_cycle(self) -> None:
        self._act("power_off", False)
        self._act("power_on")

    def set_system_boot_options(self, request: dict, session: Any) -> None:
        data = request["data"]
        if data[0] != 5:
            return super().set_system_boot_options(request, session)
        if not self._act("supports_override", answer_anyway=False):
            return session.send_ipmi_response(code=_CODE_NOT_SUPPORTED)
        flags, device = data[1], (data[2] >> 2) & 0b1111
        once, uefi = not flags & 0x40, bool(flags & 0x20)
        if not flags & 0x80 or device == 0:
            self._act("set_boot_override", None, answer_anyway=False)
        elif device == _PXE:
            self._act("set_boot_override", "network", once, uefi, answer_anyway=False)
        elif device == _DISK:
            self._act("set_boot_override", "disk", once, uefi, answer_anyway=False)
        else:
            return session.send_ipmi_response(code=0xcc)  # invalid data field: a device we do not simulate
        session.send_ipmi_response()

    def get_system_boot_options(self, request: dict, session: Any) -> None:
        if request["data"][0] != 5:
            return session.send_ipmi_response(code=_CODE_NOT_SUPPORTED)
        if not self._act("supports_override", answer_anyway=False):
            return session.send_ipmi_response(code=_CODE_NOT_SUPPORTED)
        device, once = self._act("boot_override", answer_anyway=False)
        code = {"network": _PXE, "disk": _DISK}.get(device or "", 0)
        flags = 0 if not code else 0x80 | (0 if once else 0x40)
        session.send_ipmi_response(data=[1, 5, flags, code << 2, 0, 0, 0])


CALLS = frozenset({"power_state", "power_on", "power_off", "reset", "supports_override", "set_boot_override",
                   "boot_override"})
"""The target interface the BMC process may call."""


class _TargetChannel:
    """The target as the BMC process sees it: each call goes to the parent over a multiprocessing pipe and waits at
    most ACT_SECONDS for the answer. A real BMC acknowledges a chassis command at once and acts on its own time: a
    power change still running is acknowledged, a read still running is an error (the client asks again)."""

    def __init__(self, conn: Any):
        self.conn, self.next_id = conn, 0

    def call(self, name: str, args: tuple, answer_anyway: bool) -> Any:
        self.next_id += 1
        self.conn.send((self.next_id, name, args))
        deadline = time.monotonic() + ACT_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.conn.poll(left):
                if answer_anyway:
                    return None
                raise TimeoutError(f"{name} still running after {ACT_SECONDS:.0f} s")
            call_id, ok, value = self.conn.recv()
            if call_id != self.next_id:
                continue  # the late answer of a call given up on
            if ok:
                return value
            raise RuntimeError(value)


def _bmc_process(conn: Any, username: str, password: str, port: int, address: str, like_virtualbmc: bool) -> None:
    """The BMC process: pyghmi's BMC server, with select over poll, answering until the parent goes away."""
    pollselect.patch_module_select(pyghmi_session)
    parent = os.getppid()
    try:
        bmc = SimulatedIpmiBmc(_TargetChannel(conn), username, password, port, address, like_virtualbmc)
    except OSError as exc:
        conn.send(("failed", f"{address}:{port}: {exc}"))
        return
    conn.send(("ready", None))

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=orphaned, daemon=True).start()
    while True:
        try:
            pyghmi_session.Session.wait_for_rsp(0.5)
        except Exception:  # one bad packet or handler must not end the BMC
            log.exception("BMC %s: a packet-loop iteration failed; going on", bmc.address)


class IpmiFront:
    """Serve `target` over IPMI on (address, port); start() then stop(). Like virtualbmc, each BMC is a process
    of its own: pyghmi keeps one packet loop and one handler table per process (session.py), so BMCs sharing a
    process share their stalls (docs/power.md "The simulator's BMC fronts"). The target stays here; a thread
    answers the BMC process's calls (one thread per call, so a call the target takes long over delays no other).
    like_virtualbmc: answer every open-session request with suite 3 as virtualbmc does (pyghmi's server session
    unchanged), instead of refusing a SHA-256 proposal as a conformant suite-3-only BMC does."""

    def __init__(self, target: Any, username: str, password: str, port: int, address: str = "127.0.0.1",
                 like_virtualbmc: bool = False):
        self.target, self.address = target, f"{address}:{port}"
        self._args = (username, password, port, address, like_virtualbmc)
        self._conn: Any = None
        self._process: Any = None
        self._send_lock = threading.Lock()

    def start(self) -> "IpmiFront":
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or pyghmi state inherited
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_bmc_process, args=(child, *self._args), daemon=True,
                                        name=f"sim-ipmi-{self.address}")
        self._process.start()
        child.close()
        if not self._conn.poll(60):
            self.stop()
            raise RuntimeError(f"IPMI BMC {self.address}: its process did not start")
        status, detail = self._conn.recv()
        if status != "ready":
            self.stop()
            raise RuntimeError(f"IPMI BMC: {detail}")
        threading.Thread(target=self._serve, name=f"sim-ipmi-{self.address}", daemon=True).start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                call_id, name, args = self._conn.recv()
            except (EOFError, OSError):
                return  # stopped
            threading.Thread(target=self._answer, args=(call_id, name, args), daemon=True,
                             name=f"sim-ipmi-call-{name}").start()

    def _answer(self, call_id: int, name: str, args: tuple) -> None:
        try:
            if name not in CALLS:
                raise ValueError(f"not a BMC target call: {name}")
            answer = (call_id, True, getattr(self.target, name)(*args))
        except Exception as exc:  # the BMC answers its client with an error
            answer = (call_id, False, f"{type(exc).__name__}: {exc}")
        try:
            with self._send_lock:
                self._conn.send(answer)
        except (OSError, ValueError):
            pass  # stopped meanwhile

    def stop(self) -> None:
        """End the BMC process: its port answers nothing from now on."""
        if self._process is not None:
            self._process.terminate()
            self._process.join(5)
            self._process = None
        if self._conn is not None:
            self._conn.close()
