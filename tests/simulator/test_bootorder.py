"""The firmware boot state of a simulated machine (provisioner/simulator/bootorder.py): which devices one pass through
the firmware tries, what it consumes, and what the installer's boot entry does (docs/firmware.md "The simulated
firmware's boot state")."""

import pytest

from provisioner.simulator.bootorder import DISK, HTTP, NETWORK, BootOrder


def _passes(state, n=3):
    return [state.devices_for_next_boot() for _ in range(n)]


@pytest.mark.parametrize("spec, first", [
    ("bios-network-first", [NETWORK, DISK]), ("bios-disk-first", [DISK, NETWORK]),
    ("uefi-network-first", [NETWORK, DISK]), ("uefi-disk-first", [DISK, NETWORK])])
def test_specs(spec, first):
    state = BootOrder.from_spec(spec)
    assert state.mode == spec.split("-")[0]
    assert _passes(state) == [first] * 3  # nothing pending: every pass follows the order


# (spec, override (device, once), boot_next kind, expected passes)
CASES = [
    ("bios-disk-first", (NETWORK, True), None, [[NETWORK, DISK], [DISK, NETWORK], [DISK, NETWORK]]),
    ("bios-disk-first", (NETWORK, False), None, [[NETWORK, DISK]] * 3),
    ("bios-network-first", (DISK, True), None, [[DISK, NETWORK], [NETWORK, DISK], [NETWORK, DISK]]),
    ("uefi-disk-first", (NETWORK, True), None, [[NETWORK, DISK], [DISK, NETWORK], [DISK, NETWORK]]),
    ("uefi-disk-first", None, NETWORK, [[NETWORK, DISK], [DISK, NETWORK], [DISK, NETWORK]]),
    ("uefi-network-first", None, DISK, [[DISK, NETWORK], [NETWORK, DISK], [NETWORK, DISK]]),
    ("uefi-disk-first", (DISK, True), NETWORK, [[DISK, NETWORK], [DISK, NETWORK], [DISK, NETWORK]]),
]


@pytest.mark.parametrize("spec, override, boot_next, expected", CASES)
def test_override_and_boot_next_are_consumed_by_one_pass(spec, override, boot_next, expected):
    state = BootOrder.from_spec(spec)
    if override:
        state.set_override(*override)
    if boot_next:
        state.set_boot_next(state.entry_number(boot_next))
    assert _passes(state) == expected
    assert state.boot_next is None
    assert state.pending_override() == ((override[0], False) if override and not override[1] else (None, True))


def test_override_cleared_and_checked():
    state = BootOrder.from_spec("bios-disk-first")
    state.set_override(NETWORK, once=True, uefi=True)
    assert state.pending_override() == (NETWORK, True) and state.describe()["override"]["uefi"] is True
    state.set_override(None)
    assert state.pending_override() == (None, True)
    assert state.devices_for_next_boot() == [DISK, NETWORK]
    with pytest.raises(ValueError):
        state.set_override("floppy")
    with pytest.raises(ValueError):
        state.set_boot_next(0)  # BIOS has no BootNext


@pytest.mark.parametrize("spec, after", [
    ("uefi-network-first", [DISK, NETWORK]),  # the installer's new entry goes first, even on a PXE-first site
    ("uefi-disk-first", [DISK, NETWORK]),
    ("bios-network-first", [NETWORK, DISK]),  # BIOS: the installer writes no boot entry
    ("bios-disk-first", [DISK, NETWORK]),
])
def test_installer_wrote_boot_entry(spec, after):
    state = BootOrder.from_spec(spec)
    state.installer_wrote_boot_entry("XenServer")
    assert state.devices_for_next_boot() == after


def test_installer_replaces_old_entries_of_every_brand():
    state = BootOrder("uefi", entries={0: ("Citrix Hypervisor", DISK), 1: ("UEFI PXEv4", NETWORK),
                                       3: ("XenServer", DISK), 4: ("Windows Boot Manager", DISK)},
                      order=[1, 0, 3, 4], boot_next=3)
    state.installer_wrote_boot_entry("XenServer")
    labels = {n: label for n, (label, _) in state.entries.items()}
    assert sorted(labels.values()) == ["UEFI PXEv4", "Windows Boot Manager", "XenServer"]
    new = state.order[0]
    assert labels[new] == "XenServer" and state.order == [new, 1, 4]
    assert new == 0  # efibootmgr -c takes the first free Boot#### number
    assert state.boot_next is None  # BootNext named a deleted entry


def test_http_entry_and_copies():
    state = BootOrder.uefi(network_first=False, http=True)
    assert state.devices_for_next_boot() == [DISK, NETWORK, HTTP]
    copy = BootOrder.from_spec(state)
    copy.set_override(NETWORK)
    assert state.pending_override() == (None, True)  # two machines never share one state


@pytest.mark.parametrize("bad", [
    dict(mode="efi"), dict(mode="bios", devices=["floppy"]),
    dict(mode="uefi", entries={0: ("XenServer", DISK)}, order=[0, 7]),
    dict(mode="uefi", entries={0: ("XenServer", DISK)}, order=[0], boot_next=2)])
def test_bad_states_refused(bad):
    with pytest.raises(ValueError):
        BootOrder(**bad)
    with pytest.raises(ValueError):
        BootOrder.from_spec("pxe-first")
