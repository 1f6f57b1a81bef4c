"""The one power-state confirm loop (provisioner/power/confirm.py) on a virtual clock the machine shares, through
a real IPMI BMC (pyghmi's server class in front of the machine)."""

from __future__ import annotations

import pytest

from provisioner.config import load_config
from provisioner.power.base import PowerError
from provisioner.power.confirm import ConfirmTimes, confirm_power
from provisioner.power.ipmi import IpmiBootControl


@pytest.fixture
def bmc(ipmi_bmc, creds):
    def control(machine) -> IpmiBootControl:
        return IpmiBootControl(ipmi_bmc(machine), *creds)
    return control


def test_a_dropped_power_on_is_resent_and_confirmed(bmc, machine_type, clock):
    machine = machine_type(clock, drops=1)
    control = bmc(machine)
    notes: list[str] = []
    sent = confirm_power(control, "on", control.power_on, ConfirmTimes(), clock, notes.append)
    assert sent == 2 and machine.state == "on"
    assert [entry[1] for entry in machine.log if entry[0] == "power_on"] == ["dropped", "on"]
    on_at = [entry[2] for entry in machine.log if entry[:2] == ("power_on", "on")][0]
    assert on_at >= 1000.0 + 5 + 30  # the first send after a stable off (one poll), the resend 30 s later
    assert any("again" in note for note in notes)


def test_no_power_on_while_the_machine_is_reported_going_down(bmc, machine_type, clock):
    machine = machine_type(clock, on=True, down_seconds=40, on_while_going_down=True)
    control = bmc(machine)
    confirm_power(control, "off", lambda: control.power_off(graceful=True), ConfirmTimes(), clock)
    sent = confirm_power(control, "on", control.power_on, ConfirmTimes(), clock)
    assert sent == 1 and not machine.dropped() and machine.state == "on"


def test_an_off_reading_must_be_stable_before_a_power_on(bmc, machine_type, clock):
    """The BMC already says "Off" while the machine goes down for 3 s: the power-on waits for a second "off" one
    poll later, when the machine is off, and is not dropped."""
    machine = machine_type(clock, on=True, down_seconds=3)
    control = bmc(machine)
    confirm_power(control, "off", lambda: control.power_off(graceful=True), ConfirmTimes(), clock)
    assert confirm_power(control, "on", control.power_on, ConfirmTimes(), clock) == 1
    assert not machine.dropped()


def test_a_long_shutdown_drops_the_first_power_on_and_the_resend_lands(bmc, machine_type, clock):
    machine = machine_type(clock, on=True, down_seconds=12)
    control = bmc(machine)
    confirm_power(control, "off", lambda: control.power_off(graceful=True), ConfirmTimes(), clock)
    assert confirm_power(control, "on", control.power_on, ConfirmTimes(), clock) == 2
    assert [entry[1] for entry in machine.dropped()] == ["dropped: going down"] and machine.state == "on"


def test_gives_up_with_a_clear_error(bmc, machine_type, clock, creds):
    machine = machine_type(clock, drops=1000)
    control = bmc(machine)
    start = clock.now()
    with pytest.raises(PowerError) as caught:
        confirm_power(control, "on", control.power_on, ConfirmTimes(poll=5, resend=30, give_up=300), clock)
    message = str(caught.value)
    assert control.name in message and "300s" in message and "never confirmed" in message
    assert creds[1] not in message
    assert clock.now() - start >= 300  # virtual seconds
    assert len(machine.dropped()) == 10  # at 5, 35, ..., 275 s


def test_times_come_from_the_config():
    assert ConfirmTimes.from_config(load_config(environ={})) == ConfirmTimes(5, 30, 300)
    config = load_config(environ={"PROVISIONER_BMC_POLL_SECONDS": "2"},
                         overrides={"bmc_resend_seconds": 10, "bmc_give_up_seconds": 60})
    assert ConfirmTimes.from_config(config) == ConfirmTimes(2, 10, 60)
