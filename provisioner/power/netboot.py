"""One-time network boot and a power cycle (docs/power.md "One-time network boot"): off (graceful, then hard if
the machine is still on after `graceful_seconds`), confirmed off, the one-time override, on, confirmed on."""

from __future__ import annotations

from .base import BootControl, PowerError
from .confirm import Clock, ConfirmTimes, Progress, confirm_power

GRACEFUL_SECONDS = 120.0
"""How long a graceful shutdown may take before the power is cut (our choice: dom0 stops its VMs first)."""


def network_boot_cycle(control: BootControl, uefi: bool, times: ConfirmTimes | None = None,
                       clock: Clock | None = None, progress: Progress | None = None,
                       graceful_seconds: float = GRACEFUL_SECONDS) -> None:
    """Power `control`'s machine off, set a one-time network boot, power it on; each state confirmed."""
    times = times or ConfirmTimes()
    if not control.supports_network_override():
        raise PowerError(control.name, "does not offer a one-time network boot override")
    if control.power_state() == "on":
        graceful = ConfirmTimes(poll=times.poll, resend=times.resend, give_up=graceful_seconds)
        try:
            confirm_power(control, "off", lambda: control.power_off(graceful=True), graceful, clock, progress)
        except PowerError:
            if progress:
                progress(f"{control.name}: still on after a graceful shutdown of {graceful_seconds:.0f}s; "
                         f"cutting the power")
            confirm_power(control, "off", lambda: control.power_off(graceful=False), times, clock, progress)
    control.set_one_time_network_boot(uefi)
    confirm_power(control, "on", control.power_on, times, clock, progress)
