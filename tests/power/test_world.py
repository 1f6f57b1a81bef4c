"""The product's boot control against a real simulated world (World.bmc, provisioner/simulator/bmc_target.py)
behind the real BMC servers: a disk-first machine, BIOS or UEFI, armed, is network-booted exactly once through
Redfish (the sushy-tools emulator) and through IPMI (pyghmi's BMC server), reaches the installer over real TFTP +
HTTP, and its next reset boots the disk (on UEFI: the installer's new boot entry is first in BootOrder)."""

from __future__ import annotations


import pytest
from sim_helpers import BIOS, MEDIA, UEFI, sim_server, wait_for

from provisioner.boot import attempts
from provisioner.power.confirm import ConfirmTimes
from provisioner.power.ipmi import IpmiBootControl
from provisioner.power.netboot import network_boot_cycle
from provisioner.power.redfish import RedfishBootControl
from provisioner.simulator import boot_handler, machine
from provisioner.simulator import states as st
from provisioner.simulator.builder import build_pool, new_world
from provisioner.simulator.clock import Clock

FAST = ConfirmTimes(poll=0.05, resend=2, give_up=60)  # real seconds: the world runs on its own fast clock


# (MAC, boot order, UEFI?): the registered BIOS and UEFI hosts of sim_helpers, each disk first
MACHINES = {"bios": (BIOS, "bios-disk-first", False), "uefi": (UEFI, "uefi-disk-first", True)}


@pytest.fixture(params=sorted(MACHINES))
def lab(request, tmp_path):
    mac, order, _ = MACHINES[request.param]
    config, store, runtime = sim_server(tmp_path)
    world = new_world(Clock(2000.0))
    build_pool(world, "p", hosts=1, macs=[mac], vms_per_host=0)
    handler = boot_handler.make_boot_handler(runtime.tftp.address, http_base=runtime.http.url, clock=world.clock,
                                             boot_orders={mac: order})
    world.boot_handler = handler
    world.start()
    yield config, store, world, handler, mac, MACHINES[request.param][2]
    handler.stop()
    world.stop()
    runtime.stop()
    store.close()


def _check_one_network_boot(lab, control) -> None:
    config, store, world, handler, mac, uefi = lab
    host = world.host(mac)
    attempts.arm(store, config, mac, MEDIA)
    network_boot_cycle(control, uefi=uefi, times=FAST)
    wait_for(lambda: host.state == st.XAPI_RUNNING and host.boot_count >= 1 and len(handler.boots(mac)) >= 2)
    assert [b.outcome for b in handler.boots(mac)] == [machine.INSTALLED, machine.DISK_FIRST]
    assert world.bmc(mac).boot_override() == (None, True)  # consumed once
    if uefi:  # the installer's entry first: docs/firmware.md "The simulated firmware's boot state"
        assert handler.boot_state(mac).describe()["order"][0] == "Boot0000 XenServer (disk)"
    control.reset()
    wait_for(lambda: host.state == st.XAPI_RUNNING and host.boot_count >= 2)
    assert handler.boots(mac)[-1].outcome == machine.DISK_FIRST and handler.boots(mac)[-1].fetches == []


def test_redfish_network_boots_a_disk_first_machine_once(lab, redfish_bmc, creds):
    world, mac, uefi = lab[2], lab[4], lab[5]
    url, _ = redfish_bmc(world.bmc(mac), mac, boot_mode="UEFI" if uefi else "Legacy")
    _check_one_network_boot(lab, RedfishBootControl(url, *creds, mac=mac))


def test_ipmi_network_boots_a_disk_first_machine_once(lab, ipmi_bmc, creds):
    world, mac = lab[2], lab[4]
    _check_one_network_boot(lab, IpmiBootControl(ipmi_bmc(world.bmc(mac)), *creds))

