"""Parse and format every per-host file name that network-boot firmware asks for. Pure; table-tested.

- pxelinux, in order: pxelinux.cfg/<uuid>, pxelinux.cfg/01-aa-bb-cc-dd-ee-ff, hex-IP prefixes
  (C000025B, C000025, ... C), pxelinux.cfg/default.
- GRUB netboot, under its prefix: grub.cfg-<uuid>, grub.cfg-01-aa-bb-cc-dd-ee-ff (older GRUB and its manual:
  grub.cfg-aa-bb-..; RHEL 7.4 adds a trailing '-'), grub.cfg-<hex IP prefixes>, then grub.cfg. Our own
  dispatcher asks for grub.cfg-aa:bb:cc:dd:ee:ff ($net_default_mac, colons). The XenServer ISO's
  grubx64.efi reads only EFI/xenserver/grub.cfg.
- iPXE (our URLs): /boot/ipxe/aa-bb-cc-dd-ee-ff (${net0/mac:hexhyp}) or /boot/ipxe?mac=aa:bb:..
A malformed MAC gives a BAD_MAC result with the problem spelled out, never an exception. Firmware may
send a leading '/' or '\\', and some (Windows-minded) TFTP clients use '\\' as the separator.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Mapping, NamedTuple

from provisioner.boot import urls
from provisioner.model import ValidationError, normalize_mac

PXE_MAC = "pxelinux-mac"
PXE_UUID = "pxelinux-uuid"
PXE_IP = "pxelinux-ip"
PXE_DEFAULT = "pxelinux-default"
GRUB_MAC = "grub-mac"
GRUB_UUID = "grub-uuid"
GRUB_IP = "grub-ip"
GRUB_DEFAULT = "grub-default"  # plain grub.cfg under a known prefix (EFI/xenserver/grub.cfg included)
IPXE_MAC = "ipxe-mac"
BAD_MAC = "bad-mac"

PXELINUX_DIR = "pxelinux.cfg"
GRUB_CFG = "grub.cfg"
# Directories GRUB images look in ($prefix): grub-mknetdir layouts, Debian/RHEL netboot images, and
# EFI/xenserver, the prefix baked into the XenServer ISO's grubx64.efi. Matched case-insensitively.
GRUB_PREFIXES = ("", "grub", "grub2", "boot/grub", "boot/grub2", "efi/xenserver", "efi/boot")
IPXE_PATH = f"{urls.BOOT_PREFIX}/ipxe"
TFTP_MEDIA_DIR = "xenserver"  # TFTP-relative media files: xenserver/<media>/<path inside the media tree>
IPXE_PLATFORMS = ("pcbios", "efi")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_HEX_IP = re.compile(r"[0-9a-f]{1,8}", re.I)
_HWTYPE = re.compile(r"([0-9a-f]{2})-(.*)", re.I | re.S)
_DASHED_MAC = re.compile(r"[0-9a-f]{2}(-[0-9a-f]{2}){5}", re.I)
# Anything carrying a MAC address (12 hex digits, bare or in pairs separated by '-', ':' or '_'), anywhere in a
# name: what the stray per-MAC file scan of tftp_root looks for (loaders.scan_per_mac).
MAC_IN_NAME = re.compile(r"(?i)(?<![0-9a-f])[0-9a-f]{2}([-:_]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}(?![0-9a-f])")
_MAX_NAME = 255


class BootPath(NamedTuple):
    """A parsed name: what kind of request, the canonical MAC if it carries one, and any other details."""

    kind: str
    mac: str | None = None
    info: Mapping[str, str] = {}

    @property
    def family(self) -> str:
        """'pxelinux', 'grub' or 'ipxe' (for BAD_MAC: the family whose name was malformed)."""
        return self.info.get("family", "") if self.kind == BAD_MAC else self.kind.split("-")[0]

    @property
    def problem(self) -> str | None:
        return self.info.get("problem") if self.kind == BAD_MAC else None


def _bad(family: str, name: str, problem: str) -> BootPath:
    return BootPath(BAD_MAC, None, {"family": family, "name": name[:80], "problem": problem})


def _clean(name: str) -> str | None:
    if not isinstance(name, str) or len(name) > _MAX_NAME or "\x00" in name:
        return None
    return name.replace("\\", "/").lstrip("/")


def _mac(family: str, name: str, text: str) -> BootPath | str:
    try:
        return normalize_mac(text)
    except ValidationError as exc:
        return _bad(family, name, f"bad MAC: {exc}")


def _hex_ip_info(hex_ip: str) -> dict[str, str]:
    info = {"hex": hex_ip.upper()}
    if len(hex_ip) == 8:
        info["ip"] = str(ipaddress.IPv4Address(int(hex_ip, 16)))
    return info


def parse_tftp(name: str) -> BootPath | None:
    """Parse a TFTP file name; None when it is not one of the per-host names (serve it as a static file)."""
    text = _clean(name)
    if text is None:
        return None
    head, _, base = text.rpartition("/")
    if head.lower() == PXELINUX_DIR:
        return _parse_pxelinux(base, name)
    if head.lower() in GRUB_PREFIXES and (base == GRUB_CFG or base.startswith(GRUB_CFG + "-")):
        return _parse_grub(base[len(GRUB_CFG) + 1:], head, name, plain=base == GRUB_CFG)
    return None


def mac_of_tftp_name(name: object) -> str | None:
    """The canonical MAC a per-MAC TFTP name carries (parse_tftp), else None; never raises: the TFTP server's
    log lines name the host with it, whatever a client sent."""
    try:
        found = parse_tftp(str(name)) if name else None
    except Exception:  # a log line must never fail on a hostile name
        found = None
    return found.mac if found is not None else None


def _parse_pxelinux(rest: str, name: str) -> BootPath:
    if rest == "default":
        return BootPath(PXE_DEFAULT)
    if _UUID.fullmatch(rest):
        return BootPath(PXE_UUID, None, {"uuid": rest.lower()})
    if _HEX_IP.fullmatch(rest):
        return BootPath(PXE_IP, None, _hex_ip_info(rest))
    if _DASHED_MAC.fullmatch(rest) and not rest.startswith("01-"):
        return _bad("pxelinux", name, "bad MAC: pxelinux names carry the ARP hardware type first: 01-<mac>")
    match = _HWTYPE.fullmatch(rest)
    if match is None:
        return _bad("pxelinux", name, "not a pxelinux.cfg name (01-<mac>, a UUID, a hex IP or 'default')")
    if match.group(1) != "01":
        return _bad("pxelinux", name, f"bad MAC: hardware type {match.group(1)} is not Ethernet (01)")
    if not _DASHED_MAC.fullmatch(match.group(2)):
        return _bad("pxelinux", name, "bad MAC: expected 01-aa-bb-cc-dd-ee-ff")
    mac = _mac("pxelinux", name, match.group(2))
    return mac if isinstance(mac, BootPath) else BootPath(PXE_MAC, mac)


def _parse_grub(suffix: str, prefix: str, name: str, *, plain: bool) -> BootPath:
    info = {"prefix": prefix}
    if plain:
        return BootPath(GRUB_DEFAULT, None, info)
    if suffix.endswith("-") and not suffix.endswith("--"):
        # RHEL 7.4 UEFI GRUB asks for grub.cfg-01-aa-bb-cc-dd-ee-ff- (redhat-cop/infra-ansible#59).
        suffix = suffix[:-1]
        info["quirk"] = "trailing-hyphen"
    if _UUID.fullmatch(suffix):
        return BootPath(GRUB_UUID, None, {**info, "uuid": suffix.lower()})
    if _HEX_IP.fullmatch(suffix):
        return BootPath(GRUB_IP, None, {**info, **_hex_ip_info(suffix)})
    try:
        address = ipaddress.ip_address(suffix if "." in suffix else suffix.replace("-", ":"))
    except ValueError:
        address = None
    if address is not None:  # grub.cfg-10.0.0.5, or IPv6 with ':' written as '-'
        return BootPath(GRUB_IP, None, {**info, "ip": str(address)})
    match = _HWTYPE.fullmatch(suffix)
    candidate = match.group(2) if match and match.group(1) == "01" and len(suffix) > 17 else suffix
    mac = _mac("grub", name, candidate)
    return mac if isinstance(mac, BootPath) else BootPath(GRUB_MAC, mac, info)


def parse_ipxe(target: str) -> BootPath | None:
    """Parse an iPXE request target (path plus optional ?query); None when it is not our iPXE route."""
    text = _clean(target)
    if text is None:
        return None
    parts = urllib.parse.urlsplit("/" + text)
    path = parts.path.rstrip("/")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    base = IPXE_PATH
    if path == base:
        values = query.get("mac") or [""]
        raw = values[0]
        if not raw:
            return _bad("ipxe", target, "bad MAC: missing (use /boot/ipxe/${net0/mac:hexhyp} or ?mac=)")
    elif path.startswith(base + "/"):
        raw = urllib.parse.unquote(path[len(base) + 1:])
    else:
        return None
    mac = _mac("ipxe", target, raw)
    if isinstance(mac, BootPath):
        return mac
    info: dict[str, str] = {}
    platform = (query.get("platform") or [""])[0]
    if platform in IPXE_PLATFORMS:
        info["platform"] = platform
    return BootPath(IPXE_MAC, mac, info)


# --- media files over TFTP: the name a plain pxelinux.0 config gives a media file, and its inverse ---


def tftp_media_path(media_name: str, relpath: str) -> str:
    """Where the TFTP server offers a media file: xenserver/<media>/<relpath> (relative to tftp_root)."""
    return f"{TFTP_MEDIA_DIR}/{media_name}/{relpath.lstrip('/')}"


def parse_tftp_media_path(name: str) -> tuple[str, str] | None:
    """The inverse of tftp_media_path: (media name, path inside its tree) of xenserver/<media>/<relpath>, or None.

    The path is not checked here: media.resolve_media_file confines it to the media tree."""
    name = name.lstrip("/\\")
    if not name.startswith(TFTP_MEDIA_DIR + "/"):
        return None
    media_name, _, relpath = name[len(TFTP_MEDIA_DIR) + 1:].partition("/")
    return (media_name, relpath) if media_name and relpath else None


# --- format: the names and URLs we hand out or expect, built from a canonical MAC ---


def _hyphens(mac: str) -> str:
    return normalize_mac(mac).replace(":", "-")


def format_pxelinux(mac: str) -> str:
    """pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"""
    return f"{PXELINUX_DIR}/01-{_hyphens(mac)}"


def format_pxelinux_ip(ip: str) -> str:
    """The first (longest) hex-IP name pxelinux tries for an IPv4 address: pxelinux.cfg/C000025B."""
    return f"{PXELINUX_DIR}/{int(ipaddress.IPv4Address(ip)):08X}"


def format_grub(mac: str, prefix: str = "grub", style: str = "01") -> str:
    """GRUB per-MAC config name; style '01' (GRUB's own search), 'dashed' (older GRUB), 'colon' (dispatcher)."""
    canonical = normalize_mac(mac)
    suffix = {"01": "01-" + canonical.replace(":", "-"), "dashed": canonical.replace(":", "-"),
              "colon": canonical}.get(style)
    if suffix is None:
        raise ValueError(f"unknown GRUB name style {style!r} (use '01', 'dashed' or 'colon')")
    return f"{prefix.strip('/')}/{GRUB_CFG}-{suffix}".lstrip("/")


def format_ipxe(mac: str, *, query: bool = False) -> str:
    """Our iPXE script path for `mac`: /boot/ipxe/aa-bb-cc-dd-ee-ff, or /boot/ipxe?mac=aa:bb:cc:dd:ee:ff."""
    if query:
        return f"{IPXE_PATH}?mac={normalize_mac(mac)}"
    return f"{IPXE_PATH}/{_hyphens(mac)}"


def ipxe_entry_url(base_url: str) -> str:
    """What an embedded iPXE script chains to: iPXE fills in the MAC (hyphens) and its platform itself."""
    return f"{base_url.rstrip('/')}{IPXE_PATH}/${{net0/mac:hexhyp}}?platform=${{platform}}"
