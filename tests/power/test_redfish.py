"""Redfish boot control (provisioner/power/redfish.py, sushy) against the real sushy-tools emulator with its fake
driver, in front of a machine through the simulator's Redfish front (provisioner/simulator/bmc_redfish.py: the
external notifier applies power and boot changes to the machine, the machine's own state is written back)."""

from __future__ import annotations

import logging
import time

import pytest

from provisioner.power.base import PowerError
from provisioner.power.confirm import ConfirmTimes, confirm_power
from provisioner.power.netboot import network_boot_cycle
from provisioner.power.redfish import RedfishBootControl

FAST = ConfirmTimes(poll=0.05, resend=2, give_up=30)  # real seconds: the emulator runs on the real clock
MAC = "52:54:00:12:34:56"


def _until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_power_on_off_and_reset(redfish_bmc, machine_type, creds):
    machine = machine_type()
    url, system_id = redfish_bmc(machine, MAC)
    control = RedfishBootControl(url, *creds, system_id=system_id)
    assert control.power_state() == "off"
    assert confirm_power(control, "on", control.power_on, FAST) >= 1
    assert machine.state == "on" and machine.boots == ["disk"]
    control.reset()
    assert _until(lambda: len(machine.boots) == 2)
    confirm_power(control, "off", lambda: control.power_off(graceful=False), FAST)
    assert machine.state == "off" and ("power_off", False) in machine.log


def test_one_time_network_boot_found_by_mac_is_consumed_once(redfish_bmc, machine_type, creds):
    machine = machine_type(on=True)
    url, _ = redfish_bmc(machine, MAC)
    control = RedfishBootControl(url, *creds, mac=MAC.upper())
    assert control.supports_network_override()
    network_boot_cycle(control, uefi=True, times=FAST)
    assert machine.boots == ["network uefi"] and machine.boot_override() == (None, True)
    # the consumed override is written back: the BMC no longer reports a Pxe target
    assert _until(lambda: control._fresh().boot.target.value != "Pxe")
    control.reset()
    assert _until(lambda: machine.boots == ["network uefi", "disk"])


def test_legacy_mode(redfish_bmc, machine_type, creds):
    machine = machine_type()
    url, system_id = redfish_bmc(machine, MAC, boot_mode="Legacy")
    control = RedfishBootControl(url, *creds, system_id=system_id)
    network_boot_cycle(control, uefi=False, times=FAST)
    assert machine.boots == ["network"]


def test_the_machines_own_shutdown_is_visible(redfish_bmc, machine_type, creds):
    machine = machine_type(on=True)
    url, system_id = redfish_bmc(machine, MAC)
    control = RedfishBootControl(url, *creds, system_id=system_id)
    assert control.power_state() == "on"
    machine.state = "off"  # the host shut down by itself; nobody asked the BMC
    assert _until(lambda: control.power_state() == "off")


def test_wrong_password_names_the_bmc_and_never_the_password(redfish_bmc, machine_type, creds):
    user, password = creds
    url, system_id = redfish_bmc(machine_type(), MAC)
    with pytest.raises(PowerError) as caught:
        RedfishBootControl(url, user, "not-" + password, system_id=system_id).power_state()
    message = str(caught.value)
    assert f"redfish {url}" in message and "wrong username or password" in message
    assert password not in message and "not-" not in message


def test_unreachable_service(creds, closed_udp_address):
    url = f"http://{closed_udp_address}"  # nothing listens on that TCP port either (UDP port just freed)
    with pytest.raises(PowerError) as caught:
        RedfishBootControl(url, *creds, system_id="x", timeout=2).power_state()
    assert f"redfish {url}" in str(caught.value) and "unreachable" in str(caught.value)


def test_an_unknown_mac_is_refused(redfish_bmc, machine_type, creds):
    url, _ = redfish_bmc(machine_type(), MAC)
    with pytest.raises(PowerError, match="no system has an interface with MAC 525400000001"):
        RedfishBootControl(url, *creds, mac="52:54:00:00:00:01").power_state()


def test_an_override_the_bmc_does_not_keep_is_an_error(redfish_bmc, machine_type, creds):
    """The emulator always lists Pxe; a machine whose BMC has no override support refuses it, and the read-back
    after the PATCH says so: the cycle stops with the machine off, never booted."""
    machine = machine_type(on=True, override=False)
    url, system_id = redfish_bmc(machine, MAC)
    control = RedfishBootControl(url, *creds, system_id=system_id)
    with pytest.raises(PowerError) as caught:
        network_boot_cycle(control, uefi=True, times=FAST)
    assert control.name in str(caught.value) and "did not keep the one-time network boot" in str(caught.value)
    assert machine.boots == []


def test_a_service_root_without_sessions_gets_basic_auth_and_nothing_alarming_logged(redfish_bmc, machine_type,
                                                                                      creds, caplog):
    """The emulator's service root links no Sessions: basic authentication at once, no session POST, and none of
    sushy's WARNING/ERROR lines about a failed session service (power/redfish.py _AuthByServiceRoot)."""
    caplog.set_level(logging.DEBUG, logger="sushy")
    machine = machine_type()
    url, system_id = redfish_bmc(machine, MAC)
    control = RedfishBootControl(url, *creds, system_id=system_id)
    assert control.power_state() == "off" and control.supports_network_override()
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records
            if r.name.startswith("sushy") and r.levelno >= logging.WARNING] == []
    assert "basic authentication" in caplog.text.lower()  # sushy's debug line: it set basic auth
    wrong = RedfishBootControl(url, creds[0], "not-the-password", system_id=system_id)
    with pytest.raises(PowerError, match="wrong username or password"):
        wrong.power_state()
