"""A registered host's boot control: the BootControl its BMC fields name, and what `provisioner bmc check` reads.

Plain values in (the Host record, its clear password, the Config); the caller (cli, later the coordinator) reads
them from the registry. docs/power.md "What a boot control does", docs/bmc-registry.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner.config import Config
from provisioner.model import Host

from .base import BootControl, PowerError


def control_for(host: Host, password: str | None, config: Config) -> BootControl:
    """The boot control of `host`'s BMC. Raises PowerError when it has none, or no password."""
    if not host.bmc_kind or not host.bmc_address:
        raise PowerError(f"of {host.mac}", "none registered (provisioner hosts bmc MAC --kind ... --address ...)")
    if not host.bmc_username or not password:
        raise PowerError(f"{host.bmc_kind} {host.bmc_address}", "no username or password registered "
                         "(provisioner hosts bmc MAC ... --username U --password-file F)")
    if host.bmc_kind == "redfish":
        from .redfish import RedfishBootControl  # sushy only for a Redfish BMC: other commands start faster
        return RedfishBootControl(host.bmc_address, host.bmc_username, password, system_id=host.bmc_system_id,
                                  mac=None if host.bmc_system_id else host.netboot_mac,
                                  verify=config.bmc_verify_tls)
    if host.bmc_kind == "ipmi":
        from .ipmi import IpmiBootControl  # pyghmi likewise
        return IpmiBootControl(host.bmc_address, host.bmc_username, password)
    raise PowerError(f"{host.bmc_kind} {host.bmc_address}", f"unknown BMC kind {host.bmc_kind!r}")


@dataclass(frozen=True)
class BmcCheck:
    """What a BMC answered: usable only when it reads a power state and offers a one-time network boot."""

    bmc: str
    power: str | None
    network_override: bool
    problem: str | None

    @property
    def usable(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {"bmc": self.bmc, "power": self.power, "network_override": self.network_override,
                "usable": self.usable, "problem": self.problem}


def check(control: BootControl) -> BmcCheck:
    """Read the power state and whether a one-time network boot is offered; changes nothing."""
    try:
        power = control.power_state()
        override = control.supports_network_override()
    except PowerError as exc:
        return BmcCheck(control.name, None, False, exc.problem)
    problem = None if override else "does not offer a one-time network boot override"
    return BmcCheck(control.name, power, override, problem)


def close(control: BootControl) -> None:
    """Release the control's session where it keeps one (IPMI)."""
    closer = getattr(control, "close", None)
    if closer is not None:
        closer()
