"""`dhcp-config`: the plan written in the format a site's DHCP server reads (one function per server)."""

from __future__ import annotations

import os
from pathlib import Path

from provisioner.config import Config
from provisioner.dhcp import dnsmasq, isc, kea, windows
from provisioner.dhcp.plan import FORMATS, DhcpPlan, build_plan
from provisioner.store import Store

RENDERERS = {"kea": kea.render, "isc": isc.render, "dnsmasq": dnsmasq.render, "windows": windows.render}
assert tuple(RENDERERS) == FORMATS


def render(plan: DhcpPlan, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise ValueError(f"unknown DHCP format {fmt!r}: one of {', '.join(FORMATS)}")
    return RENDERERS[fmt](plan)


def dhcp_config(store: Store, config: Config, fmt: str, *, next_server: str | None = None,
                ipxe: bool | None = None) -> tuple[DhcpPlan, str]:
    """The plan for the registered hosts and its text in `fmt`."""
    plan = build_plan(store, config, next_server=next_server, ipxe=ipxe)
    return plan, render(plan, fmt)


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and a rename (never half-written)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
