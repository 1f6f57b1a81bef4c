"""IPMI boot control (provisioner/power/ipmi.py, pyghmi's client) against pyghmi's own BMC server in front of a
machine (provisioner/simulator/bmc_ipmi.py) on loopback UDP."""

from __future__ import annotations

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
