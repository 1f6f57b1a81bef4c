"""The host-plugin boot method: XenCenter's way into the installer, with no firmware change and no network boot
(docs/host-plugin.md; docs/architecture.md "Rolling pool upgrade", its boot methods).

The plan runs `prepare_host_upgrade.py testUrl {url}` on each host to upgrade (the media tree URL, the same
`<source>` our own answer files name: boot/urls.py media_tree); REBOOT records a `host_plugin.main` event, then
runs `main {url}` (the host downloads the installer, writes its own upgrade answer file of its inventory's
PRIMARY_DISK and makes a one-shot bootloader entry the default), then host.reboot. No installer attempt is armed:
the host fetches no config of ours and runs none of our scripts, so the run watches XAPI only.

`main` twice before the reboot is harmless (the second replaces the first's entry and files; its revert script
keeps the default "upgrade", which then names no entry and GRUB boots the first one: docs/host-plugin.md "main
twice"), so a REBOOT resumed after a crash runs `main` again unless the host is already rebooting.
"""

from __future__ import annotations

from provisioner import registry, sites
from provisioner.boot import downloads, urls
from provisioner.config import Config
from provisioner.coordinator.context import Context, StepFailed, find, xapi_call
from provisioner.store import RunHost, Store
from provisioner.xapi import PoolDriver, XapiError, XapiUnreachable

METHOD = "host-plugin"
MAIN_EVENT = downloads.PLUGIN_MAIN  # "host_plugin.main"
"""Recorded before `main` runs (commit then act): {url, address} (address: the host's XAPI address, None if unknown)."""
PLAN_NOTE = ("host-plugin: the host writes its own answer file (an upgrade of its inventory's PRIMARY_DISK from the "
             "media URL) and boots the installer from its own bootloader; no network boot, no scripts of ours")

# XenCenter's texts for the plugin's error keys (XenModel/FriendlyNames.resx PREPARE_HOST_UPGRADE_*)
KEYS = {
    "INVALID_URL": "Invalid URL to installer files",
    "INVALID_VER": "The specified location contains a non-applicable version of the installer files (older than "
                   "the host)",
    "MISSING_URL": "Missing URL",
    "NOT_FOUND": "The specified network location was not found",
    "FORBIDDEN": "Access to the specified network location is forbidden",
    "UNAUTH_URL": "You are not authorized to access the specified network location",
    "TIMEOUT": "The request has timed out",
    "REPO_IOERROR": "An error occurred while opening the installer files",
    "ERROR_PREPARING_HOST": "There was an error in preparing the host for upgrade",
}


def uses(store: Store, mac: str) -> bool:
    host = store.get_host(mac)
    return host is not None and registry.boot_method_of(store, host) == METHOD


def media_url(config: Config, media_name: str) -> str:
    return urls.media_tree(config.base_url, media_name)


def describe(exc: XapiError | XapiUnreachable) -> str:
    """A plugin failure in words: XENAPI_PLUGIN_FAILURE [fn, class, KEY] (XenCenter reads the 4th element)."""
    details = [str(d) for d in getattr(exc, "details", None) or []]
    if details[:1] == ["XENAPI_PLUGIN_FAILURE"] and len(details) == 4:
        key = details[3]
        text = KEYS.get(key) or ("The server hosting the installer files has encountered an error"
                                 if key.startswith("REPO_SERVER_ERROR_") else key)
        return f"{text} ({key})"
    if details[:1] == ["XENAPI_MISSING_PLUGIN"]:
        return "the host has no prepare_host_upgrade.py plugin (package host-upgrade-plugin)"
    return str(exc)


def test(driver: PoolDriver, host_ref: str, url: str) -> str | None:
    """testUrl from the host's dom0: None when it answers "true", else why not."""
    try:
        answer = driver.test_upgrade_url(host_ref, url)
    except (XapiError, XapiUnreachable) as exc:
        return f"boot method host-plugin: prepare_host_upgrade.py testUrl {url} failed: {describe(exc)}"
    if str(answer).lower() != "true":
        return f"boot method host-plugin: prepare_host_upgrade.py testUrl {url} answered {answer!r}"
    return None


