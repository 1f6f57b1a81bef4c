"""Fresh-install answer files (lab reinstall flow ONLY): render `fresh-install.xml` and refuse anything else.

This is the one file we serve that WIPES a disk (root `<installation>` without a mode = fresh install,
docs/installer.md "Modes: which answer files wipe a disk"), so it is held to the same standard as upgrades: re-parsed
with the installer's minidom semantics and refused unless it is a fresh install of exactly the host's registered disk,
on its own management NIC, with a crypt(3) root-password hash (never plain text), our media tree and this attempt's two
scripts. No guest disks (they would be wiped too), no confirmation prompt, no unknown elements. Only a reinstall attempt
reaches render_fresh() (boot/answers.py asks the store); answerfile.render_upgrade() can never select this template, and its
validator refuses this file. The checks themselves are answerfile_fresh_check.py.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping, Sequence

from provisioner import cryptpw
from provisioner.boot import urls
from provisioner.boot.answerfile import (
    STAGE_COMPLETE, STAGE_START, AnswerfileError, check_token, disk_problem, template_dirs, url_problem)
from provisioner.boot.answerfile_fresh_check import (
    DEFAULT_TIMEZONE, SERVER, TIMEZONE, UnsafeFreshAnswerfile, parse_fresh)
from provisioner.config import Config
from provisioner.model import NAME, Host, Media, ValidationError, normalize_mac, validate_disk
from provisioner.boot.render import TemplateError, render

FRESH_TEMPLATE = "fresh-install.xml"  # a constant: the upgrade path has its own (answerfile.UPGRADE_TEMPLATE)


def _server(value: Any, what: str) -> str:
    text = str(value).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        if SERVER.fullmatch(text):
            return text
    raise AnswerfileError(f"{what} {text[:64]!r} is not an IP address or host name")


def network_context(network: Mapping[str, Any] | None) -> dict[str, Any]:
    """admin_proto/ip/netmask/gateway from the old management PIF ({"mode": "static", "ip", ...}); else DHCP."""
    if not network or str(network.get("mode", "")).lower() != "static":
        return {"admin_proto": "dhcp", "ip": None, "netmask": None, "gateway": None}
    values = {}
    for key in ("ip", "netmask", "gateway"):
        try:
            values[key] = str(ipaddress.IPv4Address(str(network.get(key) or "").strip()))
        except ValueError:
            raise AnswerfileError(f"static management network: {key} {network.get(key)!r} is not an IPv4 "
                                  "address (the installer's static admin-interface needs ip, netmask and gateway)")
    return {"admin_proto": "static", **values}


def fresh_context(config: Config, host: Host, media: Media, token: str, *, root_password_hash: str,
                  network: Mapping[str, Any] | None = None, timezone: str = DEFAULT_TIMEZONE,
                  ntp_servers: Sequence[str] = (), name_servers: Sequence[str] | None = None,
                  extra_sources: Sequence[str] = (), driver_sources: Sequence[str] = ()) -> dict[str, Any]:
    """The values `fresh-install.xml` needs, built and checked in plain Python (the hash is never echoed).
    `extra_sources` (supplemental packs) follow the media tree; `driver_sources` are driver disks (docs/packs.md)."""
    try:
        disk = validate_disk(host.disk)
        media_name = Media.check_name(media.name)
        mac = normalize_mac(host.mac)
    except ValidationError as exc:
        raise AnswerfileError(f"host MAC {host.mac}: {exc}") from None
    problem = disk_problem(disk) if disk else "is unknown"
    if problem:
        raise AnswerfileError(f"host {host.name} (MAC {mac}): boot disk {problem}; a fresh install must name the "
                              "registered disk (`provisioner hosts update MAC --disk /dev/disk/by-id/...`)")
    check_token(token)
    problem = cryptpw.hash_problem(root_password_hash)
    if problem:
        raise AnswerfileError(f"root password hash {problem}")
    if not NAME.fullmatch(host.name or ""):
        raise AnswerfileError(f"host name {host.name!r} cannot be a host name")
    if not TIMEZONE.fullmatch(timezone or ""):
        raise AnswerfileError(f"timezone {timezone!r} is not a tz database name such as Etc/UTC")
    if name_servers is None:
        name_servers = (network or {}).get("dns") or ()
    base = config.base_url
    start, complete = urls.script(base, token, STAGE_START), urls.script(base, token, STAGE_COMPLETE)
    source = urls.media_tree(base, media_name)
    checked = (("source", source), *(("source", u) for u in extra_sources),
               *(("driver-source", u) for u in driver_sources), ("script", start), ("script", complete))
    for what, url in checked:
        if url_problem(url):
            raise AnswerfileError(f"{what} URL {url!r} {url_problem(url)}")
    return {"disk": disk, "mac": mac, **network_context(network), "hostname": host.name, "timezone": timezone,
            "ntp_servers": [_server(s, "NTP server") for s in ntp_servers],
            "name_servers": [_server(s, "name server") for s in name_servers],
            "root_password_hash": root_password_hash, "source": source, "sources": (source, *extra_sources),
            "driver_sources": tuple(driver_sources), "start_script": start,
            "complete_script": complete}


def render_fresh(config: Config, host: Host, media: Media, token: str, *, root_password_hash: str,
                 network: Mapping[str, Any] | None = None, timezone: str = DEFAULT_TIMEZONE,
                 ntp_servers: Sequence[str] = (), name_servers: Sequence[str] | None = None,
                 extra_sources: Sequence[str] = (), driver_sources: Sequence[str] = ()) -> str:
    """The validated fresh-install answer file for one REINSTALL attempt; raises, never returns a doubtful file.

    Callers: only the boot endpoint, for an attempt the store links to a reinstall (never the upgrade path).
    """
    context = fresh_context(config, host, media, token, root_password_hash=root_password_hash, network=network,
                            timezone=timezone, ntp_servers=ntp_servers, name_servers=name_servers,
                            extra_sources=extra_sources, driver_sources=driver_sources)
    try:
        text = render(template_dirs(config), FRESH_TEMPLATE, context)
    except TemplateError as exc:
        raise AnswerfileError(str(exc)) from exc
    found = parse_fresh(text, expected_disk=context["disk"], expected_mac=context["mac"])
    expected = {"hostname": context["hostname"], "proto": context["admin_proto"], "ip": context["ip"],
                "netmask": context["netmask"], "gateway": context["gateway"], "sources": context["sources"],
                "driver_sources": context["driver_sources"],
                "scripts": {STAGE_START: context["start_script"], STAGE_COMPLETE: context["complete_script"]},
                "timezone": context["timezone"], "name_servers": tuple(context["name_servers"]),
                "ntp_servers": tuple(context["ntp_servers"])}
    for key, value in expected.items():
        got = dict(found.scripts) if key == "scripts" else getattr(found, key)
        if got != value:  # an override may change layout only, never what the installer reads
            raise UnsafeFreshAnswerfile(f"{key} {got!r} differs from the computed {value!r}")
    if found.root_password_hash != root_password_hash:
        raise UnsafeFreshAnswerfile("<root-password> differs from the given hash")
    return text


def render_for_reinstall(config: Config, host: Host, media: Media, attempt: Any, reinstall: Any,
                         extra_sources: Sequence[str] = (), driver_sources: Sequence[str] = ()) -> str:
    """The fresh-install file of the attempt that `reinstall` armed (store.reinstall_for_attempt); anything
    else is refused: another attempt, another host or media, or a hash already used (served once)."""
    if reinstall is None or attempt is None or reinstall.attempt_id != attempt.id:
        raise AnswerfileError("not the attempt of a lab reinstall: only a reinstall's own attempt gets a fresh install")
    if (reinstall.mac, reinstall.media) != (attempt.mac, attempt.media) or host.mac != attempt.mac:
        raise AnswerfileError(f"reinstall {reinstall.id} and attempt {attempt.id} disagree on host or media")
    if not reinstall.root_password_hash:
        raise AnswerfileError(f"reinstall {reinstall.id}: its root-password hash was already used (the fresh-install "
                              "answer file is served once) or the flow ended")
    return render_fresh(config, host, media, attempt.token, root_password_hash=reinstall.root_password_hash,
                        network=reinstall.network, extra_sources=extra_sources,
                        driver_sources=driver_sources)
