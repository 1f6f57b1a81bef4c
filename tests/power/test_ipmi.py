"""IPMI boot control (provisioner/power/ipmi.py, pyghmi's client) against pyghmi's own BMC server in front of a
machine (provisioner/simulator/bmc_ipmi.py) on loopback UDP."""

from __future__ import annotations

import os
import resource
import threading

import pytest

from provisioner.power.base import PowerError
from provisioner.power.confirm import ConfirmTimes
from provisioner.power.ipmi import IpmiBootControl, parse_address
from provisioner.power.netboot import network_boot_cycle


def test_power_on_off_and_reset(ipmi_bmc, machine_type, creds):
    USER, PASSWORD = creds
    machine = machine_type()
    control = IpmiBootControl(ipmi_bmc(machine), USER, PASSWORD)
    assert control.power_state() == "off"
    control.power_on()
    assert control.power_state() == "on" and machine.boots == ["disk"]
    control.reset()
    assert machine.boots == ["disk", "disk"]
    control.power_off(graceful=True)
    assert control.power_state() == "off" and ("power_off", True) in machine.log
    control.power_on()
    control.power_off(graceful=False)
    assert ("power_off", False) in machine.log and control.power_state() == "off"


def test_a_bmc_that_answers_sha1_to_the_sha256_proposal(ipmi_bmc, machine_type, creds):
    """virtualbmc (pyghmi's server session) answers every open-session request with suite 3: pyghmi's client,
    which proposed SHA-256, died on the RAKP2's SHA-1 length; ours restarts the session with SHA-1."""
    USER, PASSWORD = creds
    machine = machine_type()
    control = IpmiBootControl(ipmi_bmc(machine, like_virtualbmc=True), USER, PASSWORD, login_seconds=5)
    assert control.power_state() == "off"
    control.power_on()
    assert control.power_state() == "on" and machine.boots == ["disk"]


def test_one_time_network_boot_is_consumed_once(ipmi_bmc, machine_type, creds, clock):
    USER, PASSWORD = creds
    machine = machine_type(clock, on=True, down_seconds=3)
    control = IpmiBootControl(ipmi_bmc(machine), USER, PASSWORD)
    assert control.supports_network_override()
    network_boot_cycle(control, uefi=True, times=ConfirmTimes(), clock=clock)
    assert machine.boots == ["network uefi"]
    assert ("override", "network", True, True) in machine.log  # once (not persistent), EFI flag set
    assert ("power_off", True) in machine.log and not machine.dropped()
    control.reset()
    assert machine.boots == ["network uefi", "disk"]


def test_legacy_boot_has_no_efi_flag(ipmi_bmc, machine_type, creds, clock):
    USER, PASSWORD = creds
    machine = machine_type(clock)
    control = IpmiBootControl(ipmi_bmc(machine), USER, PASSWORD)
    network_boot_cycle(control, uefi=False, clock=machine.clock)
    assert machine.boots == ["network"] and ("override", "network", True, False) in machine.log


def test_a_graceful_shutdown_that_never_ends_is_cut(ipmi_bmc, machine_type, creds, clock):
    USER, PASSWORD = creds
    machine = machine_type(clock, on=True, down_seconds=10_000, on_while_going_down=True)
    control = IpmiBootControl(ipmi_bmc(machine), USER, PASSWORD)
    notes: list[str] = []
    network_boot_cycle(control, uefi=True, clock=clock, progress=notes.append, graceful_seconds=120)
    assert ("power_off", False) in machine.log and machine.boots == ["network uefi"]
    assert any("cutting the power" in note for note in notes)


def test_wrong_password_names_the_bmc_and_never_the_password(ipmi_bmc, machine_type, creds):
    USER, PASSWORD = creds
    address = ipmi_bmc(machine_type())
    with pytest.raises(PowerError) as caught:
        IpmiBootControl(address, USER, "not-" + PASSWORD).power_state()
    message = str(caught.value)
    assert f"ipmi {address}" in message and "wrong username or password" in message
    assert PASSWORD not in message and "not-" not in message


