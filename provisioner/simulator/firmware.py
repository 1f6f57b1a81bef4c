"""What simulated firmware asks for and reads: config names (docs/firmware.md), boot configs (pxelinux, GRUB, iPXE)
and a media tree's .treeinfo. Pure; none of it comes from provisioner/boot/ (docs/simulator.md)."""

from __future__ import annotations

import configparser
import re
from typing import Callable

from .errors import BootFailure

_HEX = frozenset("0123456789abcdef")


def canonical_mac(mac: str) -> str:
    """A NIC's MAC as aa:bb:cc:dd:ee:ff (colons or hyphens accepted, any case); ValueError otherwise."""
    octets = str(mac).strip().lower().replace("-", ":").split(":")
    if len(octets) != 6 or any(len(o) != 2 or not set(o) <= _HEX for o in octets):
        raise ValueError(f"not a MAC address: {mac!r}")
    return ":".join(octets)


def config_names(loader: str, mac: str) -> list[str]:
    """The TFTP names a loader asks for, in order, for a NIC with this MAC (docs/firmware.md section "Names firmware
    asks for"): PXELINUX pxelinux.cfg/01-<mac with hyphens> (01: the ARP type of Ethernet), then default; GRUB
    under its prefix grub/: grub.cfg-01-<mac with hyphens>, then grub.cfg. The simulated NIC has no UUID or IP
    worth asking for, so those names are skipped."""
    hyphens = canonical_mac(mac).replace(":", "-")
    if loader == "pxelinux":
        return [f"pxelinux.cfg/01-{hyphens}", "pxelinux.cfg/default"]
    return [f"grub/grub.cfg-01-{hyphens}", "grub/grub.cfg"]


def read_treeinfo(text: str) -> dict:
    """The version dict a .treeinfo announces: product/platform name and version, build number."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    system = parser["system-v1"] if parser.has_section("system-v1") else {}
    return {"product_name": system.get("product_name"), "product_version": system.get("product_version"),
            "platform_name": system.get("platform_name"), "platform_version": system.get("platform_version"),
            "build_number": parser.get("build", "number", fallback=None)}


def _grub_file(path: str) -> str:
    """(http,host:port)/x -> http://host:port/x; (tftp,...)/x or /x -> the TFTP name x."""
    found = re.fullmatch(r"\((\w+)(?:,([^)]*))?\)(/.*)", path)
    if found is None:
        return path.lstrip("/")
    scheme, netloc, rest = found.groups()
    if scheme in ("http", "https") and netloc:
        return f"{scheme}://{netloc}{rest}"
    return rest.lstrip("/")


def parse_config(loader: str, text: str) -> dict:
    """What a boot config tells the firmware: {"action": "local"|"installer"|"chain", "files": [(what, name)],
    "args": [...], "url": chain target}. Raises BootFailure for a config the loader would not understand."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if loader == "pxelinux":
        return _parse_pxelinux(lines)
    if loader == "grub":
        lines, chainloads = _grub_chainloads(lines)
        plan = _parse_loader_lines(lines, {"multiboot2", "xen_hypervisor", "linux", "multiboot"},
                                   {"module2", "xen_module", "initrd", "module"}, _grub_file)
        return {**plan, "chainload": chainloads} if plan["action"] == "local" else plan
    return _parse_loader_lines(_ipxe_settings(lines), {"kernel"}, {"module", "initrd"}, lambda p: p)


_GRUB_SEARCH = re.compile(r"if search(?: --no-floppy)? --file --set=(\w+) (/\S+); then")


def _grub_chainloads(lines: list[str]) -> tuple[list[str], list[str]]:
    """GRUB's `if search --file --set=root PATH; then chainloader PATH; boot; fi` blocks, in order: the EFI loaders
    it would start from a local disk that holds PATH (the machine decides; docs/firmware.md "Local boot on UEFI").
    Upstream GRUB's chainloader hands the started image the device of $root whatever the path names, so a search
    that sets another variable leaves the image believing it came from the network: refused here. Returns the
    other lines and the paths. Raises BootFailure for a block this model does not know."""
    rest: list[str] = []
    paths: list[str] = []
    it = iter(lines)
    for line in it:
        found = _GRUB_SEARCH.fullmatch(line)
        if found is None:
            rest.append(line)
            continue
        var, path = found.groups()
        body = []
        for inner in it:
            if inner == "fi":
                break
            body.append(inner)
        else:
            raise BootFailure(f"grub: 'if search ... {path}' has no fi")
        if var != "root":
            raise BootFailure(f"grub: search --set={var} {path}: chainloader would start the loader with $root's "
                              "device (the network), not the disk it was found on")
        if body not in ([f"chainloader {path}", "boot"], [f"chainloader ($root){path}", "boot"]):
            raise BootFailure(f"grub: the block after 'search --file {path}' is not 'chainloader {path}; boot': "
                              f"{body}")
        paths.append(path)
    return rest, paths


def _ipxe_settings(lines: list[str]) -> list[str]:
    """iPXE's `set NAME VALUE` lines applied: ${NAME} expanded in the lines after them (iPXE expands settings in
    every command line; `210:string` is DHCP option 210, pxelinux's path prefix). Unknown settings are empty."""
    values: dict[str, str] = {}
    out = []
    for line in lines:
        line = re.sub(r"\$\{([^}]*)\}", lambda m: values.get(m.group(1), ""), line)
        words = line.split()
        if words[0] == "set" and len(words) >= 2:
            values[words[1]] = " ".join(words[2:])
            continue
        out.append(line)
    return out


