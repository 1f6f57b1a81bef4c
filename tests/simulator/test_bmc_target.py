"""World.bmc(mac): the BMC face of a simulated machine (provisioner/simulator/bmc_target.py). Power goes through the
world's power state machine; the boot override lands in the machine's firmware boot state and is consumed by its
next boot, which is a real network boot against the runtime (TFTP + HTTP on loopback)."""

import time

import pytest

from sim_helpers import BIOS, MEDIA, UEFI, Events, sim_server

from provisioner import states
from provisioner.boot import attempts
from provisioner.simulator import boot_handler, machine
from provisioner.simulator import states as st
from provisioner.simulator.bmc_target import OverrideUnsupported
from provisioner.simulator.builder import build_pool, new_world
from provisioner.simulator.clock import Clock


def wait_for(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    raise AssertionError("condition not reached")


class Lab:
    def __init__(self, tmp_path, macs=(BIOS, UEFI)):
        self.config, self.store, self.runtime = sim_server(tmp_path)
        # shutdown: 4000 sim s (2 s of wall time) so a test can act while the host is still shutting down
        self.world = new_world(Clock(2000.0), shutdown=4000.0)
        self.pool = build_pool(self.world, "p", hosts=len(macs), macs=list(macs), vms_per_host=0)
        self.events = Events()
        self.handler = boot_handler.make_boot_handler(self.runtime.tftp.address, http_base=self.runtime.http.url,
                                                      clock=self.world.clock, on_event=self.events,
                                                      boot_orders={BIOS: "bios-disk-first", UEFI: "uefi-disk-first"},
                                                      loaders={UEFI: "grub"})  # DHCP: grubx64.efi for arch 7
        self.world.boot_handler = self.handler
        self.world.start()

    def host(self, mac):
        return self.world.host(mac)

    def live(self, mac):
        h, db = self.host(mac), self.host(mac).pool.db
        with db.lock:
            return db.get("host_metrics", db.get("host", h.ref)["metrics"])["live"]

    def version(self, mac):
        h = self.host(mac)
        with h.pool.db.lock:
            return h.pool.db.get("host", h.ref)["software_version"]["product_version"]

    def close(self):
        self.handler.stop()
        self.world.stop()
        self.runtime.stop()
        self.store.close()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


def test_one_bmc_per_machine(lab):
    assert lab.world.bmc(BIOS) is lab.world.bmc(BIOS.upper())
    assert lab.world.bmc(BIOS) is not lab.world.bmc(UEFI)
    assert lab.world.bmc(BIOS).power_state() == "On"


def test_graceful_off_reads_off_while_shutting_down_and_drops_the_power_on_sent_then(lab):
    bmc, h = lab.world.bmc(BIOS), lab.host(BIOS)
    bmc.power_off(graceful=True)
    wait_for(lambda: h.state == st.SHUTTING_DOWN)
    assert bmc.power_state() == "Off" and lab.live(BIOS) is False  # xapi went down cleanly
    bmc.power_on()
    assert h.bmc_log[-1] == ("power_on", "dropped: still shutting down")
    wait_for(lambda: h.state == st.OFF)
    assert h.state == st.OFF and h.boot_count == 0  # the dropped power-on did nothing
    bmc.power_on()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 1)
    assert bmc.power_state() == "On"


def test_injected_drop_and_hard_off(lab):
    bmc, h = lab.world.bmc(BIOS), lab.host(BIOS)
    bmc.power_off(graceful=False)
    assert h.state == st.OFF and bmc.power_state() == "Off"
    assert lab.live(BIOS) is True  # the host just died: live stays true until xapi notices
    lab.world.drop_power_on(BIOS, count=2)
    bmc.power_on()
    bmc.power_on()
    assert h.state == st.OFF and [e for e in h.bmc_log if e == ("power_on", "dropped (injected)")] == [
        ("power_on", "dropped (injected)")] * 2
    bmc.power_on()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 1)
    assert lab.live(BIOS) is True


