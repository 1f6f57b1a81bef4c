"""The DHCP boot plan: ONE description of what a registered host must be told, written out by every format.

Boot file by client architecture (DHCP option 93, RFC 4578): 0 (BIOS) gets pxelinux.0 (lpxelinux.0 when
`pxelinux_http` is on: it fetches the big files over HTTP), 7 and 9 (x86-64 UEFI) get our GRUB image
grubx64.efi; with iPXE chaining chosen (config `dhcp_ipxe` or `dhcp-config --ipxe`), a client whose user class
(option 77) is "iPXE" gets our per-MAC iPXE script URL instead, which iPXE expands itself (docs/dhcp.md,
docs/firmware.md "Names firmware asks for", docs/lab.md). Only registered hosts are named; hosts whose boot method
is host-plugin never boot from the network and are left out.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass, field

from provisioner import registry
from provisioner.boot.filenames import ipxe_entry_url
from provisioner.boot.loaders import GRUB_IMAGE
from provisioner.config import Config
from provisioner.store import Store

FORMATS = ("kea", "isc", "dnsmasq", "windows")
ARCH_BIOS = 0  # RFC 4578 / IANA "Processor Architecture Types": x86 BIOS
ARCH_UEFI_X64 = (7, 9)  # 7: EFI BC (x86-64 in practice, RFC 4578 errata 4624), 9: EFI x86-64
IPXE_USER_CLASS = "iPXE"  # what iPXE puts in option 77 (ipxe.org/howto/chainloading)
NO_NETBOOT_METHOD = "host-plugin"  # boots the installer from its own disk (docs/firmware.md)


class DhcpPlanError(ValueError):
    """The plan cannot be made (no hosts, no IPv4 next-server); the message names the fix."""


@dataclass(frozen=True)
class DhcpHost:
    """A registered host as DHCP sees it: the MAC its firmware sends (boot_mac, else mac)."""

    name: str
    mac: str
    pool: str
    firmware: str

    def as_dict(self) -> dict:
        return {"name": self.name, "mac": self.mac, "pool": self.pool, "firmware": self.firmware}


@dataclass(frozen=True)
class DhcpPlan:
    """Everything a DHCP server needs to send our hosts to us."""

    next_server: str  # IPv4 address of our TFTP server (siaddr / option 66)
    bios_loader: str
    uefi_loader: str
    ipxe_url: str | None  # None: no iPXE chaining
    hosts: tuple[DhcpHost, ...]
    skipped: tuple[DhcpHost, ...] = ()  # registered, but never network-booted (host-plugin)
    warnings: tuple[str, ...] = field(default=())

    @property
    def macs(self) -> list[str]:
        return [h.mac for h in self.hosts]

    def as_dict(self) -> dict:
        return {"next_server": self.next_server, "bios_loader": self.bios_loader, "uefi_loader": self.uefi_loader,
                "uefi_client_arch": list(ARCH_UEFI_X64), "ipxe_url": self.ipxe_url,
                "hosts": [h.as_dict() for h in self.hosts], "skipped": [h.as_dict() for h in self.skipped],
                "warnings": list(self.warnings)}


def next_server_of(config: Config, override: str | None = None) -> str:
    """The IPv4 address hosts reach our TFTP server at: `override`, else public_url's host, else bind_address."""
    candidates = [("--next-server", override)] if override else [
        ("public_url", urllib.parse.urlsplit(config.public_url).hostname if config.public_url else None),
        ("bind_address", None if config.bind_address in ("0.0.0.0", "::") else config.bind_address)]
    for source, value in candidates:
        if not value:
            continue
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise DhcpPlanError(f"{source} {value!r} is not an IPv4 address, and DHCP's next-server must be one: "
                                "set public_url to http://<our IPv4 address> or pass --next-server IP") from None
    raise DhcpPlanError("no address to tell hosts: public_url is unset and bind_address is a wildcard; set "
                        "public_url (e.g. http://10.0.0.5) in provisioner.toml or pass --next-server IP")


def build_plan(store: Store, config: Config, *, next_server: str | None = None, ipxe: bool | None = None,
               require_hosts: bool = True) -> DhcpPlan:
    """The plan for every registered host (DhcpPlanError when there is none and `require_hosts`)."""
    server = next_server_of(config, next_server)
    use_ipxe = config.dhcp_ipxe if ipxe is None else ipxe
    hosts, skipped, seen = [], [], set()
    for host in store.list_hosts():
        entry = DhcpHost(name=host.name, mac=host.netboot_mac, pool=host.pool, firmware=host.firmware)
        if registry.boot_method_of(store, host) == NO_NETBOOT_METHOD:
            skipped.append(entry)
        elif entry.mac not in seen:
            seen.add(entry.mac)
            hosts.append(entry)
    if require_hosts and not hosts:
        raise DhcpPlanError("no registered host network-boots (none, or all host-plugin): add hosts first "
                            "(provisioner hosts add / hosts import)")
    warnings = []
    if config.tftp_port != 69:
        warnings.append(f"tftp_port is {config.tftp_port}, but DHCP cannot name a TFTP port: PXE firmware asks "
                        "port 69 of next-server, so serve TFTP on 69 there (docs/dhcp.md)")
    if urllib.parse.urlsplit(config.base_url).hostname not in (server, None) and use_ipxe:
        warnings.append(f"the iPXE URL uses public_url's host {urllib.parse.urlsplit(config.base_url).hostname}, "
                        f"next-server is {server}")
    return DhcpPlan(next_server=server, bios_loader="lpxelinux.0" if config.pxelinux_http else "pxelinux.0",
                    uefi_loader=GRUB_IMAGE, ipxe_url=ipxe_entry_url(config.base_url) if use_ipxe else None,
                    hosts=tuple(hosts), skipped=tuple(skipped), warnings=tuple(warnings))


def safe_name(text: str) -> str:
    """A host name reduced to letters, digits and '-' (for ISC host names, Windows policy names)."""
    cleaned = "".join(c if c.isalnum() else "-" for c in text).strip("-")
    return cleaned or "host"