def test_unreachable_bmc(closed_udp_address, creds):
    USER, PASSWORD = creds
    address = closed_udp_address
    with pytest.raises(PowerError) as caught:
        IpmiBootControl(address, USER, PASSWORD, login_seconds=3).power_state()
    assert f"ipmi {address}" in str(caught.value) and "unreachable" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_no_override_support_is_refused_before_any_power_change(ipmi_bmc, machine_type, creds, clock):
    USER, PASSWORD = creds
    machine = machine_type(clock, on=True, override=False)
    control = IpmiBootControl(ipmi_bmc(machine), USER, PASSWORD)
    assert not control.supports_network_override()
    with pytest.raises(PowerError) as caught:
        network_boot_cycle(control, uefi=True, clock=machine.clock)
    assert control.name in str(caught.value) and "override" in str(caught.value)
    assert machine.state == "on" and machine.log == []
    with pytest.raises(PowerError, match="does not accept a one-time network boot"):
        control.set_one_time_network_boot(uefi=True)


def test_addresses():
    assert parse_address("bmc.example") == ("bmc.example", 623)
    assert parse_address("10.0.0.5:6230") == ("10.0.0.5", 6230)
    assert parse_address("[fd00::5]:6230") == ("fd00::5", 6230)
    assert parse_address("[fd00::5]") == ("fd00::5", 623)


@pytest.fixture
def descriptors_above_1023():
    """Hold 1100 descriptors open so every socket opened meanwhile is numbered above FD_SETSIZE (1024), as in a
    busy `serve` process (docs/power.md "Descriptors above 1023"). Raises the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    assert hard == resource.RLIM_INFINITY or hard >= wanted, f"the hard descriptor limit {hard} is below {wanted}"
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    yield held
    for fd in held:
        os.close(fd)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ipmi_works_with_descriptors_above_1023(ipmi_bmc, machine_type, creds, descriptors_above_1023):
    """Both pyghmi sides wait over poll(2): a BMC front started, and a client session opened, while the process
    holds more than 1024 descriptors still answer; and a front started afterwards does too (pyghmi's one packet
    loop of the process survived)."""
    USER, PASSWORD = creds
    assert max(descriptors_above_1023) > 1024
    machine = machine_type()
    control = IpmiBootControl(ipmi_bmc(machine), USER, PASSWORD)
    try:
        assert control._session().ipmi_session.socket.fileno() > 1023  # the client's own socket is past the line
        control.power_on()
        assert control.power_state() == "on" and machine.boots == ["disk"]
    finally:
        control.close()
    later = IpmiBootControl(ipmi_bmc(machine_type()), USER, PASSWORD)
    try:
        assert later.power_state() == "off"
    finally:
        later.close()


def test_a_target_call_that_blocks_silences_no_other_bmc(ipmi_bmc, machine_type, creds):
    """pyghmi answers every BMC front of a process from one packet loop: a power-on the simulated machine takes
    long over is acknowledged after ACT_SECONDS, and another front answers meanwhile (simulator/bmc_ipmi.py)."""
    USER, PASSWORD = creds
    release = threading.Event()

    class Stuck(machine_type):
        def power_on(self):
            release.wait(60)
            super().power_on()

    stuck_machine, other = Stuck(), machine_type(on=True)
    stuck = IpmiBootControl(ipmi_bmc(stuck_machine), USER, PASSWORD)
    fine = IpmiBootControl(ipmi_bmc(other), USER, PASSWORD)
    try:
        stuck.power_on()  # acknowledged while the machine still works on it
        assert fine.power_state() == "on"
        release.set()
        for _ in range(50):
            if stuck_machine.state == "on":
                break
            threading.Event().wait(0.1)
        assert stuck.power_state() == "on" and stuck_machine.boots == ["disk"]
    finally:
        release.set()
        stuck.close()
        fine.close()
