"""XenApiDriver's reads for the plan's pool and host prechecks (coordinator/prechecks.py, docs/prechecks.md): over
its `call` only, no XenAPI import here. Field names are XAPI's (docs/xapi.md "Fields the prechecks read").
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

NULL_REF = "OpaqueRef:NULL"
RSA_OID = bytes.fromhex("2a864886f70d010101")  # rsaEncryption, 1.2.840.113549.1.1.1
PLUGIN = "prepare_host_upgrade.py"


@dataclass(frozen=True)
class HostFacts:
    ref: str
    name: str
    edition: str  # host.edition: "trial", "standard", "premium", "desktop-plus", "xendesktop", ...
    license_expiry: str  # host.license_params["expiry"]
    ssl_legacy: bool  # host.ssl_legacy (gone in 8.2 and later)
    secure_boot: bool  # host.secure_boot
    network_backend: str  # host.software_version["network_backend"]: "openvswitch" | "bridge"
    platform_version: str  # host.software_version["platform_version"]: what the installer's upgrader compares
    management_vlan: int  # the management PIF's VLAN tag; -1: untagged
    dom0_memory: int  # the control domain's memory_static_max, bytes
    memory_free: int  # host_metrics.memory_free, bytes
    live: bool
    enabled: bool
    tags: tuple[str, ...] = ()  # host.tags: the operator's labels (a group tag of --group-tag-prefix: waves.py)


@dataclass(frozen=True)
class VmFacts:
    ref: str
    name: str
    power_state: str
    resident_on: str
    memory: int  # memory_target + memory_overhead, bytes: what a migration needs on the target
    pv: bool  # HVM_boot_policy "" (XenCenter VM.IsPvVm: a real VM, not HVM, no other_config pvcheckpass)


@dataclass(frozen=True)
class PoolFacts:
    vswitch_controller: str  # pool.vswitch_controller
    hosts: dict[str, HostFacts] = field(default_factory=dict)  # by ref
    vms: list[VmFacts] = field(default_factory=list)
    fcoe_srs: list[str] = field(default_factory=list)  # names of SRs of type lvmofcoe


class PrecheckCalls:
    """Reads for the prechecks; every one is read only."""

    def precheck_facts(self) -> PoolFacts:
        pool = self.call("pool.get_record", self.call("pool.get_all")[0])
        hosts, metrics = self.call("host.get_all_records"), self.call("host_metrics.get_all_records")
        vms, pifs = self.call("VM.get_all_records"), self.call("PIF.get_all_records")
        srs = self.call("SR.get_all_records")
        vlan = {p["host"]: int(p.get("VLAN", -1)) for p in pifs.values() if p.get("management")}
        found = {}
        for ref, rec in hosts.items():
            m = metrics.get(rec.get("metrics", NULL_REF), {})
            dom0 = vms.get(rec.get("control_domain", NULL_REF), {})
            found[ref] = HostFacts(
                ref, rec["name_label"], str(rec.get("edition", "")),
                str((rec.get("license_params") or {}).get("expiry", "")), bool(rec.get("ssl_legacy")),
                bool(rec.get("secure_boot")), str((rec.get("software_version") or {}).get("network_backend", "")),
                str((rec.get("software_version") or {}).get("platform_version", "")),
                vlan.get(ref, -1), int(dom0.get("memory_static_max") or 0), int(m.get("memory_free") or 0),
                bool(m.get("live")), bool(rec.get("enabled")), tuple(str(t) for t in rec.get("tags") or ()))
        real = [VmFacts(ref, rec["name_label"], rec["power_state"], rec.get("resident_on", NULL_REF),
                        int(rec.get("memory_target") or 0) + int(rec.get("memory_overhead") or 0),
                        rec.get("HVM_boot_policy", "") == "" and "pvcheckpass" not in (rec.get("other_config") or {}))
                for ref, rec in vms.items()
                if not (rec.get("is_a_template") or rec.get("is_a_snapshot") or rec.get("is_control_domain"))]
        return PoolFacts(str(pool.get("vswitch_controller") or ""), found, sorted(real, key=lambda v: v.name),
                         sorted(sr["name_label"] for sr in srs.values() if sr.get("type") == "lvmofcoe"))

    def safe_to_upgrade(self, host_ref: str) -> str:
        """The plugin's testSafe2Upgrade: "true", or why not ("not_enough_space", "vdi_present",
        "utility_part_present", "legacy_partition_table", other: XenCenter's SafeToUpgradeCheck.cs)."""
        return str(self.call("host.call_plugin", host_ref, PLUGIN, "testSafe2Upgrade", {}))

    def dom0_memory_after_upgrade(self, host_ref: str) -> int | None:
        """The plugin's getDom0DefaultMemory: bytes, or None when it answered no number (HostMemoryPostUpgradeCheck.cs
        long.TryParse)."""
        answer = str(self.call("host.call_plugin", host_ref, PLUGIN, "getDom0DefaultMemory", {}))
        return int(answer) if answer.strip().isdigit() else None

    def server_key_bits(self, host_ref: str) -> int | None:
        """The RSA key length of the host's XAPI server certificate (host.get_server_certificate, as XenCenter's
        CertificateKeyLengthCheck.cs reads it); None when it is no RSA key or cannot be read."""
        return rsa_key_bits(str(self.call("host.get_server_certificate", host_ref)))


def _tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    tag, size, at = der[at], der[at + 1], at + 2
    if size & 0x80:
        count = size & 0x7F
        size, at = int.from_bytes(der[at:at + count], "big"), at + count
    return tag, at, at + size


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        tag, value, stop = _tlv(der, start)
        found.append((tag, value, stop))
        start = stop
    return found


def rsa_key_bits(pem: str) -> int | None:
    """Bits of the RSA modulus in an X.509 certificate (PEM), read from its DER with no crypto library:
    Certificate -> tbsCertificate -> subjectPublicKeyInfo (the element after subject) -> BIT STRING -> modulus."""
    try:
        der = ssl.PEM_cert_to_DER_cert(pem.strip())
        _, cert_start, cert_end = _tlv(der, 0)
        _, tbs_start, tbs_end = _tlv(der, cert_start)
        fields = _children(der, tbs_start, tbs_end)
        if fields and fields[0][0] == 0xA0:  # [0] version
            fields = fields[1:]
        _, spki_start, spki_end = fields[5]  # serial, signature, issuer, validity, subject, subjectPublicKeyInfo
        (_, alg_start, alg_end), (_, bits_start, bits_end) = _children(der, spki_start, spki_end)[:2]
        _, oid_start, oid_end = _tlv(der, alg_start)
        if der[oid_start:oid_end] != RSA_OID:
            return None
        _, key_start, _ = _tlv(der, bits_start + 1)  # skip the BIT STRING's unused-bits byte
        _, mod_start, mod_end = _tlv(der, key_start)
        return int.from_bytes(der[mod_start:mod_end], "big").bit_length()
    except (ValueError, IndexError):
        return None
