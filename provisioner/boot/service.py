"""What the TFTP and HTTP handlers call: file name or MAC in, boot config bytes out. Handlers only translate.

Each request: parse the name (filenames), ask the one policy (attempts.decide_for -> policy.decide),
render (configs), and put the fetch on the attempt's timeline. If an installer config cannot be
rendered the host gets an explicit local boot and an event says why: fail towards the disk, never towards
a loop or a crash.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner import sites
from provisioner.boot import attempts, configs, filenames
from provisioner.config import Config
from provisioner.media import resolve_media_file
from provisioner.model import BootDecision, ValidationError, normalize_mac
from provisioner.boot.render import TemplateError
from provisioner.store import Store

log = logging.getLogger(__name__)

# Names the firmware tries BEFORE (UUID) or instead of its MAC name: answer "not found" so it moves on to
# the MAC name (pxelinux, GRUB) or to pxelinux.cfg/default, which we answer with a local boot.
_PASS = frozenset({filenames.PXE_UUID, filenames.PXE_IP, filenames.GRUB_UUID, filenames.GRUB_IP})
_IPXE_UNSAFE = re.compile(r"[^A-Za-z0-9 .:,'()_-]")  # what may not reach an iPXE `echo` line from a URL
SELF_CHECK_DIR = "provisioner-selfcheck"
"""TFTP names SELF_CHECK_DIR/<per-MAC config name> are the boot server's check of itself before a reboot
(coordinator/selfcheck.py): answered with what that per-MAC name gets now, but with no `attempt.fetch` event, so the
check neither binds the attempt to the checker's address nor counts as the host's boot (docs/architecture.md
"The boot server checks itself before a reboot")."""


@dataclass(frozen=True)
class Reply:
    """What an HTTP boot request gets: the status, the body and its media type (the web layer never caches it)."""

    status: int
    body: str | bytes
    mimetype: str = "text/plain"


def tftp_payload(store: Store, config: Config, filename: str, client_ip: Any) -> bytes | None:
    """The dynamic content for TFTP `filename`, or None: not a per-host name, serve static files (or 404).

    Per-MAC pxelinux/GRUB names get the decision's config; pxelinux.cfg/default gets a local boot; any
    plain grub.cfg (EFI/xenserver/grub.cfg for the ISO's grubx64.efi) gets the $net_default_mac dispatcher.
    A SELF_CHECK_DIR/<per-MAC name> gets that name's config, recorded nowhere.
    """
    checked = self_check_target(filename)
    if checked is not None and not _ours(client_ip):
        return None  # only this machine checks itself: to anyone else it is an ordinary (missing) file name
    path = filenames.parse_tftp(checked if checked is not None else filename)
    if checked is not None and (path is None or path.kind not in (filenames.PXE_MAC, filenames.GRUB_MAC)):
        return None
    if path is None or path.kind in _PASS:
        return None
    if path.kind == filenames.BAD_MAC:
        _bad_name(store, "tftp", filename, client_ip, path.problem)
        return None
    if path.kind == filenames.PXE_DEFAULT:
        return configs.local_boot(configs.PXELINUX, action="default", reason="no per-MAC name matched")
    if path.kind == filenames.GRUB_DEFAULT:
        return configs.dispatcher()
    loader = configs.PXELINUX if path.kind == filenames.PXE_MAC else configs.GRUB
    decision = attempts.decide_for(store, path.mac)
    # lpxelinux.0 can fetch http:// (much faster for install.img); plain pxelinux.0 cannot. The DHCP
    # server decides which one runs, so it is a site setting (config key `pxelinux_http`, default off).
    pxelinux_http = config.pxelinux_http
    return _payload(store, config, decision, loader, client_ip, name=filename, pxelinux_http=pxelinux_http,
                    record=checked is None)


def _ours(client_ip: Any) -> bool:
    """Whether `client_ip` is an address of this machine (the kernel lets a socket bind only to its own)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((str(client_ip), 0))
        return True
    except (OSError, ValueError):
        return False


def self_check_name(name: str) -> str:
    """The TFTP name of the read-only check of per-MAC config `name` (pxelinux.cfg/01-..., grub/grub.cfg-01-...)."""
    return f"{SELF_CHECK_DIR}/{name}"


def self_check_target(filename: Any) -> str | None:
    """The per-MAC name a self-check TFTP name stands for (None: not a self-check name)."""
    text = str(filename).replace("\\", "/").lstrip("/")
    head, _, rest = text.partition("/")
    return rest if head.lower() == SELF_CHECK_DIR and rest else None


def tftp_media_file(store: Store, name: str, config: Config | None = None) -> Path | None:
    """The file TFTP `name` xenserver/<media>/<relpath> stands for inside that media tree (None: not one); with
    `config`, inside this server's own copy of the tree (sites.local_media)."""
    found = filenames.parse_tftp_media_path(name)
    media = store.get_media(found[0]) if found else None
    if config is not None:
        media = sites.local_media(store, config, media)
    return resolve_media_file(media, found[1]) if media and found else None


def ipxe_payload(store: Store, config: Config, mac: str, client_ip: Any, *, platform: str | None = None) -> bytes:
    """The iPXE script for `mac` (any accepted spelling); `platform` is iPXE's ${platform} (pcbios / efi).

    A malformed MAC is an event and a ValidationError (the HTTP layer answers 400).
    """
    try:
        canonical = normalize_mac(mac)
    except ValidationError as exc:
        _bad_name(store, "ipxe", str(mac), client_ip, f"bad MAC: {exc}")
        raise
    if platform not in (None, *filenames.IPXE_PLATFORMS):
        platform = None  # unknown value: fall back to the registered firmware rather than refuse to boot
    decision = attempts.decide_for(store, canonical)
    return _payload(store, config, decision, configs.IPXE, client_ip, name=f"ipxe {canonical}",
                    platform=platform)


def ipxe_payload_for(store: Store, config: Config, target: str, client_ip: Any) -> bytes | None:
    """Convenience for the HTTP route: parse /boot/ipxe/<mac> or /boot/ipxe?mac=.. (None: not that route).

    Raises ValidationError (after an event) when the MAC in it is malformed.
    """
    path = filenames.parse_ipxe(target)
    if path is None:
        return None
    if path.kind == filenames.BAD_MAC:
        _bad_name(store, "ipxe", target, client_ip, path.problem)
        raise ValidationError(path.problem or "bad MAC", "mac")
    return ipxe_payload(store, config, path.mac, client_ip, platform=path.info.get("platform"))


def ipxe_script(store: Store, config: Config, target: str, path: str, client_ip: Any) -> Reply:
    """The HTTP iPXE route's answer for request `target` (path and query; `path` without the query): the
    script for the MAC in it, or a 400 script that says what is wrong (and an event) for a malformed name."""
    try:
        body = ipxe_payload_for(store, config, target, client_ip)
    except ValidationError as exc:
        shown = _IPXE_UNSAFE.sub("?", str(exc)[:200])  # never let a URL inject script lines
        return Reply(400, f"#!ipxe\necho provisioner: {shown}\nexit\n")
    if body is None:  # our route, but a name boot.filenames refuses outright (control characters, too long)
        store.add_event("boot.bad_name", details={"protocol": "ipxe", "name": path[:200], "client": client_ip})
        return Reply(400, "#!ipxe\necho provisioner: malformed request\nexit\n")
    return Reply(200, body)


def _payload(store: Store, config: Config, decision: BootDecision, loader: str, client_ip: Any, *, name: str,
             platform: str | None = None, pxelinux_http: bool = False, record: bool = True) -> bytes:
    """The config for `decision`; with `record` (every request but a self-check) the fetch goes on the attempt's
    timeline, and the first one binds the attempt to `client_ip` (attempts.record_fetch)."""
    attempt = decision.attempt
    what = "ipxe" if loader == configs.IPXE else "config"
    if decision.installer:
        # the URLs of the host's site's server, whichever server this request reached (sites.py, docs/sites.md)
        config = sites.boot_config(store, config, decision.host)
        media = store.get_media(attempt.media)
        try:
            body = configs.config_for(decision, loader, config, media, platform=platform,
                                         pxelinux_http=pxelinux_http)
        except (configs.BootConfigError, TemplateError) as exc:
            log.error("boot config for %s (attempt %s) failed, serving a local boot: %s", decision.mac, attempt.id, exc,
                      extra={"mac": decision.mac, "attempt": attempt.id, "run": attempt.run_id})
            store.add_event("boot.render_failed", mac=decision.mac, run_id=attempt.run_id, details={
                "attempt": attempt.id, "loader": loader, "name": name[:200], "client": _str(client_ip),
                "error": str(exc)[:500]})
            return configs.local_boot(loader, mac=decision.mac, reason="installer config could not be rendered")
        if record:
            attempts.record_fetch(store, attempt, what, client_ip, name=name, loader=loader, decision=decision.action)
        return body
    if attempt is not None and record:
        # Show the "reboot after the start script -> local boot" step on the attempt's timeline.
        attempts.record_fetch(store, attempt, what, client_ip, name=name, loader=loader, decision=decision.action,
                              reason=decision.reason)
    return configs.config_for(decision, loader, config)


def _bad_name(store: Store, protocol: str, name: str, client_ip: Any, problem: str | None) -> None:
    store.add_event("boot.bad_name", details={"protocol": protocol, "name": str(name)[:200],
                                              "client": _str(client_ip), "problem": problem})


def _str(value: Any) -> str | None:
    return None if value is None else str(value)[:64]
