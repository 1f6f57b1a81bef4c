"""The boot server checks itself before any reboot: would the host, booting now, reach us and get the installer?

Right before the coordinator reboots a host into the installer (steps.reboot) or powers a forgotten one on (the lab
reinstall), it asks its own boot server, over the wire and at the addresses the host will use:

- TFTP at public_url's host and `tftp_port`: the read-only self-check name of the host's per-MAC config
  (boot/service.py SELF_CHECK_DIR). The answer must be the installer of THIS attempt (its token is in the
  answer-file URL of the boot line), not a local boot. The self-check name is rendered like the per-MAC name the
  firmware asks for, but recorded nowhere: the attempt is not bound to our own address and no boot is counted.
- HTTP at public_url: the media's `.treeinfo` (what the installer reads first, and no boot file, so it is put on
  no attempt's timeline), which must be the imported media's own file.

Anything else (nothing answers, a local boot, another server's content) raises SelfCheckFailed naming what did not
answer and what to fix; the caller then refuses to reboot (docs/architecture.md "The boot server checks itself
before a reboot").
"""

from __future__ import annotations

import urllib.error
import urllib.request
import urllib.parse
from pathlib import Path

from provisioner.boot import filenames, service, urls
from provisioner.config import Config
from provisioner.media import TREEINFO
from provisioner.model import Attempt, Host, Media
from provisioner.tftp.client import TftpFetchError, fetch

TIMEOUT = 2.0
"""Seconds each probe (one TFTP try, the HTTP request) waits for an answer: a server on the LAN answers at once."""
TFTP_RETRIES = 2
READ_LIMIT = 1 << 20  # a .treeinfo is a few hundred bytes: never read a large wrong answer whole
NO_SERVER = ("is `provisioner serve` running with this configuration (same data_dir, tftp_port and public_url)?")


class SelfCheckFailed(RuntimeError):
    """The boot server would not give the host its installer; the message says what did not answer and what to do."""


def config_name(host: Host) -> str:
    """The per-MAC name the host's firmware asks for: GRUB's on UEFI, pxelinux's on BIOS (boot/filenames.py)."""
    return filenames.format_grub(host.mac) if host.firmware == "uefi" else filenames.format_pxelinux(host.mac)


def tftp_address(config: Config) -> tuple[str, int]:
    """Where hosts fetch their TFTP configs: the host of public_url (the boot server), on `tftp_port`."""
    return urllib.parse.urlsplit(config.base_url).hostname or config.bind_address, config.tftp_port


def check_boot_server(config: Config, host: Host, media: Media, attempt: Attempt, *,
                      timeout: float = TIMEOUT) -> None:
    """Raise SelfCheckFailed unless TFTP gives `host` the installer of `attempt` and HTTP serves `media`.
    Config `boot_self_check = false` skips it, for a coordinator that cannot reach public_url itself although the
    hosts can (the end-to-end lab runs its coordinator outside the hosts' network namespace: docs/lab.md)."""
    if not config.boot_self_check:
        return
    _check_tftp(config, host, attempt, timeout)
    _check_http(config, media, timeout)


def check_media(config: Config, media: Media, *, timeout: float = TIMEOUT) -> None:
    """Only the HTTP half: a host-plugin host fetches the media from public_url and nothing over TFTP
    (coordinator/hostplugin.py)."""
    if config.boot_self_check:
        _check_http(config, media, timeout)


def _check_tftp(config: Config, host: Host, attempt: Attempt, timeout: float) -> None:
    address, port = tftp_address(config)
    name = config_name(host)
    where = f"TFTP {address}:{port} ({name})"
    try:
        body = fetch(address, port, service.self_check_name(name), timeout=timeout, retries=TFTP_RETRIES)
    except TftpFetchError:
        raise SelfCheckFailed(f"{where} did not answer: {NO_SERVER}") from None
    except FileNotFoundError:
        raise SelfCheckFailed(f"{where} answered 'file not found' for the self-check name: another TFTP server "
                              f"listens there, not this provisioner; {NO_SERVER}") from None
    if attempt.token.encode() not in body:  # the token is in the answer-file URL of the installer's boot line
        raise SelfCheckFailed(f"{where} answered with a local boot, not the installer of attempt {attempt.id}: the "
                              f"server does not see this arming; {NO_SERVER}")


def _check_http(config: Config, media: Media, timeout: float) -> None:
    url = urls.media_file(config.base_url, media.name, TREEINFO)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # hosts reach us directly, not by proxy
    fix = f"check public_url ({config.base_url}): the hosts fetch the installer and its media there"
    try:
        with opener.open(url, timeout=timeout) as reply:
            body = reply.read(READ_LIMIT)
    except urllib.error.HTTPError as exc:
        raise SelfCheckFailed(f"HTTP {url} answered {exc.code}, not the media's {TREEINFO}: {fix}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        raise SelfCheckFailed(f"HTTP {url} did not answer ({why}): {fix}; {NO_SERVER}") from None
    try:
        expected = (Path(media.path) / TREEINFO).read_bytes()
    except OSError:
        expected = None  # the tree is not readable here: the version in it has to do
    same = body == expected if expected is not None else f"= {media.product_version}".encode() in body
    if not same:
        raise SelfCheckFailed(f"HTTP {url} answered, but not with media {media.name}'s {TREEINFO} (another server?): "
                              f"{fix}")
