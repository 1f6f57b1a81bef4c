"""Simulated machines follow their firmware boot state (bootorder.py) against the real runtime (TFTP + HTTP on
loopback): disk-first machines never reach us, a local-boot answer falls through to the next device, and on UEFI
the installer's entry goes first after every install or upgrade (docs/firmware.md "The simulated firmware's boot
state")."""

import sys

import pytest

from sim_helpers import BIOS, MEDIA, OTHER, UEFI, VERSION, Events, RecordingClock, wait_for

from provisioner import states
from provisioner.boot import attempts
from provisioner.simulator import boot_handler, machine
from provisioner.simulator import states as st
from provisioner.simulator.bootorder import DISK, NETWORK, BootOrder
from provisioner.simulator.builder import build_pool, new_world
from provisioner.simulator.clock import Clock

def _handler(runtime, events, **settings):
    return boot_handler.make_boot_handler(runtime.tftp.address, http_base=runtime.http.url, on_event=events,
                                          clock=RecordingClock(), **settings)


def _outcomes(handler, mac, since=0):
    return [b.outcome for b in handler.boots(mac)[since:]]


def test_default_is_bios_disk_first(server):
    """No boot order given: a BIOS host of a site with no PXE-first policy (docs/firmware.md "A reboot does not
    reach the network"); a PXE-first site says bios-network-first."""
    _, _, runtime = server
    handler = _handler(runtime, Events())
    assert machine.DEFAULT_BOOT_ORDER == "bios-disk-first"
    assert handler.boot_state(OTHER).describe() == {"mode": "bios", "devices": [DISK, NETWORK]}
    assert handler.machine(OTHER).firmware is None  # iPXE's ${platform} stays unset, as before


def test_a_machine_with_no_boot_order_reboots_to_its_disk_and_no_tftp_request_reaches_us(server):
    """host.reboot of an armed host whose machine was built with no boot order: the firmware boots the disk,
    the server sees no TFTP request at all, the host comes back at its old version and the attempt stays armed.
    The same world with the PXE-first order reaches us (the counter the check reads does count)."""
    config, store, runtime = server
    for order, reaches_us in ((None, False), ("bios-network-first", True)):
        world = new_world(Clock(5000.0))
        build_pool(world, "p", hosts=1, macs=[BIOS], vms_per_host=0)
        handler = _handler(runtime, Events(), **({"boot_order": order} if order else {}))
        world.boot_handler = handler
        world.start()
        try:
            host = world.host(BIOS)
            attempts.arm(store, config, BIOS, MEDIA)
            sessions, refused = runtime.tftp.counters["sessions"], runtime.tftp.counters["refused"]
            world.begin_power_off(host, "reboot")  # what host.reboot does (host_calls.py)
            wait_for(lambda: host.state == st.XAPI_RUNNING and host.boot_count >= 1 and handler.boots(BIOS))
            seen = runtime.tftp.counters["sessions"] + runtime.tftp.counters["refused"] - sessions - refused
            if reaches_us:
                assert seen > 0 and handler.boots(BIOS)[0].outcome == machine.INSTALLED
                continue
            assert seen == 0
            assert _outcomes(handler, BIOS) == [machine.DISK_FIRST] and handler.boots(BIOS)[0].fetches == []
            sv = host.pool.db.get("host", host.ref)["software_version"]
            assert sv["product_version"] == "8.2.1" and host.new_version is None  # back at its old version
            assert attempts.current_attempt(store, BIOS).state == states.ARMED
        finally:
            handler.stop()
            world.stop()


def test_disk_first_bios_machine_armed_on_our_server_boots_its_disk_with_no_fetch(server):
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    events = Events()
    handler = _handler(runtime, events, boot_orders={BIOS: "bios-disk-first"})
    for _ in range(3):  # every power cycle: the same
        assert handler(BIOS) is None
    assert _outcomes(handler, BIOS) == [machine.DISK_FIRST] * 3
    assert all(b.fetches == [] for b in handler.boots(BIOS)) and not events.kinds(machine.EV_FETCH, BIOS)
    assert [e["devices"] for e in events.kinds(machine.EV_FIRMWARE, BIOS)] == [[DISK, NETWORK]] * 3
    assert attempts.current_attempt(store, BIOS).state == states.ARMED  # armed, and never reached


def test_network_first_local_answer_falls_through_to_the_next_device(server):
    """The local-boot answer hands the boot back to the firmware, which goes on with ITS order."""
    _, _, runtime = server
    handler = _handler(runtime, Events(), boot_orders={OTHER: "bios-network-first", BIOS: BootOrder.bios([NETWORK])})
    assert handler(OTHER) is None
    (boot,) = handler.boots(OTHER)
    assert boot.outcome == machine.LOCAL and [f.what for f in boot.fetches] == ["config"]
    # A machine whose order holds the network only: the local answer leaves it no device to boot.
    with pytest.raises(machine.NoBootableSystem):
        handler(BIOS)
    (boot,) = handler.boots(BIOS)
    assert boot.outcome == machine.NO_SYSTEM and "no bootable device left" in boot.detail
    assert boot.fetched("config") == 1


def test_a_disk_first_machine_with_a_broken_disk_falls_through_to_the_network(server):
    config, store, runtime = server
    handler = _handler(runtime, Events(), boot_orders={BIOS: "bios-disk-first"})
    handler.machine(BIOS).disk_broken = True  # what installer_breaks leaves
    attempts.arm(store, config, BIOS, MEDIA)
    with pytest.raises(machine.NoBootableSystem):  # the upgrade finds no installation; then nothing boots
        handler(BIOS)
    boots = handler.boots(BIOS)
    assert boots[0].outcome == machine.INSTALL_BROKEN and boots[0].fetched("answerfile") == 1
    assert boots[-1].outcome == machine.NO_SYSTEM


