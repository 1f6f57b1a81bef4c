"""The plan as a PowerShell script for the Windows Server DHCP role (DhcpServer module; docs/dhcp.md "Windows").

Windows DHCP chooses options by policy: one policy per (client architecture) whose conditions are our MACs AND the
vendor class naming that architecture ("PXEClient:Arch:00000" BIOS, "PXEClient:Arch:00007" UEFI x64, as the
firmware sends it in option 60), setting options 66 (boot server) and 67 (boot file). The vendor classes are
created first; every cmdlet is idempotent in the script (it looks before it adds), and $ScopeId names the scope.
"""

from __future__ import annotations

from provisioner.dhcp.plan import ARCH_BIOS, ARCH_UEFI_X64, IPXE_USER_CLASS, DhcpPlan


def _ps(text: str) -> str:
    """A single-quoted PowerShell string ('' escapes a quote; nothing inside is expanded)."""
    return "'" + text.replace("'", "''") + "'"


def _vendor_class(arch: int) -> tuple[str, str]:
    return f"provisioner PXEClient Arch {arch:05d}", f"PXEClient:Arch:{arch:05d}"


def render(plan: DhcpPlan) -> str:
    macs = ", ".join(_ps(mac.replace(":", "-")) for mac in plan.macs)
    lines = [
        "# provisioner: network boot of the registered hosts (provisioner dhcp-config --format windows)",
        "# Run on the DHCP server (DhcpServer module) as an administrator: .\\provisioner-dhcp.ps1 -ScopeId 10.0.0.0",
        "param([Parameter(Mandatory = $true)][string]$ScopeId)",
        "$ErrorActionPreference = 'Stop'",
        "Import-Module DhcpServer",
        f"$Macs = @({macs})",
        "$MacCondition = @('EQ') + $Macs",
    ]
    rules = [(ARCH_BIOS, plan.bios_loader), *((arch, plan.uefi_loader) for arch in ARCH_UEFI_X64)]
    for arch, _ in rules:
        name, data = _vendor_class(arch)
        lines += [f"if (-not (Get-DhcpServerv4Class -Type Vendor -Name {_ps(name)} -ErrorAction SilentlyContinue)) {{",
                  f"  Add-DhcpServerv4Class -Type Vendor -Name {_ps(name)} -Data {_ps(data)}",
                  "}"]
    if plan.ipxe_url:
        lines += [f"if (-not (Get-DhcpServerv4Class -Type User -Name 'provisioner iPXE' -ErrorAction SilentlyContinue)) {{",
                  f"  Add-DhcpServerv4Class -Type User -Name 'provisioner iPXE' -Data {_ps(IPXE_USER_CLASS)}",
                  "}"]
    order = 1
    policies = []
    if plan.ipxe_url:
        policies.append(("provisioner iPXE", "-UserClass EQ,'provisioner iPXE'", plan.ipxe_url))
    for arch, loader in rules:
        name, _ = _vendor_class(arch)
        policies.append((f"provisioner arch {arch}", f"-VendorClass EQ,{_ps(name + '*')}", loader))
    for policy, condition, boot_file in policies:
        lines += [
            f"if (Get-DhcpServerv4Policy -ScopeId $ScopeId -Name {_ps(policy)} -ErrorAction SilentlyContinue) {{",
            f"  Remove-DhcpServerv4Policy -ScopeId $ScopeId -Name {_ps(policy)}",
            "}",
            f"Add-DhcpServerv4Policy -ScopeId $ScopeId -Name {_ps(policy)} -ProcessingOrder {order} "
            f"-Condition AND -MacAddress $MacCondition {condition}",
            f"Set-DhcpServerv4OptionValue -ScopeId $ScopeId -PolicyName {_ps(policy)} -OptionId 66 "
            f"-Value {_ps(plan.next_server)}",
            f"Set-DhcpServerv4OptionValue -ScopeId $ScopeId -PolicyName {_ps(policy)} -OptionId 67 "
            f"-Value {_ps(boot_file)}",
        ]
        order += 1
    return "\n".join(lines) + "\n"
