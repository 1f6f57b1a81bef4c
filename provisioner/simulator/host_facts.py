"""What a simulated host's dom0 knows that XAPI's database does not: its disk layout, the dom0 memory a new
version would give it, its certificate's key length (docs/prechecks.md). The calls that read them are in
host_fact_calls.py:

- `testSafe2Upgrade`: the plugin's safe2upgrade() (plugin copy with testUrl/main/testSafe2Upgrade, code index id
  3478992653): a host whose /var/log is its own partition (the GPT layout of XenServer 7 and later) answers "true";
  on the older layout it looks at the local SR on PRIMARY_DISK: smaller than 38 GiB (min_upgrade_lvm_part_size)
  answers "not_enough_space", VDIs on it answer the failure, an empty one "true". The newer plugin also answers
  "vdi_present", "utility_part_present" and "legacy_partition_table" (the keys XenCenter's SafeToUpgradeCheck.cs
  maps); which layout gives which of those is inferred from those names, the 3.x source was not read.
- `host.get_server_certificate` (XenCenter's CertificateKeyLengthCheck.cs reads the key length from it): the
  certificate the host serves (certs.py), or, when its fact `server_cert_key_bits` is set, a self-signed one with an
  RSA key of that length (made once with the openssl command: certs.py is the one simulator module importing
  `cryptography`), as a host whose xapi-ssl.pem predates the 2048-bit default would have.
- `getDom0DefaultMemory`: the dom0 memory (bytes, a decimal string; XenCenter's HostMemoryPostUpgradeCheck.cs
  parses it with long.TryParse) the new version's installer will give the control domain.

Facts are per SimHost, set by tests with set_facts() and by the builder (build_pool(facts={index: {...}}),
apply()); defaults are a healthy host.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, replace

from .db import NULL_REF
from .hosts import SimHost

# partition_layout -> what testSafe2Upgrade answers ("legacy": computed from the local SR, as safe2upgrade() does)
LAYOUTS = {"gpt": "true", "legacy": None, "legacy-msdos": "legacy_partition_table",
           "utility": "utility_part_present"}


@dataclass(frozen=True)
class HostFacts:
    partition_layout: str = "gpt"  # one of LAYOUTS
    dom0_memory_after_upgrade: int | None = None  # bytes; None: the dom0 keeps what it has now
    server_cert_key_bits: int | None = None  # xapi-ssl.pem's RSA key length; None: the certificate it serves

    def __post_init__(self):
        if self.partition_layout not in LAYOUTS:
            raise ValueError(f"partition_layout {self.partition_layout!r} is not one of {', '.join(LAYOUTS)}")


_FACTS: "weakref.WeakKeyDictionary[SimHost, HostFacts]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def facts_of(h: SimHost) -> HostFacts:
    with _LOCK:
        return _FACTS.get(h) or HostFacts()


def set_facts(h: SimHost, **changes) -> HostFacts:
    """Change some of the host's facts (partition_layout=..., dom0_memory_after_upgrade=...)."""
    with _LOCK:
        found = _FACTS[h] = replace(_FACTS.get(h) or HostFacts(), **changes)
        return found


def apply(pool, h: SimHost, found: dict) -> None:
    """The builder's per-host facts: HostFacts fields go to set_facts, the others are XAPI host fields
    (ssl_legacy, secure_boot, edition, ...) written to the pool's DB."""
    mine = {k: v for k, v in found.items() if k in HostFacts.__dataclass_fields__}
    if mine:
        set_facts(h, **mine)
    rest = {k: v for k, v in found.items() if k not in mine}
    if rest:
        pool.db.update("host", h.ref, **rest)


def installed(db, h: SimHost) -> None:
    """A new version was installed (dbsync): its dom0 gets the memory getDom0DefaultMemory announced (the
    installer sizes dom0 from the host's memory; docs/prechecks.md DOM0_MEMORY). Call with db.lock held."""
    found = facts_of(h).dom0_memory_after_upgrade
    dom0 = db.get("host", h.ref)["control_domain"]
    if found is not None and dom0 != NULL_REF:
        db.update("VM", dom0, memory_static_max=str(found), memory_target=str(found))
        set_facts(h, dom0_memory_after_upgrade=None)  # now the memory it has
