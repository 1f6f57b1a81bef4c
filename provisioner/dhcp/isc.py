"""The plan as an ISC dhcpd.conf fragment (include it at the top level; docs/dhcp.md "ISC dhcpd").

Our hosts are host declarations (hardware ethernet, no fixed-address: the site's pools still give the address) in
one group that sets next-server and chooses the filename by option 93 (declared here under our own name, since
dhcpd 4.4 does not predefine it) and, with iPXE chaining, by option 77 (dhcpd's `user-class`).
"""

from __future__ import annotations

from provisioner.dhcp.plan import ARCH_UEFI_X64, IPXE_USER_CLASS, DhcpPlan, safe_name

ARCH_OPTION = "provisioner-client-arch"


def _quote(text: str) -> str:
    if '"' in text or "\\" in text or "\n" in text:
        raise ValueError(f"cannot put {text!r} in a dhcpd.conf string")
    return f'"{text}"'


def render(plan: DhcpPlan) -> str:
    uefi = " or ".join(f"option {ARCH_OPTION} = 00:{arch:02x}" for arch in ARCH_UEFI_X64)
    lines = [
        "# provisioner: network boot of the registered hosts (provisioner dhcp-config --format isc)",
        f"option {ARCH_OPTION} code 93 = unsigned integer 16;",
        "group {",
        f"  next-server {plan.next_server};",
    ]
    if plan.ipxe_url:
        lines += [f"  if exists user-class and option user-class = {_quote(IPXE_USER_CLASS)} {{",
                  f"    filename {_quote(plan.ipxe_url)};",
                  f"  }} elsif {uefi} {{"]
    else:
        lines += [f"  if {uefi} {{"]
    lines += [f"    filename {_quote(plan.uefi_loader)};",
              "  } else {",
              f"    filename {_quote(plan.bios_loader)};",
              "  }"]
    used: set[str] = set()
    for host in plan.hosts:
        name = f"provisioner-{safe_name(host.name)}"
        if name in used:  # dhcpd refuses two host declarations of one name
            name = f"{name}-{host.mac.replace(':', '')}"
        used.add(name)
        lines.append(f"  host {name} {{ hardware ethernet {host.mac}; }}")
    lines.append("}")
    return "\n".join(lines) + "\n"
