"""The boot hook the XAPI simulator calls when a host enters FIRMWARE: one simulated Machine (machine.py) per MAC,
created on first use with the handler's settings (docs/simulator.md "Host power and boot states")."""

from __future__ import annotations

import threading
from typing import Any, Mapping

from provisioner.simulator.boots import FAILURES, Boot, OnEvent
from provisioner.simulator.bootorder import BootOrder
from provisioner.simulator.firmware import canonical_mac
from provisioner.simulator.machine import Machine


class BootHandler:
    """The hook the XAPI simulator calls: handler(mac) -> version dict | None. One Machine per MAC, created on
    first use with the handler's settings; `failures` may be changed between boots (inject()). `boot_orders` maps
    MAC -> its firmware boot state (a bootorder.SPECS name or a BootOrder), `boot_order` is every other machine's."""

    def __init__(self, tftp_addr: tuple[str, int], **settings: Any):
        self.tftp_addr = tftp_addr
        self.failures: dict = dict(settings.pop("failures", None) or {})
        self.firmware: dict[str, str] = {canonical_mac(k): v for k, v in (settings.pop("firmware", None) or {}).items()}
        self.boot_orders = {canonical_mac(k): BootOrder.from_spec(v)
                            for k, v in (settings.pop("boot_orders", None) or {}).items()}
        self.boot_order = settings.pop("boot_order", None)  # None: DEFAULT_BOOT_ORDER (Machine)
        # MAC -> its loader where not `loader`: DHCP hands one per client-arch (docs/lab.md: 7 gets grubx64.efi)
        self.loaders = {canonical_mac(k): v for k, v in (settings.pop("loaders", None) or {}).items()}
        self.settings = settings
        self.stop_event = threading.Event()
        self.machines: dict[str, Machine] = {}
        self._lock = threading.Lock()
        # check the settings now, not on a sim thread
        Machine("00:00:00:00:00:00", tftp_addr, boot_order=self.boot_order, **settings)
        for loader in set(self.loaders.values()):
            Machine("00:00:00:00:00:00", tftp_addr, boot_order=self.boot_order, **{**settings, "loader": loader})

    def machine(self, mac: str) -> Machine:
        canonical = canonical_mac(mac)
        with self._lock:
            if canonical not in self.machines:
                self.machines[canonical] = Machine(canonical, self.tftp_addr, failures=self.failures,
                                                   firmware=self.firmware.get(canonical), stop_event=self.stop_event,
                                                   boot_order=self.boot_orders.get(canonical, self.boot_order),
                                                   **{**self.settings, **({"loader": self.loaders[canonical]}
                                                                          if canonical in self.loaders else {})})
            return self.machines[canonical]

    def __call__(self, mac: str) -> dict | None:
        return self.machine(mac).power_on()

    def inject(self, mac: str | None = None, **failures: Any) -> None:
        """Set failures (FAILURES names) for one MAC, or globally when mac is None; a false value clears one."""
        unknown = set(failures) - set(FAILURES)
        if unknown:
            raise ValueError(f"unknown failure(s) {sorted(unknown)} (known: {', '.join(FAILURES)})")
        with self._lock:
            target = self.failures if mac is None else self.failures.setdefault(canonical_mac(mac), {})
            target.update(failures)

    def boot_state(self, mac: str) -> BootOrder:
        """The machine's firmware boot state: what its BMC (bmc_target.py) sets the override in."""
        return self.machine(mac).bootorder

    def boots(self, mac: str) -> list[Boot]:
        return list(self.machine(mac).boots)

    def stop(self) -> None:
        """Release hung machines (never_returns) and end any boot loop at its next boot."""
        self.stop_event.set()


def make_boot_handler(tftp_addr: tuple[str, int], *, clock: Any = None, install_seconds: float = 600.0,
                      loader: str = "pxelinux", http_base: str | None = None,
                      failures: Mapping[str, Any] | None = None, max_boots: int = 5,
                      external_command: str | list[str] | None = None, on_event: OnEvent | None = None,
                      firmware: Mapping[str, str] | None = None, boot_order: str | BootOrder | None = None,
                      boot_orders: Mapping[str, str | BootOrder] | None = None,
                      loaders: Mapping[str, str] | None = None) -> BootHandler:
    """The boot hook for the XAPI simulator (see BootHandler). `firmware` maps MAC -> "bios"|"uefi" (what iPXE
    reports as ${platform}); `failures` holds global FAILURES keys and/or {mac: {failure: value}}; `boot_order`
    (None: DEFAULT_BOOT_ORDER, BIOS disk first) and `boot_orders` (per MAC) give the firmware boot states
    (bootorder.py); `loaders` (per MAC) the loader of a machine that does not use `loader` (a UEFI one's GRUB)."""
    return BootHandler(tftp_addr, clock=clock, install_seconds=install_seconds, loader=loader, http_base=http_base,
                       failures=failures, max_boots=max_boots, external_command=external_command,
                       on_event=on_event, firmware=firmware, boot_order=boot_order, boot_orders=boot_orders,
                       loaders=loaders)
