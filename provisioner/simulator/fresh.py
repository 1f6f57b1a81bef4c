"""A fresh install in the simulator: the machine comes back as a NEW standalone host (docs/simulator.md
"Host power and boot states").

What the real system shows after a fresh install (the failed-member remedy and lab reinstalls): a new host uuid
and ref, its own one-host pool, the media's version, no VMs, a local SR on the primary disk, XAPI at the same
address, and root's password from the answer file's `<root-password type="hash">` (`chpasswd -e`). The old host
record, if nobody forgot it, stays in its old pool as a dead host until `host.destroy` (kept addressable by a
"ghost" SimHost that has no endpoint). Joining a pool is then `pool.join` (join.py, move_host_to_pool).
Hooks: machine.py marks a fresh install in the version it returns (fresh_version), the world's firmware stage
(power.py) calls become_new_host() through its hooks (builder.new_world), host_calls.login asks password_ok().
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING

from provisioner import cryptpw

from . import certs
from . import states as st
from .db import NULL_REF, xapi_datetime
from .hosts import SimHost, SimPool

if TYPE_CHECKING:
    from .installer import Answers
    from .world import World

log = logging.getLogger(__name__)
FRESH = "fresh"  # key of the version dict (machine -> world) that marks a fresh install
_POOL_NUMBERS = itertools.count(1)
GiB = 1024 ** 3
# What a fresh ISO install comes up with (docs/real-world.md "What a fresh ISO install comes up with"): XenServer 8 runs
# in Trial Edition until licensed (host.edition "trial"; the edition names are v6d's), no updates applied (host.updates
# empty), the management interface untagged (PIF.VLAN -1) and the openvswitch network backend (software_version
# network_backend).
ISO_EDITION = "trial"
LOCAL_SR = "Local storage"  # the local SR the installer's first boot creates (guest-storage defaults to true)


def fresh_version(answers: "Answers", version: dict) -> dict:
    """The version dict the simulated installer returns for a fresh install: the media's version plus what the
    answer file set up (hostname, root password as a crypt hash, management NIC, disk). No root-password means
    the locked hash "!!" (docs/installer.md section "Fresh-install answer files"); a plaintext one is hashed, as
    the installer's `chpasswd` would store it."""
    admin = {"mode": "Static" if answers.proto == "static" else "DHCP", "IP": answers.ip,
             "netmask": answers.netmask, "gateway": answers.gateway, "DNS": ",".join(answers.name_servers)}
    kind, value = answers.root_password or ("hash", "!!")
    hashed = value if kind == "hash" else cryptpw.hash_password(value)
    return {**version, FRESH: {"hostname": answers.hostname, "root_password_hash": hashed,
                               "disk": answers.disk, "admin": admin}}


def password_ok(world: "World", pool: SimPool, password: str) -> bool:
    """root's password on `pool`'s coordinator: the fresh install's hash when it has one, else the world's rule
    (World(password=None) accepts any password)."""
    hashed = getattr(pool.master, "root_password_hash", None) if pool.master is not None else None
    if hashed:
        return cryptpw.verify(password, hashed)
    return world.password is None or password == world.password


def _leave_old_pool(h: SimHost) -> None:
    """The machine is no longer the old host: its record stays (dead) in the old pool until host.destroy."""
    old, db = h.pool, h.pool.db
    with db.lock:
        if h not in old.hosts:
            return  # forgotten (host.destroy) or never joined: nothing stays behind
        if not db.exists("host", h.ref):
            old.hosts.remove(h)
            return
        db.update("host_metrics", db.get("host", h.ref)["metrics"], live=False)
        ghost = SimHost(h.name, h.mac, h.address, old, ref=h.ref, state=st.OFF)
        old.hosts[old.hosts.index(h)] = ghost
        if old.master is h:
            old.master = ghost


def become_new_host(world: "World", h: SimHost, new_version: dict) -> dict:
    """Turn the machine `h` into a new standalone host (new uuid/ref/pool) as the installer left it; returns
    the plain version dict that dbsync writes when its xapi starts (World.xapi_start)."""
    info = new_version[FRESH]
    version = {k: v for k, v in new_version.items() if k != FRESH}
    _leave_old_pool(h)
    pool = SimPool(f"standalone-{next(_POOL_NUMBERS)}-{h.mac.replace(':', '')}")
    db = pool.db
    hostname = info["hostname"] or h.name  # no <hostname>: the simulator keeps the machine's name
    now = world.clock.now()
    pool.ref = db.create("pool", name_label="")  # a fresh host's own pool has no name (xe pool-param-set)
    net = db.create("network", name_label="Pool-wide network associated with eth0", bridge="xenbr0")
    sv, minor = st.software_version(version, hostname)
    metrics = db.create("host_metrics", live=False, memory_total=str(64 * GiB), memory_free=str(64 * GiB),
                        last_updated=xapi_datetime(now))
    ref = db.create("host", name_label=hostname, hostname=hostname, address=h.address, software_version=sv,
                    API_version_minor=minor, metrics=metrics, enabled=False,  # until its xapi startup completes
                    edition=ISO_EDITION, updates=[],
                    other_config={"boot_time": f"{int(now)}."})
    admin = info.get("admin") or {}
    db.create("PIF", device="eth0", MAC=h.mac, host=ref, network=net, management=True, IP=admin.get("IP", ""),
              netmask=admin.get("netmask", ""), gateway=admin.get("gateway", ""), DNS=admin.get("DNS", ""),
              ip_configuration_mode=admin.get("mode", "DHCP"))
    local = db.create("SR", name_label=LOCAL_SR, type="lvm", shared=False,
                      physical_size=str(500 * GiB), other_config={"device": info.get("disk", "")})
    db.create("PBD", host=ref, SR=local, currently_attached=True)
    dom0 = db.create("VM", name_label=f"Control domain on host: {hostname}", is_control_domain=True,
                     power_state="Running", resident_on=ref, memory_target=str(4 * GiB),
                     memory_static_max=str(4 * GiB), domid="0")
    db.update("host", ref, control_domain=dom0)
    db.update("pool", pool.ref, master=ref, default_SR=local)
    # The machine itself: same MAC, address and endpoint; a new identity and a clean xapi.
    h.pool, h.ref, h.name = pool, ref, hostname
    h.root_password_hash = info.get("root_password_hash")
    h.auto_enable, h.user_disabled, h.emergency = True, False, None
    h.local_sessions.clear()
    certs.renew(h)  # a new system makes its own xapi-ssl.pem at first boot; an upgrade keeps it (certs.py)
    pool.hosts.append(h)
    pool.master = h
    world.pools[pool.name] = pool
    world.update_memory(pool)
    log.info("host %s (%s): fresh install of %s: new standalone host %s", hostname, h.mac,
             version.get("product_version"), db.get("host", ref)["uuid"], extra={"mac": h.mac})
    return version


def new_host_uuid(h: SimHost) -> str:
    """The uuid XAPI shows for the machine now (tests compare it with the one before the reinstall)."""
    with h.pool.db.lock:
        return h.pool.db.get("host", h.ref)["uuid"] if h.ref != NULL_REF else ""
