"""The plan as Kea DHCPv4 client classes (merge into the site's "Dhcp4"; docs/dhcp.md "Kea").

One class matches our hosts by MAC (`pkt4.mac`); the boot classes test it with member() and set next-server and
boot-file-name, which Kea copies into siaddr and the file field of the answer (Kea ARM "Setting Fixed Fields in
Classification"). The boot classes are mutually exclusive, so their order cannot matter.
"""

from __future__ import annotations

import json

from provisioner.dhcp.plan import ARCH_UEFI_X64, IPXE_USER_CLASS, DhcpPlan

HOSTS_CLASS = "provisioner-hosts"


def _mac_test(macs: list[str]) -> str:
    return " or ".join(f"pkt4.mac == 0x{mac.replace(':', '')}" for mac in macs)


def classes(plan: DhcpPlan) -> list[dict]:
    """The client-classes entries (a list to append to the site's Dhcp4 "client-classes")."""
    ours = f"member('{HOSTS_CLASS}')"
    is_ipxe = f"substring(option[77].hex,0,4) == '{IPXE_USER_CLASS}'"
    is_uefi = " or ".join(f"option[93].hex == 0x{arch:04x}" for arch in ARCH_UEFI_X64)
    not_ipxe = f" and not ({is_ipxe})" if plan.ipxe_url else ""
    found = [{"name": HOSTS_CLASS, "test": _mac_test(plan.macs)}]
    if plan.ipxe_url:
        found.append({"name": "provisioner-ipxe", "test": f"{ours} and {is_ipxe}",
                      "next-server": plan.next_server, "boot-file-name": plan.ipxe_url})
    found.append({"name": "provisioner-uefi", "test": f"{ours}{not_ipxe} and ({is_uefi})",
                  "next-server": plan.next_server, "boot-file-name": plan.uefi_loader})
    found.append({"name": "provisioner-bios", "test": f"{ours}{not_ipxe} and not ({is_uefi})",
                  "next-server": plan.next_server, "boot-file-name": plan.bios_loader})
    return found


def render(plan: DhcpPlan) -> str:
    """A JSON document {"Dhcp4": {"client-classes": [...]}} to merge into the site's kea-dhcp4.conf."""
    return json.dumps({"Dhcp4": {"client-classes": classes(plan)}}, indent=2) + "\n"