def test_uefi_after_an_upgrade_boots_the_disk_then_boot_next_and_override_network_boot_once(server):
    config, store, runtime = server
    events = Events()
    handler = _handler(runtime, events, loader="grub", boot_orders={UEFI: "uefi-network-first"})
    assert handler.machine(UEFI).firmware == "uefi"
    attempts.arm(store, config, UEFI, MEDIA)
    # A PXE-first UEFI machine: installed once; the installer's reboot already boots the disk (its entry first).
    assert handler(UEFI) == VERSION
    assert _outcomes(handler, UEFI) == [machine.INSTALLED, machine.DISK_FIRST]
    state = handler.boot_state(UEFI)
    assert state.describe()["order"][0].endswith("XenServer (disk)")
    assert attempts.current_attempt(store, UEFI).state == states.SUCCEEDED

    # Armed again (a second upgrade): a plain reboot never reaches us.
    attempts.arm(store, config, UEFI, MEDIA)
    assert handler(UEFI) is None
    assert _outcomes(handler, UEFI, 2) == [machine.DISK_FIRST]
    assert handler.boots(UEFI)[2].fetches == []
    assert attempts.current_attempt(store, UEFI).state == states.ARMED

    # BootNext = the PXE entry: the network once, the installer runs, its reboot boots the disk.
    state.set_boot_next(state.entry_number(NETWORK))
    assert handler(UEFI) == VERSION
    assert _outcomes(handler, UEFI, 3) == [machine.INSTALLED, machine.DISK_FIRST]
    assert handler.machine(UEFI).installs() == 2

    # A BMC's Once override to the network: one network boot (local answer: the server disarmed, and GRUB starts
    # the disk's EFI loader), then the disk.
    state.set_override(NETWORK, once=True, uefi=True)
    assert handler(UEFI) is None
    boot = handler.boots(UEFI)[5]
    assert boot.outcome == machine.CHAINLOADED and boot.fetched("config") == 1
    assert state.pending_override() == (None, True)
    assert handler(UEFI) is None
    assert handler.boots(UEFI)[6].outcome == machine.DISK_FIRST and handler.boots(UEFI)[6].fetches == []


def test_no_pxe_still_skips_the_network_whatever_the_order(server):
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    handler = _handler(runtime, Events(), failures={BIOS: {"no_pxe": True}})
    handler.boot_state(BIOS).set_override(NETWORK)
    assert handler(BIOS) is None
    assert _outcomes(handler, BIOS) == [machine.DISK_FIRST] and handler.boots(BIOS)[0].fetches == []


def test_bad_boot_orders_are_refused_up_front():
    with pytest.raises(ValueError):
        boot_handler.make_boot_handler(("127.0.0.1", 69), boot_order="pxe-always")
    with pytest.raises(ValueError):
        boot_handler.make_boot_handler(("127.0.0.1", 69), boot_orders={BIOS: "uefi-sideways"})


def test_a_separate_process_machine_with_no_boot_order_boots_its_disk(server):
    """`python -m provisioner.simulator.process` without $BOOT_ORDER: the default order, the disk, nothing fetched."""
    config, store, runtime = server
    attempts.arm(store, config, BIOS, MEDIA)
    sessions = runtime.tftp.counters["sessions"]
    handler = _handler(runtime, Events(), external_command=[sys.executable, "-m", "provisioner.simulator.process"])
    assert handler(BIOS) is None
    assert runtime.tftp.counters["sessions"] == sessions
    assert attempts.current_attempt(store, BIOS).state == states.ARMED


def test_uefi_local_answer_starts_the_disks_loader_and_a_plain_exit_stops_at_the_boot_menu(server):
    """docs/firmware.md "Local boot on UEFI": the simulated GRUB follows our local answer's `search --file` /
    `chainloader` blocks to the loader XenServer put on the ESP; with none there (a disk whose install broke) the
    config's `exit` returns EFI_SUCCESS and the machine stays at its boot menu, down."""
    _, _, runtime = server
    handler = _handler(runtime, Events(), loaders={UEFI: "grub"}, boot_orders={UEFI: "uefi-network-first"})
    assert handler(UEFI) is None  # not armed: the local answer
    assert _outcomes(handler, UEFI) == [machine.CHAINLOADED]
    assert "/EFI/xenserver/grubx64.efi" in handler.boots(UEFI)[0].detail
    handler.machine(UEFI).disk_broken = True
    with pytest.raises(machine.NoBootableSystem, match="stopped at its menu"):
        handler(UEFI)


def test_the_simulated_grub_reads_chainload_blocks_with_its_own_parser():
    config = "\n".join(["# local", "if search --no-floppy --file --set=root /EFI/a.efi; then",
                        "  chainloader /EFI/a.efi", "  boot", "fi", "exit"])
    assert machine.parse_config("grub", config) == {"action": "local", "chainload": ["/EFI/a.efi"]}
    assert machine.parse_config("grub", "exit") == {"action": "local", "chainload": []}
    with pytest.raises(machine.BootFailure, match="is not 'chainloader"):
        machine.parse_config("grub", config.replace("chainloader /EFI/a.efi", "chainloader /EFI/b.efi"))
    # upstream GRUB starts the image with $root's device: found into another variable, it came "from the network"
    with pytest.raises(machine.BootFailure, match="root's device"):
        machine.parse_config("grub", config.replace("--set=root", "--set=esp").replace(
            "chainloader /EFI/a.efi", "chainloader ($esp)/EFI/a.efi"))
