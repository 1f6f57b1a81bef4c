"""The BMC face of a simulated machine (docs/simulator.md "The BMC face"): what a Redfish or IPMI server in front of
the machine drives. Power goes through the world's power state machine (power.py), so XAPI sees what it would see;
the boot override lands in the machine's firmware boot state (bootorder.py), consumed by its next boot.

It imports nothing of world.py or machine.py: it gets the world at construction (World.bmc) and the machine's boot
state from the world's boot handler (boot_handler.BootHandler.boot_state) when it has one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from . import states as st
from .bootorder import BootOrder
from .hosts import SimHost

log = logging.getLogger(__name__)

ON, OFF = "On", "Off"


class OverrideUnsupported(Exception):
    """The BMC has no boot-override support (World.no_override): Redfish refuses the PATCH, IPMI the bootdev."""


class BmcTarget:
    """One machine's BMC: power state and buttons, boot override. Thread-safe; one per MAC (World.bmc)."""

    def __init__(self, world: Any, mac: str):
        self.world, self.mac = world, mac.lower()
        self._lock = threading.Lock()
        self._own_state: BootOrder | None = None  # when the world's boot handler keeps no boot state

    @property
    def _host(self) -> SimHost:
        return self.world.host(self.mac)

    def _note(self, what: str, detail: str) -> None:
        self._host.bmc_log.append((what, detail))
        log.info("bmc %s: %s %s", self.mac, what, detail, extra={"mac": self.mac})

    def _boot_state(self) -> BootOrder:
        boot_state = getattr(self.world.boot_handler, "boot_state", None)
        if boot_state is not None:
            return boot_state(self.mac)
        if self._own_state is None:  # a plain hook (tests): keep the slot here so it can still be read
            self._own_state = BootOrder.from_spec("bios-network-first")
        return self._own_state

    # --- power ---

    def power_state(self) -> str:
        """"Off" when off, and also while the host is still shutting down to off (docs/firmware.md "A reboot does
        not reach the network"); a warm reboot under way stays "On"."""
        h = self._host
        if h.state == st.OFF or (h.state == st.SHUTTING_DOWN and h.pending_op != "reboot"):
            return OFF
        return ON

    def power_on(self) -> None:
        """The power button: silently dropped while the host is still shutting down, and when injected
        (World.drop_power_on); nothing when it is on."""
        with self._lock:
            h = self._host
            if h.power_on_drops > 0:
                h.power_on_drops -= 1
                self._note("power_on", "dropped (injected)")
                return
            if h.state == st.SHUTTING_DOWN:
                self._note("power_on", "dropped: still shutting down")
                return
            if h.state != st.OFF:
                self._note("power_on", "already on")
                return
            self._note("power_on", "firmware")
            self.world.power_on(self.mac)

    def power_off(self, graceful: bool) -> None:
        """graceful: ACPI soft-off, xapi shuts down cleanly as on host.shutdown (ignored while a reboot or
        shutdown is already under way; a host not yet running its OS just goes off). Hard: the host dies at
        once and live stays true until xapi notices (World.crash)."""
        with self._lock:
            h = self._host
            if self.power_state() == OFF:
                self._note("power_off", "already off")
                return
            if graceful and (h.pending_op or h.state == st.SHUTTING_DOWN):
                self._note("power_off", f"soft-off ignored: {h.pending_op or 'shutting down'} under way")
                return
            if graceful and h.serving:
                self._note("power_off", "soft-off: clean shutdown")
                self.world.begin_power_off(h, "shutdown")
                return
            self._note("power_off", "hard" if not graceful else "soft-off before the OS runs: off")
            self.world.crash(self.mac)

    def reset(self) -> None:
        """Hard reset: the power is cut and the machine goes straight into its firmware (a new power cycle).
        A machine that is off stays off (the simulator's choice: power it on instead)."""
        with self._lock:
            if self._host.state == st.OFF:
                self._note("reset", "ignored: off")
                return
            self._note("reset", "firmware")
            self.world.crash(self.mac)
            self.world.power_on(self.mac)

    # --- boot override ---

    def supports_override(self) -> bool:
        return self._host.override_supported

    def set_boot_override(self, device: str | None, once: bool = True, uefi: bool = False) -> None:
        """"network"/"disk" (None clears it), once (Redfish BootSourceOverrideEnabled=Once, IPMI without
        persistent) or continuous, with the UEFI/EFI flag; the machine's next boot consumes a Once override."""
        if not self.supports_override():
            raise OverrideUnsupported(f"{self.mac}: this BMC has no boot override")
        self._boot_state().set_override(device, once, uefi)
        self._note("boot_override", f"{device} once={once} uefi={uefi}")

    def boot_override(self) -> tuple[str | None, bool]:
        """(device, once) still pending: (None, True) when there is none."""
        return self._boot_state().pending_override()
