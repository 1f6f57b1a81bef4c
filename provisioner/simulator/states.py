"""Host power/boot states of the simulator (docs/simulator.md "Host power and boot states"), one transition table, and
the version table."""

from __future__ import annotations

XAPI_RUNNING = "XAPI_RUNNING"
"""xapi up and startup complete: the endpoint answers normally."""
SHUTTING_DOWN = "SHUTTING_DOWN"
"""reboot/shutdown started for real (10 s after the call): live=false, endpoint closed."""
OFF = "OFF"
"""powered off: waits for host.power_on or world.power_on."""
FIRMWARE = "FIRMWARE"
"""firmware/PXE: the boot hook (simulated machine) decides install or local boot."""
BOOT_LOCAL = "BOOT_LOCAL"
"""booting the installed system from disk."""
XAPI_STARTING = "XAPI_STARTING"
"""xapi started, startup not complete: HOST_STILL_BOOTING window (members: emergency errors until Pool.hello)."""

SERVING = frozenset({XAPI_STARTING, XAPI_RUNNING})  # the endpoint listens only in these states (4.3)

TRANSITIONS = frozenset({
    (XAPI_RUNNING, SHUTTING_DOWN),
    (XAPI_STARTING, SHUTTING_DOWN),
    (SHUTTING_DOWN, FIRMWARE),
    (SHUTTING_DOWN, OFF),
    (OFF, FIRMWARE),
    (FIRMWARE, BOOT_LOCAL),
    (BOOT_LOCAL, XAPI_STARTING),
    (XAPI_STARTING, XAPI_RUNNING),
    (XAPI_RUNNING, XAPI_STARTING),  # a toolstack restart (host.restart_agent, simulator/update_calls.py)
})


def check_transition(old: str, new: str) -> None:
    if (old, new) not in TRANSITIONS:
        raise ValueError(f"illegal host transition {old} -> {new}")


# A new version changes product_version, build_number, platform_version, xapi, xapi_build and the API
# version together (4.3); rolling_upgrade_in_progress compares platform_version and xapi (2.9).
VERSIONS: dict[str, dict[str, str]] = {
    "8.2.1": {"product_version": "8.2.1", "build_number": "release/yangtze/master/58",
              "platform_version": "3.2.1", "xapi": "1.20", "xapi_build": "1.20.1", "xen": "4.13.5",
              "db_schema": "5.602", "API_version_minor": "15"},
    "8.4.0": {"product_version": "8.4.0", "build_number": "release/nile/master/72",
              "platform_version": "3.4.0", "xapi": "24.19", "xapi_build": "24.19.2", "xen": "4.17.4",
              "db_schema": "5.775", "API_version_minor": "21"},
}


def software_version(version: dict | str, hostname: str) -> tuple[dict, str]:
    """(host.software_version map, API_version_minor) for a version name or a boot-hook dict."""
    if isinstance(version, str):
        version = {"product_version": version}
    base = dict(VERSIONS.get(version["product_version"], {}))
    if not base:
        base = _derived(version.get("platform_version", version["product_version"]))
    base.update({k: v for k, v in version.items() if v})
    minor = base.pop("API_version_minor")
    pv = base["product_version"]
    sv = {"product_brand": "XenServer", "product_version_text": pv, "product_version_text_short": pv,
          "platform_name": "XCP", "hostname": hostname, "date": "2026-01-01", "linux": "4.19.0+1",
          "network_backend": "openvswitch", "git_id": "0", "xencenter_min": "2.21", "xencenter_max": "2.21",
          **base}
    return sv, minor


def _nums(s) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(s).split("."))


def _derived(pv: str) -> dict[str, str]:
    """The record of a version the table does not know (a synthetic newer media): xapi's version only grows with
    the platform version, so it takes the xapi of the known version on the same platform (an 8.4.1 on platform
    3.4.0 ranks with 8.4.0, not below it), or one above every known xapi on an older platform; mixed pools are
    still detected (rolling_upgrade_in_progress compares platform_version and xapi)."""
    known = sorted((v for v in VERSIONS.values() if _nums(v["platform_version"]) <= _nums(pv)),
                   key=lambda v: _nums(v["platform_version"]))
    base = dict(known[-1]) if known else {"xapi": "1.0", "xen": "4.17.4", "db_schema": "5.775",
                                          "API_version_minor": "21"}
    if base.get("platform_version") != pv:
        major = _nums(base["xapi"])[0] + 1
        base.update(xapi=f"{major}.0", xapi_build=f"{major}.0.0")
    base.update(build_number="sim", platform_version=pv)
    return base


def version_key(sv: dict) -> tuple:
    """Order hosts by (platform_version, xapi): evacuation and the higher-version block compare these (2.4, 2.6)."""
    return _nums(sv.get("platform_version", "0")), _nums(sv.get("xapi", "0"))
