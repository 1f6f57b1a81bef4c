"""Build a simulated world (new_world wires its hooks) and its pools, serve them over XML-RPC (SimulatorHandle),
and `provisioner simulator serve`."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Callable

from . import fresh, host_facts, vm_ops
from . import updates as up
from . import states as st
from .clock import Clock
from .db import NULL_REF, xapi_datetime
from .fresh import ISO_EDITION, LOCAL_SR
from .hosts import SimHost, SimPool
from .power import WorldHooks
from .world import World
from .xapi_server import Endpoint

GiB = 1024 ** 3
USER = "root"


HOOKS = WorldHooks(halt_vms=vm_ops.vm_halt_all_on, fresh_install=fresh.become_new_host)


def new_world(clock: Clock | None = None, *, password: str | None = None, world_class: type[World] = World,
              **delays: float) -> World:
    """A World with the simulator's own hooks: a host going down halts or moves its VMs (vm_ops.py), a fresh
    install makes the machine a new standalone host (fresh.py). `world_class`: a World subclass (the bench's)."""
    return world_class(clock, hooks=HOOKS, password=password, **delays)


def _mac(pool_index: int, i: int) -> str:
    return f"52:54:00:{pool_index:02x}:{i // 256:02x}:{i % 256:02x}"


def build_pool(world: World, name: str, hosts: int = 4, version: str | dict = "8.2.1", vms_per_host: int = 2,
               *, memory_gib: int = 64, vm_memory_gib: int = 4, dom0_memory_gib: int = 4,
               macs: list[str] | None = None, address: str | list[str] = "127.0.0.1",
               power_on_mode: str = "wake-on-lan", edition: str = ISO_EDITION,
               facts: dict[int, dict] | None = None, updates=None) -> SimPool:
    """A pool: hosts with MACs, management PIFs, memory, a local SR each (PBD on that host only) + shared SRs,
    dom0 and user VMs with guest metrics, a disk (on the shared SR) and an empty CD VBD each. Host 0 is the
    coordinator; every host has `edition` (host.edition, what pool.join's licence check compares). `facts`: per host
    index, precheck facts and XAPI host fields (host_facts.apply, docs/prechecks.md). `updates`: every host at that
    update level (a bundle or repository directory path: all its updates; or repo_format.Update objects), nothing
    pending (simulator/updates.py)."""
    pool = SimPool(name)
    db = pool.db
    idx = len(world.pools) + 1
    pool.ref = db.create("pool", name_label=name)
    net = db.create("network", name_label="Pool-wide network associated with eth0", bridge="xenbr0")
    shared = db.create("SR", name_label="NFS storage", type="nfs", shared=True, physical_size=str(2 ** 40))
    tools = db.create("SR", name_label="XenServer Tools", type="iso", content_type="iso", shared=True,
                      is_tools_sr=True)
    db.create("VDI", name_label="guest-tools.iso", SR=tools, type="user", read_only=True, is_tools_iso=True)
    db.update("pool", pool.ref, default_SR=shared)
    now = world.clock.now()
    for i in range(hosts):
        mac = (macs[i] if macs else _mac(idx, i)).lower()
        hname = f"{name}-host{i}"
        addr = address[i] if isinstance(address, list) else address
        h = SimHost(hname, mac, addr, pool)
        sv, minor = st.software_version(version, hname)
        metrics = db.create("host_metrics", live=True, memory_total=str(memory_gib * GiB),
                            memory_free=str(memory_gib * GiB), last_updated=xapi_datetime(now))
        h.ref = db.create("host", name_label=hname, hostname=hname, address=addr, software_version=sv,
                          API_version_minor=minor, metrics=metrics, power_on_mode=power_on_mode, edition=edition,
                          other_config={"boot_time": f"{int(now) - 3600 * (i + 1)}.",
                                        "agent_start_time": f"{now - 3500 * (i + 1):.2f}"})
        db.create("PIF", device="eth0", MAC=mac, host=h.ref, network=net, management=True, IP=f"10.0.{idx}.{10 + i}",
                  netmask="255.255.255.0", gateway=f"10.0.{idx}.1", DNS=f"10.0.{idx}.1",
                  ip_configuration_mode="Static")
        local = db.create("SR", name_label=LOCAL_SR, type="lvm", shared=False,
                          physical_size=str(500 * GiB))
        for sr in (local, shared, tools):
            db.create("PBD", host=h.ref, SR=sr, currently_attached=True)
        dom0 = db.create("VM", name_label=f"Control domain on host: {hname}", is_control_domain=True,
                         power_state="Running", resident_on=h.ref, memory_target=str(dom0_memory_gib * GiB),
                         memory_static_max=str(dom0_memory_gib * GiB), domid="0")
        db.update("host", h.ref, control_domain=dom0)
        for j in range(vms_per_host):
            add_vm(pool, f"{hname}-vm{j}", h.ref, shared, vm_memory_gib * GiB)
        pool.hosts.append(h)
        world.hosts[mac] = h
    pool.master = pool.hosts[0]
    db.update("pool", pool.ref, master=pool.master.ref)
    for i, found in (facts or {}).items():
        host_facts.apply(pool, pool.hosts[i], found)
    level = up.updates_from(updates) if updates is not None else []
    for h in pool.hosts:
        up.apply_now(world, pool, h, level)
    world.pools[name] = pool
    world.update_memory(pool)
    return pool


def add_vm(pool: SimPool, name: str, host_ref: str, sr: str, memory: int, *, running: bool = True,
           tools: str | None = "8.2.1") -> str:
    """A user VM with a disk on `sr` and an empty CD drive; `tools`: its PV drivers' version (None: no guest
    metrics, no tools). PV_drivers_up_to_date is PV_drivers_detected, whatever the version: xapi sets both from the
    same xenopsd event (xapi_xenops.ml:2418-2427; datamodel.ml:7625-7638, "Logically equivalent to
    PV_drivers_detected"), so a host upgrade does not make a VM's tools "out of date"."""
    db = pool.db
    gm = NULL_REF
    if tools is not None:
        major, minor, micro = (tools.split(".") + ["0", "0"])[:3]
        gm = db.create("VM_guest_metrics", PV_drivers_version={"major": major, "minor": minor, "micro": micro,
                                                               "build": "1"},
                       PV_drivers_up_to_date=True, PV_drivers_detected=True, os_version={"name": "Debian 12"})
    vm = db.create("VM", name_label=name, power_state="Running" if running else "Halted",
                   resident_on=host_ref if running else NULL_REF, guest_metrics=gm, memory_target=str(memory),
                   memory_static_max=str(memory), memory_dynamic_max=str(memory), VCPUs_max="2",
                   other_config={"auto_poweron": "false"})
    disk = db.create("VDI", name_label=f"{name} disk", SR=sr, virtual_size=str(20 * 1024 ** 3))
    db.create("VBD", VM=vm, VDI=disk, type="Disk", userdevice="0", bootable=True)
    db.create("VBD", VM=vm, type="CD", userdevice="3", empty=True, mode="RO")
    return vm


def local_sr(pool: SimPool, host_ref: str) -> str:
    """The host's local SR: not shared, its only PBD on this host."""
    db = pool.db
    with db.lock:
        return next(sr for sr in db.find("SR", shared=False)
                    if [db.get("PBD", p)["host"] for p in db.find("PBD", SR=sr)] == [host_ref])


def add_local_vm(pool: SimPool, name: str, host_ref: str, *, power_state: str = "Halted", snapshot: bool = False,
                 disk_gib: int = 20) -> str:
    """A VM that is not running whose disk is on the host's local SR (what a fresh install of that host wipes):
    "Suspended" also gets its suspend image there (VM.suspend_VDI, memory-sized); `snapshot` adds a snapshot VM
    (is_a_snapshot, snapshot_of) with its own disk on that SR."""
    db, sr = pool.db, local_sr(pool, host_ref)
    memory = 4 * GiB
    with db.lock:
        vm = db.create("VM", name_label=name, power_state=power_state, memory_target=str(memory),
                       memory_static_max=str(memory), memory_dynamic_max=str(memory), affinity=host_ref)
        disk = db.create("VDI", name_label=f"{name} disk", SR=sr, virtual_size=str(disk_gib * GiB))
        db.create("VBD", VM=vm, VDI=disk, type="Disk", userdevice="0", bootable=True, currently_attached=False)
        if power_state == "Suspended":  # the memory image of a suspended VM is a VDI of type suspend
            image = db.create("VDI", name_label=f"Suspend image for {name}", SR=sr, type="suspend",
                              virtual_size=str(memory))
            db.update("VM", vm, suspend_VDI=image)
        if snapshot:
            snap = db.create("VM", name_label=f"{name} before upgrade", is_a_snapshot=True, snapshot_of=vm,
                             memory_target=str(memory), memory_static_max=str(memory))
            copy = db.create("VDI", name_label=f"{name} disk (snapshot)", SR=sr, virtual_size=str(disk_gib * GiB))
            db.create("VBD", VM=snap, VDI=copy, type="Disk", userdevice="0", currently_attached=False)
    return vm


@dataclass
class SimulatorHandle:
    """A running simulator: the world, each host's endpoint, master and per-host URLs."""

    world: World
    endpoints: dict[str, Endpoint] = field(default_factory=dict)  # mac -> endpoint

    def url(self, mac: str) -> str:
        return self.endpoints[mac.lower()].url

    @property
    def urls(self) -> dict[str, str]:
        """host name -> URL."""
        return {e.host.name: e.url for e in self.endpoints.values()}

    def master_url(self, pool: str | None = None) -> str:
        return self.url(self._master(pool).mac)

    def _master(self, pool: str | None) -> SimHost:
        return (self.world.pools[pool] if pool else next(iter(self.world.pools.values()))).master

    def fingerprint(self, mac: str) -> str:
        """SHA-256 of the certificate the host serves now (lower-case hex): what `pools add --fingerprint` pins."""
        return self.endpoints[mac.lower()].cert.fingerprint

    def master_fingerprint(self, pool: str | None = None) -> str:
        return self.fingerprint(self._master(pool).mac)

    def cert_pem(self, mac: str) -> bytes:
        """The host's self-signed certificate in PEM: what `pools add --ca-file` reads."""
        return self.endpoints[mac.lower()].cert.cert_pem

    def stop(self) -> None:
        self.world.stop()
        release = getattr(self.world.boot_handler, "stop", None)  # boot_handler.BootHandler: free hung machines
        if callable(release):
            release()
        for e in self.endpoints.values():
            e.set_up(False)


def serve_world(world: World, bind: str | None = None, *, tls: bool = True) -> SimulatorHandle:
    """Open an endpoint for every host of the world (those whose xapi is up) and start the DB-GC tick.

    Each endpoint listens on `bind` or, by default, on the host's own address (give build_pool distinct
    loopback addresses, 127.0.0.2..., to make HOST_IS_SLAVE [address] a usable redirect); over HTTPS with the
    host's own self-signed certificate unless `tls=False` (docs/xapi.md "TLS")."""
    handle = SimulatorHandle(world)
    for mac, h in world.hosts.items():
        handle.endpoints[mac] = Endpoint(world, h, bind, tls=tls)
    world.endpoint_listener = lambda h, up: handle.endpoints[h.mac].set_up(up)
    for mac, h in world.hosts.items():
        if h.serving:
            handle.endpoints[mac].set_up(True)
    world.start()
    return handle


def start_simulator(hosts: int = 4, *, speed: float = 60.0, version: str = "8.2.1", vms_per_host: int = 2,
                    pool_name: str = "pool0", password: str | None = None,
                    boot_handler: Callable[[str], dict | None] | None = None, **delays: float) -> SimulatorHandle:
    """One pool of `hosts` served on 127.0.0.1 high ports; call .stop() when done."""
    world = new_world(Clock(speed), password=password, **delays)
    world.boot_handler = boot_handler
    build_pool(world, pool_name, hosts=hosts, version=version, vms_per_host=vms_per_host)
    return serve_world(world)


def serve_simulator(hosts: int = 4, speed: float = 60.0, version: str = "8.2.1", password: str | None = None,
                    announce: Callable[[str], None] = print) -> int:
    """`provisioner simulator serve`: run until SIGINT/SIGTERM, printing the URLs and the login."""
    handle = start_simulator(hosts, speed=speed, version=version, password=password)
    done = threading.Event()
    old = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for h in handle.world.pools["pool0"].hosts:
            role = "coordinator" if h.is_master else "member"
            announce(f"{h.name} ({role}, MAC {h.mac}): {handle.url(h.mac)} "
                     f"(certificate SHA-256 {handle.fingerprint(h.mac)})")
        announce(f"login: user {USER}, password {'(any)' if password is None else '(configured)'}; "
                 f"speed x{speed}, version {version}")
        done.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        handle.stop()
    return 0
