"""The boot state of one simulated machine's firmware (docs/firmware.md "The simulated firmware's boot state"):
BIOS device order or UEFI boot entries + BootOrder + BootNext, and the one-time override slot a BMC sets. Pure: no
I/O; a lock only, because the BMC face (bmc_target.py) writes it from another thread than the booting machine.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

BIOS, UEFI = "bios", "uefi"
NETWORK, DISK, HTTP = "network", "disk", "http"
KINDS = (NETWORK, DISK, HTTP)
# The labels the installer deletes before it writes its own entry (host-installer backend.py clearEfiBootEntries;
# docs/firmware.md "A reboot does not reach the network").
INSTALLER_LABELS = ("XenServer", "Citrix Hypervisor")

# Shorthands make_boot_handler accepts (machine.py): mode + what comes first.
SPECS = ("bios-network-first", "bios-disk-first", "uefi-network-first", "uefi-disk-first")


@dataclass
class Override:
    """What a BMC asked for: Redfish BootSourceOverrideTarget + Enabled (Once/Continuous) + Mode (UEFI/Legacy);
    IPMI "chassis bootdev" with or without persistent and the EFI flag."""

    device: str
    once: bool = True
    uefi: bool = False


@dataclass
class BootOrder:
    """One machine's firmware boot state. BIOS: `devices` in order. UEFI: `entries` (number -> (label, kind)),
    `order` (BootOrder) and `boot_next` (BootNext). Both: `override`, the BMC's slot."""

    mode: str = BIOS
    devices: list[str] = field(default_factory=lambda: [NETWORK, DISK])
    entries: dict[int, tuple[str, str]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    boot_next: int | None = None
    override: Override | None = None

    def __post_init__(self) -> None:
        if self.mode not in (BIOS, UEFI):
            raise ValueError(f"firmware mode {self.mode!r} is neither {BIOS!r} nor {UEFI!r}")
        for kind in self.devices if self.mode == BIOS else [k for _, k in self.entries.values()]:
            if kind not in KINDS:
                raise ValueError(f"unknown boot device kind {kind!r} (one of {', '.join(KINDS)})")
        missing = [n for n in self.order if n not in self.entries]
        if missing or (self.boot_next is not None and self.boot_next not in self.entries):
            raise ValueError(f"BootOrder/BootNext name entries that do not exist: {missing or [self.boot_next]}")
        self._lock = threading.Lock()

    # --- constructors ---

    @classmethod
    def bios(cls, devices: list[str] | tuple[str, ...] = (NETWORK, DISK)) -> "BootOrder":
        return cls(BIOS, devices=list(devices))

    @classmethod
    def uefi(cls, network_first: bool = False, *, http: bool = False) -> "BootOrder":
        """A UEFI machine as it leaves an XenServer install (Boot0000 "XenServer" first) or with the site's
        network-first order; Boot0001 is the NIC's PXE entry, Boot0002 its HTTP-boot entry when `http`."""
        entries = {0: ("XenServer", DISK), 1: ("UEFI PXEv4", NETWORK)}
        if http:
            entries[2] = ("UEFI HTTPv4", HTTP)
        order = [1, 0] if network_first else [0, 1]
        return cls(UEFI, entries=entries, order=order + ([2] if http else []))

    @classmethod
    def from_spec(cls, spec: "str | BootOrder") -> "BootOrder":
        """A BootOrder, or one of SPECS; a BootOrder is copied so two machines never share one."""
        if isinstance(spec, BootOrder):
            return cls(spec.mode, list(spec.devices), dict(spec.entries), list(spec.order), spec.boot_next,
                       spec.override and Override(spec.override.device, spec.override.once, spec.override.uefi))
        if spec not in SPECS:
            raise ValueError(f"unknown boot order {spec!r} (one of {', '.join(SPECS)})")
        mode, first = spec.split("-", 1)
        if mode == BIOS:
            return cls.bios([NETWORK, DISK] if first == "network-first" else [DISK, NETWORK])
        return cls.uefi(network_first=first == "network-first")

    # --- what a BMC does ---

    def set_override(self, device: str | None, once: bool = True, uefi: bool = False) -> None:
        """Set (device "network"/"disk") or clear (None) the override slot."""
        if device is not None and device not in (NETWORK, DISK):
            raise ValueError(f"override device {device!r} is neither {NETWORK!r} nor {DISK!r}")
        with self._lock:
            self.override = None if device is None else Override(device, once, uefi)

    def pending_override(self) -> tuple[str | None, bool]:
        with self._lock:
            return (self.override.device, self.override.once) if self.override else (None, True)

    def set_boot_next(self, number: int | None) -> None:
        """efibootmgr -n N (or a BMC that implements its override through BootNext)."""
        with self._lock:
            if self.mode != UEFI or (number is not None and number not in self.entries):
                raise ValueError(f"no UEFI boot entry {number!r}")
            self.boot_next = number

    def entry_number(self, kind: str) -> int | None:
        """The first entry of this kind in BootOrder (then any): for BootNext in tests."""
        for number in self.order + sorted(self.entries):
            if self.entries.get(number, ("", ""))[1] == kind:
                return number
        return None

    # --- what the firmware does ---

    def devices_for_next_boot(self) -> list[str]:
        """The device kinds the firmware tries, in order, for ONE pass (power-on, reset or warm reboot): the
        override first, then (UEFI) BootNext, then the order. A Once override and BootNext are consumed: the
        firmware clears them as it boots."""
        with self._lock:
            first: list[str] = []
            if self.override is not None:
                first.append(self.override.device)
                if self.override.once:
                    self.override = None
            if self.mode == BIOS:
                rest = list(self.devices)
            else:
                numbers = ([self.boot_next] if self.boot_next is not None else []) + self.order
                self.boot_next = None
                rest = [self.entries[n][1] for n in numbers if n in self.entries]
            devices: list[str] = []
            for kind in first + rest:  # trying the same kind twice in one pass changes nothing
                if kind not in devices:
                    devices.append(kind)
            return devices

    def installer_wrote_boot_entry(self, label: str = "XenServer") -> None:
        """What the installer does at the end of every install and upgrade: on UEFI it deletes the entries
        labelled XenServer / Citrix Hypervisor / its own brand and creates a new one, which efibootmgr -c puts
        FIRST in BootOrder (docs/firmware.md "The simulated firmware's boot state"). BIOS: nothing changes."""
        with self._lock:
            if self.mode != UEFI:
                return
            labels = set(INSTALLER_LABELS) | {label}
            gone = [n for n, (name, _) in self.entries.items() if name in labels]
            for number in gone:
                del self.entries[number]
            self.order = [n for n in self.order if n not in gone]
            if self.boot_next in gone:
                self.boot_next = None
            number = next(n for n in range(0x10000) if n not in self.entries)
            self.entries[number] = (label, DISK)
            self.order.insert(0, number)

    def describe(self) -> dict:
        """A plain view for events and reports."""
        with self._lock:
            view = {"mode": self.mode}
            if self.mode == BIOS:
                view["devices"] = list(self.devices)
            else:
                view.update(order=[f"Boot{n:04X} {self.entries[n][0]} ({self.entries[n][1]})" for n in self.order],
                            boot_next=self.boot_next)
            if self.override is not None:
                view["override"] = {"device": self.override.device, "once": self.override.once,
                                    "uefi": self.override.uefi}
            return view
