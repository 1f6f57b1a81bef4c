"""The calls that read a simulated host's dom0 facts (host_facts.py; docs/prechecks.md, docs/host-plugin.md):
`prepare_host_upgrade.py` `testSafe2Upgrade` and `getDom0DefaultMemory` (host_plugin.call_plugin dispatches here),
and `host.get_server_certificate`. What each answers is described in host_facts.py.
"""

from __future__ import annotations

import subprocess
import threading
import weakref

from . import certs
from .db import NULL_REF
from .host_facts import LAYOUTS, facts_of
from .hosts import SimHost
from .registry import Call, api, sim_host

GiB = 1024 ** 3
MIN_UPGRADE_LVM_PART_SIZE = 38 * GiB  # prepare_host_upgrade.py min_upgrade_lvm_part_size
FUNCTIONS = ("testSafe2Upgrade", "getDom0DefaultMemory")
_SHORT: "weakref.WeakKeyDictionary[SimHost, tuple[int, str]]" = weakref.WeakKeyDictionary()  # short-key certs
_SHORT_LOCK = threading.Lock()


def call(c: Call, h: SimHost, fn: str) -> str:
    """One of FUNCTIONS on host h (host_plugin.call_plugin dispatches here)."""
    if fn == "testSafe2Upgrade":
        return safe2upgrade(c, h)
    return str(dom0_memory_after(c, h))


def safe2upgrade(c: Call, h: SimHost) -> str:
    answer = LAYOUTS[facts_of(h).partition_layout]
    if answer is not None:
        return answer
    db = c.db
    with db.lock:  # the attached PBD of this host whose SR is the local one on PRIMARY_DISK
        local = next((p["SR"] for p in (db.get("PBD", r) for r in db.find("PBD", host=h.ref))
                      if p["currently_attached"] and not db.get("SR", p["SR"])["shared"]
                      and db.get("SR", p["SR"])["content_type"] == "user"), None)
        if local is None:
            return "true"
        if int(db.get("SR", local)["physical_size"]) < MIN_UPGRADE_LVM_PART_SIZE:
            return "not_enough_space"
        return "vdi_present" if db.find("VDI", SR=local) else "true"


def dom0_memory_now(c: Call, h: SimHost) -> int:
    with c.db.lock:
        dom0 = c.db.get("host", h.ref)["control_domain"]
        if dom0 == NULL_REF:
            dom0 = next((v for v in c.db.find("VM", resident_on=h.ref) if c.db.get("VM", v)["is_control_domain"]),
                        NULL_REF)
        return int(c.db.get("VM", dom0)["memory_static_max"]) if dom0 != NULL_REF else 0


def dom0_memory_after(c: Call, h: SimHost) -> int:
    found = facts_of(h).dom0_memory_after_upgrade
    return dom0_memory_now(c, h) if found is None else found


@api("host.get_server_certificate", 2)
def get_server_certificate(c: Call, ref):
    h = sim_host(c, ref)
    bits = facts_of(h).server_cert_key_bits
    if bits is None:
        return certs.cert_of(h).cert_pem.decode()  # the certificate its xapi serves
    with _SHORT_LOCK:
        found = _SHORT.get(h)
        if found is None or found[0] != bits:
            pem = subprocess.run(["openssl", "req", "-x509", "-newkey", f"rsa:{bits}", "-nodes", "-keyout",
                                  "/dev/null", "-subj", f"/CN={h.name}", "-days", "3650", "-sha256"],
                                 capture_output=True, text=True, check=True).stdout
            found = _SHORT[h] = (bits, pem)
        return found[1]
