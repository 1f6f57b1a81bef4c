"""The one place that builds what the long flows are wired to: the XenAPI driver for a pool's or a host's URL,
the boot control of a host's BMC (power/hosts.py, its password from the registry) and its confirm-loop times, and
the timeouts of upgrade runs and lab reinstalls from the configuration.

Everything that talks to XAPI gets its driver here (coordinator/pools.py for a registered pool, the reinstall for
the new standalone host, the demo for its simulated pool), so the call timeout is chosen once.
"""

from __future__ import annotations

from typing import Callable

from provisioner import registry
from provisioner.config import Config
from provisioner.coordinator.context import ReinstallTimeouts, Timeouts
from provisioner.model import Host
from provisioner.power import hosts as power_hosts
from provisioner.power import netboot
from provisioner.power.base import BootControl
from provisioner.power.confirm import ConfirmTimes
from provisioner.store import Store
from provisioner.xapi import DEFAULT_TIMEOUT, XenApiDriver
from provisioner.xapi_tls import Trust

HOST_TIMEOUT = 30.0  # a reinstalled host's own XAPI, logged in to while it boots


def driver(url: str, username: str, password: str, *, timeout: float = DEFAULT_TIMEOUT,
           trust: Trust | None = None) -> XenApiDriver:
    """A driver on the XAPI at `url`, logging in lazily with these credentials; its HTTPS certificate checked as
    `trust` says (xapi_tls.py)."""
    return XenApiDriver(url, username, password, timeout=timeout, trust=trust)


def host_driver(url: str, username: str, password: str, trust: Trust | None = None) -> XenApiDriver:
    """A driver on one standalone host (the reinstall's new host, before it joins a pool), its certificate pinned
    by the reinstall flow (coordinator/reinstall_trust.py)."""
    return driver(url, username, password, timeout=HOST_TIMEOUT, trust=trust)


def run_timeouts(config: Config) -> Timeouts:
    """An upgrade run's waits: the defaults, polled every `upgrade_poll_ms`; a PBD.plug task waited for
    `pbd_plug_timeout_s`."""
    return Timeouts(poll=config.upgrade_poll_ms / 1000.0, pbd_plug=float(config.pbd_plug_timeout_s),
                    host_up=float(config.host_up_timeout_s), members=float(config.members_timeout_s))


def reinstall_timeouts(config: Config) -> ReinstallTimeouts:
    """A lab reinstall's waits: the defaults, polled every `upgrade_poll_ms`."""
    return ReinstallTimeouts(poll=config.upgrade_poll_ms / 1000.0)


BMC_METHODS = ("redfish", "ipmi")
"""The boot methods that reach the installer through the host's BMC (docs/power.md)."""


def boot_control(store: Store, config: Config, host: Host) -> BootControl:
    """The BootControl of `host`'s registered BMC, its password read from the registry (never shown).
    Raises PowerError when it has no usable BMC record."""
    return power_hosts.control_for(host, registry.bmc_password(store, host.mac), config)


def confirm_times(config: Config) -> ConfirmTimes:
    """The BMC confirm loop's poll / resend / give-up (Config bmc_*_seconds)."""
    return ConfirmTimes.from_config(config)


def bmc_progress(say: Callable[[str], None]) -> Callable[[str], None]:
    """The confirm loop's lines worth an operator's eyes: each power request and a forced power-off (not every
    poll)."""
    return lambda line: say(line) if "requested" in line or "cutting" in line else None


def bmc_power_on(store: Store, config: Config, host: Host | None, clock=None, times: ConfirmTimes | None = None,
                 say: Callable[[str], None] = lambda line: None) -> Callable[[], None] | None:
    """For a lab reinstall: a callable that network-boots `host` once through its BMC (power off if on, one-time
    network boot, power on, each confirmed), or None when it has no BMC (the operator powers it on)."""
    if host is None or not host.bmc_kind or not host.bmc_address:
        return None

    def power_on() -> None:
        control = boot_control(store, config, host)
        try:
            netboot.network_boot_cycle(control, uefi=host.firmware == "uefi", times=times or confirm_times(config),
                                       clock=clock, progress=bmc_progress(say))
        finally:
            power_hosts.close(control)
    return power_on