def _chain(url: str) -> dict:
    """iPXE `chain URL`: to pxelinux.0 over TFTP (BIOS, docs/firmware.md "iPXE on BIOS"): pxelinux then asks the
    TFTP server for its per-MAC config; anything else is GRUB (UEFI), which does the same with its names."""
    found = re.fullmatch(r"tftp://[^/]+/(.+)", url)
    if found and found.group(1).rsplit("/", 1)[-1] == "pxelinux.0":
        return {"action": "chain", "url": found.group(1), "loader": "pxelinux"}
    return {"action": "chain", "url": url, "loader": "grub"}


def _parse_pxelinux(lines: list[str]) -> dict:
    default, labels, current = None, {}, None
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.lower()
        if word == "default":
            default = rest.strip()
        elif word == "label":
            current = labels.setdefault(rest.strip(), [])
        elif current is not None:
            current.append((word, rest.strip()))
    entry = labels.get(default or "")
    if entry is None:
        raise BootFailure(f"pxelinux: default label {default!r} not found")
    words = dict(entry)
    if "localboot" in words:
        return {"action": "local"}
    if words.get("kernel") != "mboot.c32" or "append" not in words:
        raise BootFailure(f"pxelinux: label {default!r} is neither localboot nor an mboot.c32 entry")
    parts = [p.split() for p in words["append"].split(" --- ")]
    if len(parts) != 3 or not all(parts):
        raise BootFailure("pxelinux: mboot.c32 append needs 'xen --- kernel --- initrd'")
    files = [("hypervisor", parts[0][0]), ("kernel", parts[1][0]), ("install.img", parts[2][0])]
    return {"action": "installer", "files": files, "args": parts[1][1:]}


def _parse_loader_lines(lines: list[str], first: set, modules: set, path: Callable[[str], str]) -> dict:
    """GRUB and iPXE: commands run in order; `exit` before anything is loaded hands back to the firmware."""
    files, args = [], []
    kinds = iter(("kernel", "install.img"))
    for line in lines:
        words = line.split(" || ")[0].split()  # iPXE: "kernel URL args || goto local"
        verb = words[0]
        if verb == "exit" and not files:
            return {"action": "local"}
        if verb == "chain" and len(words) > 1:
            return _chain(words[1])
        if verb in first and len(words) > 1:
            files = [("hypervisor", path(words[1]))]
            args += words[2:]
        elif verb in modules and files and len(words) > 1:
            files.append((next(kinds, "module"), path(words[1])))
            args += words[2:]
        elif verb == "boot" and files:
            return {"action": "installer", "files": files, "args": args}
    raise BootFailure("config neither boots an installer nor the local disk")
