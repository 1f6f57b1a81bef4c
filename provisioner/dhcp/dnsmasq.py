"""The plan in dnsmasq's config syntax: the snippet for a site's dnsmasq, and the ProxyDHCP config (docs/dhcp.md).

dnsmasq(8): `dhcp-host=MAC,set:TAG` tags our hosts, `dhcp-match=set:TAG,option:client-arch,N` tags UEFI clients,
`dhcp-userclass=set:TAG,iPXE` tags iPXE, `dhcp-boot=tag:..,FILE,,SERVER` sets the file and siaddr. In proxy mode
(`dhcp-range=ADDR,proxy`) dnsmasq leaves addresses to the other server and answers only boot information:
`pxe-service` entries for PXE ROMs (a name with a '.' gets no ".0" added) and `dhcp-boot` for iPXE, and
`dhcp-ignore=tag:!known` keeps it silent to every MAC that no dhcp-host line names.
"""

from __future__ import annotations

from pathlib import Path

from provisioner.dhcp.plan import ARCH_UEFI_X64, IPXE_USER_CLASS, DhcpPlan

HOST_TAG = "provisioner"
UEFI_TAG = "provisioner-efi"
IPXE_TAG = "provisioner-ipxe"


def _value(text: str) -> str:
    if "," in text or "\n" in text:
        raise ValueError(f"cannot put {text!r} in a dnsmasq option value")
    return text


def host_lines(plan: DhcpPlan) -> list[str]:
    """One `MAC,set:provisioner` line per host: the body of a dhcp-hostsfile (dnsmasq re-reads it on SIGHUP)."""
    return [f"{host.mac},set:{HOST_TAG}" for host in plan.hosts]


def _tags(plan: DhcpPlan) -> list[str]:
    lines = [f"dhcp-match=set:{UEFI_TAG},option:client-arch,{arch}" for arch in ARCH_UEFI_X64]
    if plan.ipxe_url:
        lines.append(f"dhcp-userclass=set:{IPXE_TAG},{IPXE_USER_CLASS}")
    return lines


def render(plan: DhcpPlan) -> str:
    """Lines for the site's dnsmasq.conf (or a file in its conf-dir)."""
    not_ipxe = f",tag:!{IPXE_TAG}" if plan.ipxe_url else ""
    lines = ["# provisioner: network boot of the registered hosts (provisioner dhcp-config --format dnsmasq)",
             *(f"dhcp-host={line}" for line in host_lines(plan)), *_tags(plan)]
    if plan.ipxe_url:
        lines.append(f"dhcp-boot=tag:{HOST_TAG},tag:{IPXE_TAG},{_value(plan.ipxe_url)},,{plan.next_server}")
    lines += [f"dhcp-boot=tag:{HOST_TAG},tag:{UEFI_TAG}{not_ipxe},{_value(plan.uefi_loader)},,{plan.next_server}",
              f"dhcp-boot=tag:{HOST_TAG},tag:!{UEFI_TAG}{not_ipxe},{_value(plan.bios_loader)},,{plan.next_server}"]
    return "\n".join(lines) + "\n"


def render_proxy(plan: DhcpPlan, *, subnet_address: str, hosts_file: Path, interface: str | None = None,
                 leases: Path | None = None, user: str | None = None) -> str:
    """The whole config of our ProxyDHCP dnsmasq: no DNS, no TFTP (serve does TFTP), proxy answers to our MACs only,
    which come from `hosts_file` so a registry change needs only a rewrite and SIGHUP."""
    lines = ["# provisioner serve --proxy-dhcp: generated, rewritten at every start",
             "port=0", "no-resolv", "no-hosts", "log-dhcp", "bind-dynamic"]
    if user:  # dnsmasq started as root would become `nobody`, which cannot re-read a hosts file in a 0700 data dir
        lines.append(f"user={_value(user)}")
    if interface:
        lines.append(f"interface={_value(interface)}")
    if leases is not None:
        lines.append(f"dhcp-leasefile={leases}")
    lines += [f"dhcp-range={subnet_address},proxy", f"dhcp-hostsfile={hosts_file}", "dhcp-ignore=tag:!known",
              *(f"dhcp-match=set:{UEFI_TAG},option:client-arch,{arch}" for arch in ARCH_UEFI_X64),
              f"dhcp-userclass=set:{IPXE_TAG},{IPXE_USER_CLASS}"]
    # iPXE takes the boot file of a ProxyDHCP answer as it is (LTSP's proxy setup does the same): the script URL
    # when iPXE chaining is chosen, else the loader for its architecture.
    if plan.ipxe_url:
        lines.append(f"dhcp-boot=tag:{IPXE_TAG},{_value(plan.ipxe_url)},,{plan.next_server}")
    else:
        lines += [f"dhcp-boot=tag:{IPXE_TAG},tag:{UEFI_TAG},{_value(plan.uefi_loader)},,{plan.next_server}",
                  f"dhcp-boot=tag:{IPXE_TAG},tag:!{UEFI_TAG},{_value(plan.bios_loader)},,{plan.next_server}"]
    # PXE ROMs get a PXE menu of one entry per architecture and no pxe-prompt: they boot it at once
    # (dnsmasq(8) --pxe-prompt); a name with a '.' gets no ".0" added (--pxe-service).
    lines += [f'pxe-service=tag:!{IPXE_TAG},x86PC,"provisioner BIOS",{_value(plan.bios_loader)},{plan.next_server}',
              f'pxe-service=tag:!{IPXE_TAG},X86-64_EFI,"provisioner UEFI",{_value(plan.uefi_loader)},'
              f'{plan.next_server}',
              f'pxe-service=tag:!{IPXE_TAG},BC_EFI,"provisioner UEFI",{_value(plan.uefi_loader)},{plan.next_server}']
    return "\n".join(lines) + "\n"
