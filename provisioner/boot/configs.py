"""Render the per-MAC boot config a loader gets for a BootDecision (pxelinux, GRUB, iPXE; 8.x and 9 media).

The lines copy the XenServer ISO's own boot entries and add our arguments (docs/installer.md "Boot lines"). Boot
configs are not escaped by the template engine, so every value put into one is checked here against a
strict character set first: no whitespace, quotes, ';', '$', braces or line breaks can reach a config and
add arguments or commands. Anything that does not pass is refused (BootConfigError), never rendered.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any, Mapping

from provisioner.boot import urls
from provisioner.boot.filenames import tftp_media_path
from provisioner.config import Config
from provisioner.media import media_generation
from provisioner.model import ATTEMPT_TOKEN, MAC, MEDIA_NAME, BootDecision, Media
from provisioner.boot.render import render

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

PXELINUX = "pxelinux"
GRUB = "grub"
IPXE = "ipxe"
LOADERS = (PXELINUX, GRUB, IPXE)

# The ISO's own arguments (xs8 isolinux.cfg / grub.cfg); ours are appended to the dom0 kernel's.
XEN_ARGS = ("dom0_max_vcpus=1-16", "dom0_mem=max:8192M", "com1=115200,8n1", "console=com1,vga")
DOM0_ARGS = ("console=hvc0", "console=tty0")
MULTIPATH_ARG = "device_mapper_multipath=enabled"  # a host's multipath flag (docs/installer.md "Boot parameters")
# Media-relative boot files per generation: 8.x boots xen.gz (multiboot), 9 boots xen.efi (xen_boot).
BOOT_FILES = {
    "xs8": {"hypervisor": "boot/xen.gz", "kernel": "boot/vmlinuz", "installer": "install.img"},
    "xs9": {"hypervisor": "boot/xen.efi", "kernel": "boot/vmlinuz", "installer": "install.img"},
}
GRUB_EFI = "grubx64.efi"  # the site's UEFI GRUB in tftp_root, which iPXE on UEFI chains to (8.x)
ISO_GRUB_EFI = "EFI/xenserver/grubx64.efi"  # the media's own GRUB (9 line: the only one with xen_hypervisor)

_URL = re.compile(r"https?://[A-Za-z0-9._~:/=%,+@\[\]-]+")
_TFTP_URL = re.compile(r"tftp://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/")
_TFTP_PATH = re.compile(r"[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*")
_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:()/_=+-]")
_NETLOC = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


class BootConfigError(ValueError):
    """A boot config cannot be rendered safely (bad value, unsupported loader/media combination)."""


def _check(value: Any, pattern: re.Pattern, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or "/../" in value + "/" or len(value) > 1024:
        raise BootConfigError(f"refusing to put {what} {value!r} into a boot config: it could inject arguments")
    return value


def _comment(text: Any) -> str:
    """Free text for a comment line: one line, harmless characters only."""
    return _COMMENT_UNSAFE.sub("?", str(text))[:200]


def grub_http_path(url: str) -> str:
    """http://host:port/path -> (http,host:port)/path, GRUB's spelling of an HTTP file."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise BootConfigError(f"GRUB can only fetch plain http:// URLs, not {url!r}: set public_url to http://")
    _check(parts.netloc, _NETLOC, "GRUB HTTP server")
    return f"(http,{parts.netloc}){parts.path}"


def local_boot(loader: str, *, mac: str | None = None, action: str = "local_boot", reason: str = "",
               efi_grub_url: str | None = None) -> bytes:
    """The explicit local-disk boot config for `loader`: pxelinux `localboot 0`; GRUB chains to the disk's EFI
    loader (then `exit`); iPXE `exit`, or on UEFI (`efi_grub_url`: the site's GRUB) a chain to that GRUB, since an
    `exit` there stops the firmware at its boot menu (docs/firmware.md "Local boot on UEFI")."""
    names = {PXELINUX: "pxelinux-local.cfg", GRUB: "grub-local.cfg", IPXE: "ipxe-local.ipxe"}
    if loader not in names:
        raise BootConfigError(f"unknown loader {loader!r} (one of {', '.join(LOADERS)})")
    context = {"mac": _comment(mac or "unknown MAC"), "action": _comment(action), "reason": _comment(reason)}
    if loader == IPXE and efi_grub_url is not None:
        return render([TEMPLATE_DIR], "ipxe-local-efi.ipxe",
                      {**context, "grub_url": _check(efi_grub_url, _URL, "GRUB URL")}).encode()
    return render([TEMPLATE_DIR], names[loader], context).encode()


def dispatcher() -> bytes:
    """EFI/xenserver/grub.cfg (and any plain grub.cfg): chain to grub.cfg-$net_default_mac, else local boot."""
    return render([TEMPLATE_DIR], "grub-dispatcher.cfg", {}).encode()