def test_reset_with_a_once_override_network_boots_exactly_once(lab):
    """A disk-first BIOS machine, armed: a plain reset boots the disk; a Once override to the network makes the
    next power cycle network-boot (the installer runs, its reboot boots the disk), and the next reset does not."""
    attempts.arm(lab.store, lab.config, BIOS, MEDIA)
    bmc, h = lab.world.bmc(BIOS), lab.host(BIOS)
    bmc.reset()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 1)
    assert [b.outcome for b in lab.handler.boots(BIOS)] == [machine.DISK_FIRST]
    assert lab.version(BIOS) == "8.2.1"

    bmc.set_boot_override("network", once=True)
    assert bmc.boot_override() == ("network", True)
    bmc.reset()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 2)
    assert [b.outcome for b in lab.handler.boots(BIOS)[1:]] == [machine.INSTALLED, machine.DISK_FIRST]
    assert bmc.boot_override() == (None, True)  # consumed by that boot
    assert lab.version(BIOS) == "8.4.0"
    assert attempts.current_attempt(lab.store, BIOS).state == states.SUCCEEDED

    bmc.reset()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 3)
    assert [b.outcome for b in lab.handler.boots(BIOS)[3:]] == [machine.DISK_FIRST]
    assert lab.handler.boots(BIOS)[3].fetches == []


def test_continuous_override_stays_and_power_on_from_off_uses_it(lab):
    bmc, h = lab.world.bmc(UEFI), lab.host(UEFI)
    bmc.set_boot_override("network", once=False, uefi=True)
    bmc.power_off(graceful=False)
    bmc.power_on()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 1)
    (boot,) = lab.handler.boots(UEFI)
    # Not armed: the local answer's GRUB starts the disk's EFI loader (an exit would stop at the boot menu).
    assert boot.outcome == machine.CHAINLOADED and boot.fetched("config") == 1
    assert bmc.boot_override() == ("network", False)
    bmc.set_boot_override(None)
    assert bmc.boot_override() == (None, True)


def test_no_override_support_is_injectable(lab):
    bmc = lab.world.bmc(UEFI)
    assert bmc.supports_override() is True
    lab.world.no_override(UEFI)
    assert bmc.supports_override() is False
    with pytest.raises(OverrideUnsupported):
        bmc.set_boot_override("network")
    assert bmc.boot_override() == (None, True)
    assert lab.handler.boot_state(UEFI).pending_override() == (None, True)


@pytest.mark.parametrize("mac,spec", [(BIOS, "bios-disk-first"), (UEFI, "uefi-disk-first")])
@pytest.mark.parametrize("graceful", [True, False], ids=["soft-off", "hard-off"])
def test_off_once_override_on_network_boots_a_disk_first_machine_once(tmp_path, mac, spec, graceful):
    """The BMC calls the product's one-time network boot makes (provisioner/power/netboot.py; the IPMI front
    passes a soft-off, the Redfish front a hard one, and clears the override first): off, confirmed off, a Once
    network override (UEFI flag on the UEFI machine), on. The armed machine network-boots once, installs, and its
    reboot boots the disk; on UEFI the installer's entry is first in BootOrder, so the next reset boots the disk
    too. No power cycle is left in FIRMWARE. The machine is its pool's master (a member upgraded before its master
    stays in XAPI_STARTING: the simulator's rolling-upgrade rule, not a boot matter)."""
    uefi = spec.startswith("uefi")
    lab = Lab(tmp_path, macs=(mac,))
    try:
        _off_override_on(lab, mac, uefi, graceful)
    finally:
        lab.close()


def _off_override_on(lab, mac, uefi, graceful):
    attempts.arm(lab.store, lab.config, mac, MEDIA)
    bmc, h = lab.world.bmc(mac), lab.host(mac)
    bmc.power_off(graceful=graceful)
    wait_for(lambda: h.state == st.OFF)
    assert bmc.power_state() == "Off" and h.boot_count == 0
    if not graceful:
        bmc.set_boot_override(None)
    bmc.set_boot_override("network", once=True, uefi=uefi)
    bmc.power_on()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 1)
    assert h.boot_error == ""
    assert [b.outcome for b in lab.handler.boots(mac)] == [machine.INSTALLED, machine.DISK_FIRST]
    assert [e["devices"] for e in lab.events.kinds(machine.EV_FIRMWARE, mac)] == [["network", "disk"],
                                                                                   ["disk", "network"]]
    assert bmc.boot_override() == (None, True)  # consumed by the first pass
    assert lab.version(mac) == "8.4.0"
    assert attempts.current_attempt(lab.store, mac).state == states.SUCCEEDED
    view = lab.handler.boot_state(mac).describe()
    if uefi:
        assert view["order"] == ["Boot0000 XenServer (disk)", "Boot0001 UEFI PXEv4 (network)"]
        assert view["boot_next"] is None
    assert h.bmc_log[-1] == ("power_on", "firmware")

    bmc.reset()
    wait_for(lambda: h.state == st.XAPI_RUNNING and h.boot_count == 2)
    assert lab.handler.boots(mac)[-1].outcome == machine.DISK_FIRST and lab.handler.boots(mac)[-1].fetches == []
