"""Coordinator labs shared by the test modules: a simulated XenServer pool (or several) served over XML-RPC, the
real boot service, and simulated PXE machines, all on loopback.

- `make_lab` / `stop_lab` / `Lab`: one pool (POOL), media MEDIA imported, the boot service in this process.
- `make_world` / `stop_world` / `World2`: several pools in one world; the server's FlowService on the sim clock.
- what the reinstall tests do to a `Lab`: `upgrade` it (a Runner on the sim clock), `shut_down` a member,
  `power_on_when_armed`; `macs` and `host_info` to look at its hosts.

`make_serve_lab` (the pool here, `provisioner serve` as a subprocess) is in serve_lab.py.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from helpers import FAST, register_hosts
from sim_tls import trust
from provisioner import media, netports
from provisioner.coordinator import pools, runner
from provisioner.coordinator.service import FlowService
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.runtime import Runtime
from provisioner.simulator import states as sim_states
from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.boot_handler import make_boot_handler
from provisioner.simulator.world import World
from provisioner.store import Store
from provisioner.xapi import XenApiDriver

POOL, MEDIA, PASSWORD = "lab", "xs84", "s3cret-pw"
"""The lab's pool name, the media imported into its store, and the pool password (Lab and World2)."""
WAIT = 300  # real seconds: a generous bound, never reached when things work


@dataclass
class Served:
    """What Lab and World2 share: our boot service (runtime) and a simulated world served on loopback, whose
    machines network-boot from it."""

    config: object
    store: Store
    runtime: Runtime
    world: World
    sim: object
    handler: object

    def stop(self) -> None:
        self.handler.stop()
        self.sim.stop()
        self.runtime.stop()
        self.store.close()


def _serve(world: World, runtime: Runtime) -> tuple[object, object]:
    """Point the world's PXE machines at the runtime's TFTP/HTTP and serve its XAPI: (boot handler, simulator)."""
    # A PXE-first site: every reboot tries the network first (the machine default is disk first).
    handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url,
                                boot_order="bios-network-first")
    world.boot_handler = handler
    return handler, serve_world(world)


# --- one pool: Lab ---

@dataclass
class Lab(Served):
    driver: XenApiDriver

    def mac(self, i: int) -> str:
        return self.world.pools[POOL].hosts[i].mac

    def reboots(self, i: int) -> int:
        ref = self.world.pools[POOL].hosts[i].ref
        return sum(1 for _, method, params in self.world.call_log if method == "host.reboot" and ref in params)


def make_lab(tmp_path, hosts: int = 3, *, register: bool = True, speed: float = 600.0) -> Lab:
    """Real boot service + simulator + PXE machines on loopback; hosts discovered and given a boot disk."""
    config = demo_config(tmp_path)
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    runtime = Runtime(config, store).start()
    world = new_world(Clock(speed))
    build_pool(world, POOL, hosts=hosts, version="8.2.1", vms_per_host=1)
    handler, sim = _serve(world, runtime)
    pools.add_pool(store, POOL, sim.master_url(), "root", PASSWORD, **trust(sim))
    driver = pools.connect(store, POOL, timeout=5)
    lab = Lab(config, store, runtime, world, sim, handler, driver)
    if register:
        register_hosts(store, POOL, driver)
    return lab


def stop_lab(lab: Lab) -> None:
    lab.driver.close()
    lab.stop()


# --- what an operator does to a Lab's hosts (reinstall tests) ---

def macs(lab):
    """The MACs of host0..2, taken once: lab.mac(i) indexes the pool's current hosts, which a forget reorders."""
    return [lab.mac(i) for i in range(3)]


def host_info(lab, mac):
    return next(h for h in lab.driver.hosts() if h.mac == mac)


def upgrade(lab):
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    return runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=FAST).run()


def shut_down(lab, mac):
    """What the operator does to a member before forgetting it: xe host-disable, xe host-shutdown."""
    ref = host_info(lab, mac).ref
    lab.driver.disable(ref)
    lab.driver.call("host.shutdown", ref)
    while lab.world.host(mac).state != sim_states.OFF:  # live=false first, then powered off
        lab.world.clock.sleep(5)
    assert not host_info(lab, mac).live


def power_on_when_armed(lab, mac):
    """The operator's hand on the power button: once the fresh-install attempt is armed."""
    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = lab.store.active_reinstall(mac)
            if found is not None and found.attempt_id is not None:
                lab.world.power_on(mac)
                return
            time.sleep(0.02)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# --- several pools: World2 ---

@dataclass
class World2(Served):
    """Several simulated pools in one world, served, with their hosts discovered into one store."""

    names: list[str] = field(default_factory=list)

    def macs(self, pool: str) -> list[str]:
        return [h.mac for h in self.world.pools[pool].hosts]

    def reboots(self, pool: str) -> dict[str, int]:
        refs = {h.ref: h.mac for h in self.world.pools[pool].hosts}
        counts = dict.fromkeys(refs.values(), 0)
        for _, method, params in self.world.call_log:
            if method == "host.reboot":
                for ref, mac in refs.items():
                    if ref in params:
                        counts[mac] += 1
        return counts

    def installs(self, pool: str) -> dict[str, int]:
        return {mac: self.handler.machine(mac).installs() for mac in self.macs(pool)}

    def versions(self, pool: str) -> set[str]:
        db = self.world.pools[pool].db
        return {db.get("host", h.ref)["software_version"]["product_version"] for h in self.world.pools[pool].hosts}

    def service(self, **kw) -> FlowService:
        return FlowService(self.store, self.config, clock=self.world.clock, timeouts=FAST, **kw)


