"""Sites (issue 22, docs/sites.md): which server boots which host, and with whose URLs.

Every `serve` registers itself in the store under its config's `site` (one row per server, keyed by its base URL)
and renews last_seen on a heartbeat. A host's boot URLs (kernel, initrd, media, answer file, scripts, report) point
at the server of the HOST's site, found here, whichever server its request reached: a host of site B whose TFTP
request lands on server A still gets B's URLs (and an event says so). A host without a site, or of this server's
site, gets this server's own URLs, exactly as before sites.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from typing import Any

from provisioner.config import Config
from provisioner.model import Host, Media
from provisioner.store import Server, Store

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
"""How often a serve renews its row's last_seen (and looks for media it lacks: mediasync.py)."""
UP_WITHIN_S = 3 * HEARTBEAT_S
"""A server seen within this many seconds counts as up (three missed heartbeats: down)."""


def server_id(config: Config) -> str:
    """This server's key in the servers table: its base URL, what hosts and the other servers reach it at."""
    return config.base_url


def tftp_address(config: Config) -> str:
    """host:port where the hosts of this site fetch TFTP configs: public_url's host (as dhcp/plan.py's next-server)
    and tftp_port."""
    host = urllib.parse.urlsplit(config.base_url).hostname or config.bind_address
    return f"{host}:{config.tftp_port}"


def register(store: Store, config: Config) -> Server:
    """At serve start: this server's row, fresh (a restart finds its own row again)."""
    return store.register_server(server_id(config), config.site, config.base_url, tftp_address(config))


def heartbeat(store: Store, config: Config) -> None:
    """Renew last_seen; registers again when the row is gone (removed by an operator, db copy --replace)."""
    if not store.server_seen(server_id(config)):
        register(store, config)


def is_up(server: Server) -> bool:
    return server.age <= UP_WITHIN_S


def site_server(store: Any, site: str) -> Server | None:
    """The server booting hosts of `site` use: the most recently seen one that is up, else the most recently seen
    (a server down now is still the best address to give: DHCP sends the site's hosts there), None if none ever."""
    servers = store.list_servers(site)
    return next((s for s in servers if is_up(s)), servers[0] if servers else None)


def site_config(store: Any, config: Config, host: Host | None) -> Config:
    """`config` with public_url and tftp_port of `host`'s site's server, recording nothing: what the coordinator's
    pre-reboot self-check and the host-plugin media URL use (the host will fetch from there, not from the driving
    server). This server's own config for a host of its site, without a site, or of a site no server registered."""
    server = _other_site_server(store, config, host)
    return config if server is None else _with_server(config, server)


def boot_config(store: Any, config: Config, host: Host | None) -> Config:
    """`config` as the boot renderers should see it for `host`: site_config(), plus an event when the host is of
    another site (boot.other_site) or of a site no server registered (boot.site_unknown: its URLs are ours)."""
    if host is None or host.site is None or host.site == config.site:
        return config
    server = _other_site_server(store, config, host)
    if server is None:
        store.add_event("boot.site_unknown", mac=host.mac, details={
            "site": host.site, "server": server_id(config), "served_site": config.site,
            "note": "no server registered this site: the host gets this server's URLs"})
        return config
    store.add_event("boot.other_site", mac=host.mac, details={
        "site": host.site, "server": server_id(config), "served_site": config.site, "urls_of": server.server,
        "up": is_up(server)})
    log.info("host %s of site %s asked server %s (site %s): served with %s's URLs", host.mac, host.site,
             server_id(config), config.site, server.public_url, extra={"mac": host.mac})
    return _with_server(config, server)


def _other_site_server(store: Any, config: Config, host: Host | None) -> Server | None:
    if host is None or host.site is None or host.site == config.site:
        return None
    return site_server(store, host.site)


def _with_server(config: Config, server: Server) -> Config:
    port = server.tftp_address.rpartition(":")[2]
    return dataclasses.replace(config, public_url=server.public_url,
                               tftp_port=int(port) if port.isdigit() else config.tftp_port)


def local_media(store: Any, config: Config, media: Media | None) -> Media | None:
    """`media` with the path of this server's own ready copy when that is elsewhere (a tree synced from another
    server: mediasync.py), for serving its files; unchanged otherwise."""
    if media is None:
        return None
    mine = store.media_copy(media.name, server_id(config))
    if mine is None or mine.state != "ready" or mine.path == media.path:
        return media
    return dataclasses.replace(media, path=mine.path)


def media_availability(store: Any, media_name: str) -> dict[str, dict[str, Any]]:
    """Per site: {"state": ready if one of its servers has a ready copy, else the best other state (syncing,
    failed), "servers": [{server, state, path, error}]} (`media list`, REST /media, upgrade prechecks)."""
    found: dict[str, dict[str, Any]] = {}
    rank = {"ready": 0, "syncing": 1, "failed": 2}
    for copy in store.media_copies(media_name):
        site = found.setdefault(copy.site, {"state": copy.state, "servers": []})
        site["servers"].append({"server": copy.server, "state": copy.state, "path": copy.path, "error": copy.error})
        if rank.get(copy.state, 3) < rank.get(site["state"], 3):
            site["state"] = copy.state
    return found


def availability_text(found: dict[str, dict[str, Any]]) -> str:
    """'dc1 ready, dc2 syncing' (media list's column)."""
    return ", ".join(f"{site} {info['state']}" for site, info in sorted(found.items()))
