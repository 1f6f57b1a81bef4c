"""Fixtures for the BMC tests: a machine behind a BMC with the simulator's BMC interface (power_state "On"/"Off",
power_on, power_off(graceful), reset, set_boot_override, boot_override, supports_override), a virtual clock the
confirm loop and the machine share, and the real BMC servers in front of it: pyghmi's BMC server (the simulator's
IPMI front) and the sushy-tools emulator (the simulator's Redfish front)."""

from __future__ import annotations

import gc
import socket
import warnings

import pytest

from provisioner import netports
from provisioner.power.confirm import SystemClock
from provisioner.simulator.bmc_ipmi import IpmiFront
from provisioner.simulator.bmc_redfish import RedfishFront

USER, PASSWORD = "admin", "pw-Zq81-secret"


class VirtualClock:
    """now() and sleep() on virtual seconds: a 300 s wait takes no real time."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Machine:
    """A machine behind a BMC. A graceful power-off takes `down_seconds` on `clock` (reported "Off" while going
    down, or "On" when `on_while_going_down`); a power-on then is dropped, like one of the first `drops` power-ons.
    Each power-on or reset boots: a pending override once, else the disk (`boots`)."""

    def __init__(self, clock=None, on: bool = False, down_seconds: float = 0.0, drops: int = 0,
                 override: bool = True, on_while_going_down: bool = False):
        self.clock = clock or SystemClock()
        self.state = "on" if on else "off"
        self.down_at = 0.0
        self.down_seconds, self.drops, self.override = down_seconds, drops, override
        self.on_while_going_down = on_while_going_down
        self.pending: tuple[str | None, bool, bool] = (None, True, False)
        self.boots: list[str] = []
        self.log: list[tuple] = []

    def _tick(self) -> None:
        if self.state == "going-down" and self.clock.now() >= self.down_at:
            self.state = "off"

    def power_state(self) -> str:
        self._tick()
        if self.state == "going-down":
            return "On" if self.on_while_going_down else "Off"
        return "On" if self.state == "on" else "Off"

    def _boot(self) -> None:
        device, once, uefi = self.pending
        self.boots.append(f"{device}{' uefi' if uefi else ''}" if device else "disk")
        if device and once:
            self.pending = (None, True, False)

    def power_on(self) -> None:
        self._tick()
        if self.drops:
            self.drops -= 1
            self.log.append(("power_on", "dropped"))
        elif self.state == "going-down":
            self.log.append(("power_on", "dropped: going down", self.clock.now()))
        elif self.state == "off":
            self.log.append(("power_on", "on", self.clock.now()))
            self.state = "on"
            self._boot()

    def power_off(self, graceful: bool) -> None:
        self._tick()
        self.log.append(("power_off", graceful))
        if self.state == "off" or (graceful and self.state == "going-down"):
            return
        if graceful and self.down_seconds:
            self.state, self.down_at = "going-down", self.clock.now() + self.down_seconds
        else:
            self.state = "off"

    def reset(self) -> None:
        self.log.append(("reset",))
        if self.state == "on":
            self._boot()

    def supports_override(self) -> bool:
        return self.override

    def set_boot_override(self, device: str | None, once: bool = True, uefi: bool = False) -> None:
        if not self.override:
            raise RuntimeError("no boot override on this BMC")
        self.log.append(("override", device, once, uefi))
        self.pending = (device, once, uefi)

    def boot_override(self) -> tuple[str | None, bool]:
        return self.pending[0], self.pending[1]

    def dropped(self) -> list[tuple]:
        return [entry for entry in self.log if entry[0] == "power_on" and entry[1] != "on"]


@pytest.fixture
def ipmi_bmc():
    """ipmi_bmc(machine) -> the address ("127.0.0.1:port") of a pyghmi BMC server in front of it."""
    fronts = []

    def start(machine, like_virtualbmc: bool = False) -> str:
        port = netports.free_port(socket.SOCK_DGRAM)
        front = IpmiFront(machine, USER, PASSWORD, port, like_virtualbmc=like_virtualbmc).start()
        fronts.append(front)
        return front.address

    yield start
    for front in fronts:
        front.stop()


@pytest.fixture
def redfish_bmc(tmp_path):
    """redfish_bmc(machine, mac) -> (service root URL, system id) of the sushy-tools emulator in front of it."""
    fronts = []

    def start(machine, mac: str = "52:54:00:12:34:56", boot_mode: str = "UEFI") -> tuple[str, str]:
        front = RedfishFront(USER, PASSWORD, state_dir=tmp_path / f"redfish{len(fronts)}")
        system_id = front.add(machine, mac, boot_mode=boot_mode)
        fronts.append(front.start())
        return front.url, system_id

    yield start
    for front in fronts:
        front.stop()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def machine_type() -> type[Machine]:
    return Machine


@pytest.fixture
def creds() -> tuple[str, str]:
    return USER, PASSWORD


@pytest.fixture
def closed_udp_address() -> str:
    return f"127.0.0.1:{netports.free_port(socket.SOCK_DGRAM)}"


@pytest.fixture(autouse=True)
def _close_ipmi_sessions(monkeypatch):
    """Every IpmiBootControl a test opens is closed after it (pyghmi's session sockets otherwise reach the
    garbage collector with a ResourceWarning in whatever test runs then)."""
    from provisioner.power.ipmi import IpmiBootControl

    opened = []
    real_init = IpmiBootControl.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(IpmiBootControl, "__init__", init)
    yield
    for control in opened:
        control.close()
    # a failed pyghmi login (wrong password) drops its session with the socket open: collect it here, in the
    # test that made it, rather than as a ResourceWarning in whichever test the garbage collector runs in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
