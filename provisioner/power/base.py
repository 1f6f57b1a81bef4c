"""What every BMC kind offers the product (docs/power.md "What a boot control does"), and its one error type."""

from __future__ import annotations

from typing import Literal, Protocol

PowerState = Literal["on", "off"]


class PowerError(RuntimeError):
    """A BMC could not do what was asked. The message names the BMC (kind and address) and the problem; it never
    holds a password (the adapters build it from their own words, never from a library's exception text that
    might echo a request)."""

    def __init__(self, bmc: str, problem: str):
        self.bmc, self.problem = bmc, problem
        super().__init__(f"BMC {bmc}: {problem}")


class BootControl(Protocol):
    """One machine behind one BMC."""

    @property
    def name(self) -> str:
        """The BMC as the operator knows it (kind and address), for messages; never a credential."""
        ...

    def power_state(self) -> PowerState:
        """What the BMC reports now. Real BMCs report "off" while the machine is still going down."""
        ...

    def power_on(self) -> None: ...

    def power_off(self, graceful: bool) -> None:
        """graceful: ask the operating system to shut down (ACPI); else cut power."""
        ...

    def reset(self) -> None: ...

    def set_one_time_network_boot(self, uefi: bool) -> None:
        """The next boot only goes to the network (PXE), in UEFI or legacy mode; later boots follow the boot order."""
        ...

    def supports_network_override(self) -> bool: ...