def prepare(ctx: Context, rh: RunHost, host_ref: str) -> None:
    """Record, then run `main`: StepFailed (nothing rebooted) when the host could not prepare itself."""
    url = media_url(sites.site_config(ctx.store, ctx.config, ctx.store.get_host(rh.mac)), ctx.media.name)
    info = find(ctx, rh.uuid)
    ctx.event(MAIN_EVENT, rh, url=url, address=info.address if info is not None else None)
    try:
        answer = xapi_call(ctx, rh, "host.call_plugin", ctx.driver.prepare_upgrade, host_ref, url, plugin="main")
    except XapiError as exc:
        raise StepFailed(f"not rebooted: prepare_host_upgrade.py main {url} failed: {describe(exc)}") from None
    if str(answer).lower() != "true":
        raise StepFailed(f"not rebooted: prepare_host_upgrade.py main {url} answered {answer!r}")


def prepared(ctx: Context, rh: RunHost) -> bool:
    """`main` was run for this host in this run."""
    return bool(ctx.store.events(mac=rh.mac, run_id=ctx.run_id, kind=MAIN_EVENT))


def _clock(ts: str) -> str:
    """An event's ISO time as HH:MM:SS (UTC, as stored)."""
    return ts[11:19] if len(ts) >= 19 else ts


def observed(ctx: Context, rh: RunHost) -> str:
    """What the run has actually seen of a host-plugin host since its `main`: only XAPI (the plugin answered, the
    host was rebooted and is not back) and our HTTP server's media downloads from its address (the
    host_plugin.download events boot/downloads.py writes); never a start script or a report, which this mode
    does not have."""
    mains = ctx.store.events(mac=rh.mac, run_id=ctx.run_id, kind=MAIN_EVENT)
    if not mains:
        return "host-plugin: prepare_host_upgrade.py main has not run for it"
    return (f"host-plugin: prepare_host_upgrade.py main ran at {_clock(mains[-1]['ts'])} and it was rebooted; "
            f"{fetched(ctx, rh, mains[-1]['id'])}; it is not back in XAPI; no installer report comes in this mode")


def _phase(details: dict) -> str:
    return "after its reboot" if details.get("phase") == downloads.INSTALLER else "during main"


def fetched(ctx: Context, rh: RunHost, main: int) -> str:
    """The host's downloads from our media URL since that `main`, in words."""
    seen = [e for e in ctx.store.events(mac=rh.mac, run_id=ctx.run_id, kind=downloads.EVENT, since_id=main)
            if e["details"].get("main") == main]
    if not seen:
        return "no download of our media from its address seen"
    return "from our HTTP server it fetched " + ", ".join(
        f"{e['details'].get('what')} at {_clock(e['ts'])} ({_phase(e['details'])})" for e in seen)


_SAID: dict[tuple[str, str], int] = {}
"""(run id, MAC) -> the last host_plugin.download event said as a progress line (by this process)."""


def say_downloads(ctx: Context, rh: RunHost) -> None:
    """While the run waits on a host-plugin host: one progress line per new download event of it (boot/downloads.py
    writes one per kind of file per `main`: install.img, vmlinuz, xen.gz, repository)."""
    key = (ctx.run_id, rh.mac)
    new = ctx.store.events(mac=rh.mac, run_id=ctx.run_id, kind=downloads.EVENT, since_id=_SAID.get(key, 0))
    for e in new:
        d = e["details"]
        ctx.say(f"{rh.name}: fetched {d.get('what')} ({d.get('path')}) from our HTTP server at {_clock(e['ts'])} "
                f"{_phase(d)} (host-plugin, from {d.get('client')})")
    if new:
        _SAID[key] = new[-1]["id"]