def make_world(tmp_path, names=("red", "blue"), hosts: int = 3, speed: float = 600.0, **overrides) -> World2:
    config = demo_config(tmp_path)
    config = config.replace(**overrides) if overrides else config
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    world = new_world(Clock(speed))
    for name in names:
        build_pool(world, name, hosts=hosts, version="8.2.1", vms_per_host=1)
    # the server's own FlowService (what the REST API drives) runs on the simulator's clock
    runtime = Runtime(config, store, flows=FlowService(store, config, clock=world.clock, timeouts=FAST)).start()
    handler, sim = _serve(world, runtime)
    for name in names:
        pools.add_pool(store, name, sim.master_url(name), "root", PASSWORD, **trust(sim, name))
        driver = pools.connect(store, name, timeout=5)
        register_hosts(store, name, driver)
        driver.close()
    return World2(config, store, runtime, world, sim, handler, list(names))


def stop_world(w: World2) -> None:
    w.stop()


# --- one pool of disk-first machines behind BMCs: BmcLab ---

BMC_USER, BMC_PASSWORD = "admin", "bmc-Pw-7q2x-secret"
"""The BMC credentials of BmcLab's fronts (the wrong-password test registers another one)."""


@dataclass
class BmcLab(Lab):
    """A Lab whose machines boot their disk first (bios-disk-first: a reboot never reaches the network) and each
    has a BMC front over World.bmc: pyghmi's BMC server (ipmi) or the sushy-tools emulator (redfish)."""

    fronts: list = field(default_factory=list)
    addresses: dict = field(default_factory=dict)  # kind -> {mac: (address, system id or None)}

    def register_bmcs(self, method: str, password: str = BMC_PASSWORD) -> None:
        """Give every host its BMC of kind `method` (redfish or ipmi) and that boot method (registry)."""
        from provisioner import registry
        for mac, (address, system_id) in self.addresses[method].items():
            registry.set_bmc(self.store, mac, kind=method, address=address, username=BMC_USER, password=password,
                             system_id=system_id)
            registry.set_boot_method(self.store, mac, method)

    def stop(self) -> None:
        for front in self.fronts:
            front.stop()
        super().stop()


def make_bmc_lab(tmp_path, hosts: int = 3, *, speed: float = 120.0, kinds=("redfish", "ipmi"),
                 boot_order: str = "bios-disk-first") -> BmcLab:
    """Like make_lab, but every machine boots by `boot_order` (a simulator bootorder.SPECS name: BIOS disk-first by
    default; a uefi-* order boots GRUB and registers the hosts as UEFI) and has an IPMI and a Redfish front; hosts
    registered (network-first until register_bmcs)."""
    uefi = boot_order.startswith("uefi")
    from provisioner.simulator.bmc_ipmi import IpmiFront
    from provisioner.simulator.bmc_redfish import RedfishFront
    config = demo_config(tmp_path)
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, synthetic_media_tree(tmp_path / "tree"))
    runtime = Runtime(config, store).start()
    world = new_world(Clock(speed))
    build_pool(world, POOL, hosts=hosts, version="8.2.1", vms_per_host=1)
    all_macs = [h.mac for h in world.pools[POOL].hosts]
    handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url,
                                boot_orders={mac: boot_order for mac in all_macs}, **({"loader": "grub"} if uefi else {}))
    world.boot_handler = handler
    sim = serve_world(world)
    pools.add_pool(store, POOL, sim.master_url(), "root", PASSWORD, **trust(sim))
    driver = pools.connect(store, POOL, timeout=5)
    lab = BmcLab(config, store, runtime, world, sim, handler, driver)
    register_hosts(store, POOL, driver)
    if uefi:
        for mac in all_macs:
            store.update_host(mac, {"firmware": "uefi"})
    if "ipmi" in kinds:
        lab.addresses["ipmi"] = {}
        for mac in all_macs:
            port = netports.free_port(socket.SOCK_DGRAM)
            front = IpmiFront(world.bmc(mac), BMC_USER, BMC_PASSWORD, port).start()
            lab.fronts.append(front)
            lab.addresses["ipmi"][mac] = (front.address, None)
    if "redfish" in kinds:
        front = RedfishFront(BMC_USER, BMC_PASSWORD, state_dir=tmp_path / "redfish")
        ids = {mac: front.add(world.bmc(mac), mac, boot_mode="UEFI" if uefi else "Legacy") for mac in all_macs}
        lab.fronts.append(front.start())
        lab.addresses["redfish"] = {mac: (front.url, ids[mac]) for mac in all_macs}
    return lab
