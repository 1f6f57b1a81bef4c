"""What a reinstall reads of a pool, computed from get_all_records dicts (no XenAPI here; provisioner.xapi calls).

local_disks: every VDI on the SRs whose PBDs are all on one host, with the VM, suspended VM or snapshot it
belongs to (VBD.VM, VM.suspend_VDI, VM.snapshot_of). join_facts: the master's side of pool.join's checks.
"""

from __future__ import annotations

from provisioner.xapi_model import JoinFacts, LocalDisk

NULL_REF = "OpaqueRef:NULL"


def local_srs(host_ref: str, pbds: dict, srs: dict) -> set[str]:
    """SR refs whose PBDs are all on `host_ref` (at least one): the host's local storage, not shared."""
    hosts_of: dict[str, set[str]] = {}
    for pbd in pbds.values():
        hosts_of.setdefault(pbd.get("SR", NULL_REF), set()).add(pbd.get("host", NULL_REF))
    return {sr for sr, hosts in hosts_of.items()
            if hosts == {host_ref} and sr in srs and not srs[sr].get("shared")}


def local_disks(host_ref: str, *, pbds: dict, srs: dict, vdis: dict, vbds: dict, vms: dict) -> list[LocalDisk]:
    """Every VDI on the host's local SRs, each with what it belongs to; sorted by VM then VDI name."""
    mine = local_srs(host_ref, pbds, srs)
    owners: dict[str, list[tuple[str, str]]] = {}  # VDI ref -> [(VM ref, role)]
    for vbd in vbds.values():
        vdi, vm = vbd.get("VDI", NULL_REF), vbd.get("VM", NULL_REF)
        if vdi in vdis and vm in vms:
            role = "snapshot disk" if vms[vm].get("is_a_snapshot") else "disk"
            owners.setdefault(vdi, []).append((vm, role))
    for ref, vm in vms.items():
        if vm.get("suspend_VDI", NULL_REF) in vdis:
            owners.setdefault(vm["suspend_VDI"], []).append((ref, "suspend image"))
    found = []
    for ref, vdi in vdis.items():
        if vdi.get("SR") not in mine:
            continue
        sr = srs[vdi["SR"]]
        base = dict(sr=sr.get("name_label", ""), sr_uuid=sr.get("uuid", ""), vdi=vdi.get("name_label", ""),
                    vdi_uuid=vdi.get("uuid", ""), size=int(vdi.get("virtual_size") or 0))
        if not owners.get(ref):
            found.append(LocalDisk(**base, role="unattached"))
        for vm_ref, role in owners.get(ref, []):
            vm = vms[vm_ref]
            parent = vms.get(vm.get("snapshot_of", NULL_REF), {})
            found.append(LocalDisk(**base, role=role, vm=vm.get("name_label", ""), vm_uuid=vm.get("uuid", ""),
                                   power_state=vm.get("power_state", ""),
                                   snapshot_of=parent.get("name_label", "") if vm.get("is_a_snapshot") else ""))
    return sorted(found, key=lambda d: (d.snapshot_of or d.vm, d.vm, d.vdi, d.vdi_uuid))


def join_facts(host_ref: str, host: dict, *, pifs: dict, updates: dict) -> JoinFacts:
    """The host's side of pool.join's checks, from its record, the PIF records and the Pool_update records."""
    sv = host.get("software_version", {})
    vlan = next((int(p.get("VLAN", -1)) for p in pifs.values() if p.get("host") == host_ref and p.get("management")),
                -1)
    names = sorted(updates[u].get("name_label", u) for u in host.get("updates", [])
                   if u in updates and updates[u].get("enforce_homogeneity", True))
    return JoinFacts(product_version=sv.get("product_version", ""), platform_version=sv.get("platform_version", ""),
                     build_number=sv.get("build_number", ""), xapi=sv.get("xapi", ""), git_id=sv.get("git_id", ""),
                     api_version=f'{host.get("API_version_major", "")}.{host.get("API_version_minor", "")}',
                     db_schema=sv.get("db_schema", ""), edition=host.get("edition", ""), updates=tuple(names),
                     management_vlan=vlan, network_backend=sv.get("network_backend", "bridge"))


class ReinstallCalls:
    """XenApiDriver's calls for the lab reinstall-and-join (coordinator/reinstall.py): over its `call` only."""

    def management_network(self, host_ref: str) -> dict:
        """The host's management PIF IP setup, for the fresh install's admin-interface: {"mode": "static"|"dhcp",
        "ip", "netmask", "gateway", "dns": [...]} (XAPI ip_configuration_mode Static / DHCP)."""
        for pif in self.call("PIF.get_all_records").values():
            if pif.get("host") == host_ref and pif.get("management"):
                static = str(pif.get("ip_configuration_mode", "")).lower() == "static"
                dns = [d.strip() for d in str(pif.get("DNS", "")).split(",") if d.strip()]
                return {"mode": "static" if static else "dhcp", "ip": pif.get("IP", ""),
                        "netmask": pif.get("netmask", ""), "gateway": pif.get("gateway", ""), "dns": dns}
        return {"mode": "dhcp", "dns": []}

    def destroy_host(self, host_ref: str) -> None:
        """host.destroy (xe host-forget): only for a dead member (HOST_IS_LIVE, HOST_HAS_RESIDENT_VMS otherwise)."""
        self.call("host.destroy", host_ref)

    def join_pool(self, master_address: str, username: str, password: str) -> None:
        """pool.join, called on a STANDALONE host's own session: it becomes a member of the master's pool."""
        self.call("pool.join", master_address, username, password)

    def local_disks(self, host_ref: str) -> list[LocalDisk]:
        """Every VDI on the host's local SRs and what it belongs to: read BEFORE host.destroy, which removes the
        host's PBDs but leaves these VDI records pointing at nothing (xapi_host.ml destroy; docs/real-world.md
        "host.destroy and local disks")."""
        return local_disks(
            host_ref, pbds=self.call("PBD.get_all_records"), srs=self.call("SR.get_all_records"),
            vdis=self.call("VDI.get_all_records"), vbds=self.call("VBD.get_all_records"),
            vms=self.call("VM.get_all_records"))

    def join_facts(self, host_ref: str) -> JoinFacts:
        """What pool.join compares for this host (xapi_pool.ml pre_join_checks): versions, edition, updates,
        management VLAN, network backend."""
        return join_facts(host_ref, self.call("host.get_record", host_ref), pifs=self.call("PIF.get_all_records"),
                          updates=self.call("pool_update.get_all_records"))
