"""The one place that builds what the long flows are wired to: the XenAPI driver for a pool's or a host's URL,
and the timeouts of upgrade runs and lab reinstalls from the configuration.

Everything that talks to XAPI gets its driver here (coordinator/pools.py for a registered pool, the reinstall for
the new standalone host, the demo for its simulated pool), so the call timeout is chosen once.
"""

from __future__ import annotations

from provisioner.config import Config
from provisioner.coordinator.context import ReinstallTimeouts, Timeouts
from provisioner.xapi import DEFAULT_TIMEOUT, XenApiDriver

HOST_TIMEOUT = 30.0  # a reinstalled host's own XAPI, logged in to while it boots


def driver(url: str, username: str, password: str, *, timeout: float = DEFAULT_TIMEOUT) -> XenApiDriver:
    """A driver on the XAPI at `url`, logging in lazily with these credentials."""
    return XenApiDriver(url, username, password, timeout=timeout)


def host_driver(url: str, username: str, password: str) -> XenApiDriver:
    """A driver on one standalone host (the reinstall's new host, before it joins a pool)."""
    return driver(url, username, password, timeout=HOST_TIMEOUT)


def run_timeouts(config: Config) -> Timeouts:
    """An upgrade run's waits: the defaults, polled every `upgrade_poll_ms`."""
    return Timeouts(poll=config.upgrade_poll_ms / 1000.0)


def reinstall_timeouts(config: Config) -> ReinstallTimeouts:
    """A lab reinstall's waits: the defaults, polled every `upgrade_poll_ms`."""
    return ReinstallTimeouts(poll=config.upgrade_poll_ms / 1000.0)