def config_for(decision: BootDecision, loader: str, config: Config, media: Media | None = None, *,
               platform: str | None = None, pxelinux_http: bool = False) -> bytes:
    """The config `loader` gets for `decision`. Raises BootConfigError when it cannot be rendered safely.

    `media` is the attempt's media (needed for INSTALLER). `platform` ('pcbios' or 'efi') is what iPXE says
    it runs on; without it the host's registered firmware decides. `pxelinux_http` gives lpxelinux.0
    http:// URLs for the big files (plain pxelinux.0 understands only TFTP paths).
    """
    if loader not in LOADERS:
        raise BootConfigError(f"unknown loader {loader!r} (one of {', '.join(LOADERS)})")
    if not decision.installer:
        efi = loader == IPXE and (platform or ("efi" if decision.host and decision.host.firmware == "uefi"
                                               else "pcbios")) == "efi"
        return local_boot(loader, mac=decision.mac, action=decision.action, reason=decision.reason,
                          efi_grub_url=site_grub_url(config) if efi else None)
    attempt, host = decision.attempt, decision.host
    if attempt is None or host is None or media is None or media.name != attempt.media:
        raise BootConfigError("an installer decision needs its host, attempt and the attempt's media")
    problem = urls.boot_base_problem(config.base_url)
    if problem:
        raise BootConfigError(problem)
    generation = media_generation(media)
    mac = _check(host.mac, MAC, "MAC")
    # The installer brings up the NIC the firmware booted from (boot_mac when the host has one): that one reached
    # us over DHCP (docs/installer.md "Boot parameters").
    network_device = _check(host.netboot_mac, MAC, "boot MAC")
    _check(attempt.token, ATTEMPT_TOKEN, "attempt token")
    answerfile = _check(urls.answerfile(config.base_url, attempt.token), _URL, "answer-file URL")
    ours = [f"answerfile={answerfile}", f"network_device={network_device}"]
    if host.multipath:  # boot from SAN (docs/installer.md "Boot parameters")
        ours.append(MULTIPATH_ARG)
    context: dict[str, Any] = {
        "mac": mac, "attempt_id": int(attempt.id), "media": _check(media.name, MEDIA_NAME, "media name"),
        "generation": generation, "xen_args": " ".join(XEN_ARGS),
        "dom0_args": " ".join((*DOM0_ARGS, *ours, "install")),
    }
    if loader == IPXE:
        platform = platform or ("efi" if host.firmware == "uefi" else "pcbios")
        if platform == "efi":
            return _render("ipxe-chain-grub.ipxe", {**context, "grub_url": _grub_for_ipxe(config, media, generation)})
        if platform != "pcbios":
            raise BootConfigError(f"unknown iPXE platform {platform!r} (pcbios or efi)")
    if generation == "xs9" and loader != GRUB:
        raise BootConfigError(f"media {media.name} (XenServer {media.product_version}) boots on UEFI only: "
                              "its installer refuses legacy BIOS")
    files = BOOT_FILES[generation]
    if loader == PXELINUX and not pxelinux_http:
        context.update({key: _check(tftp_media_path(media.name, rel), _TFTP_PATH, f"TFTP path of {key}")
                        for key, rel in files.items()})
        return _render("pxelinux-installer.cfg", context)
    file_urls = {key: _check(urls.media_file(config.base_url, media.name, rel), _URL, f"URL of {key}")
                 for key, rel in files.items()}
    if loader == GRUB:
        context.update({key: grub_http_path(url) for key, url in file_urls.items()})
        return _render(f"grub-installer-{generation}.cfg", context)
    if loader == PXELINUX:
        return _render("pxelinux-installer.cfg", {**context, **file_urls})
    return _render("ipxe-installer-bios.ipxe", {**context, "tftp_prefix": _tftp_prefix(config)})


def _tftp_prefix(config: Config) -> str:
    """tftp://<public_url's host>[:tftp_port]/: where iPXE on BIOS chains to pxelinux.0 and pxelinux's path
    prefix (DHCP option 210) for its per-MAC config and the media (docs/firmware.md "iPXE on BIOS")."""
    host = urllib.parse.urlsplit(config.base_url).hostname or config.bind_address
    if ":" in host:
        host = f"[{host}]"
    port = "" if config.tftp_port == 69 else f":{config.tftp_port}"
    return _check(f"tftp://{host}{port}/", _TFTP_URL, "TFTP prefix")


def _grub_for_ipxe(config: Config, media: Media, generation: str) -> str:
    """The GRUB iPXE chains to on UEFI: the site's upstream GRUB for 8.x (tftp_root, prefix /grub), the
    media's own EFI/xenserver/grubx64.efi for 9 (xen_hypervisor/xen_module exist only in XenServer's GRUB;
    it reads EFI/xenserver/grub.cfg from the TFTP server, our $net_default_mac dispatcher)."""
    if generation == "xs9":
        if ISO_GRUB_EFI not in media.boot_files:
            raise BootConfigError(f"media {media.name} has no {ISO_GRUB_EFI}: XenServer 9 needs its own GRUB")
        url = urls.media_file(config.base_url, media.name, ISO_GRUB_EFI)
    else:
        url = site_grub_url(config)
    return _check(url, _URL, "GRUB URL")


def site_grub_url(config: Config) -> str:
    """The site's upstream GRUB in tftp_root over HTTP (prefix /grub: it asks the TFTP server for per-MAC names)."""
    return _check(f"{config.base_url.rstrip('/')}{urls.TFTP_FILES_PREFIX}/{GRUB_EFI}", _URL, "GRUB URL")


def _render(name: str, context: Mapping[str, Any]) -> bytes:
    return render([TEMPLATE_DIR], name, context).encode()
