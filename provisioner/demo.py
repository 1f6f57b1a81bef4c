"""`provisioner demo`: a simulated XenServer pool upgraded through the real boot service, on loopback.

A throw-away data dir, a synthetic XenServer 8.4 media tree, the real `serve` runtime (TFTP + HTTP on
127.0.0.1 high ports), and the XAPI simulator: a pool of N hosts at 8.2.1 with VMs, one XML-RPC endpoint per
host, whose machines network-boot against our server like PXE firmware (simulator/machine.py). The hosts are
registered from XAPI (management PIF MACs), then upgraded one at a time, master first: disable, evacuate,
arm, reboot, wait for the host to come back at the target version, enable. Until the coordinator (issue 6)
lands, this loop is a plain sequence here, without its persistence, prechecks and recovery.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provisioner import attempts, media, registry, states
from provisioner.config import Config, load_config
from provisioner.runtime import Runtime
from provisioner.simulator.builder import build_pool, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.machine import make_boot_handler
from provisioner.simulator.world import World
from provisioner.store import Store
from provisioner.xapi import Failure, HostInfo, XapiUnreachable, XenApiDriver

DEMO_POOL = "demo-pool"
DEMO_MEDIA = "xs-8.4-demo"
SOURCE_VERSION, TARGET_VERSION, TARGET_BUILD = "8.2.1", "8.4.0", "demo-84"
WAIT_SIM_SECONDS = 4 * 3600  # per host: a real upgrade takes 20-60 min; give it room before calling it lost


class DemoFailure(RuntimeError):
    """Something a real host would have hit went wrong; the message says what."""


@dataclass
class HostResult:
    name: str
    mac: str
    role: str
    before: str
    after: str = ""
    attempt: str = ""
    answer_files: int = 0
    sim_minutes: float = 0.0
    verified: bool = False


def synthetic_media_tree(root: Path, version: str = TARGET_VERSION, build: str = TARGET_BUILD) -> Path:
    """A minimal XenServer ISO tree: what the installer and the boot loaders look for (contents are dummies)."""
    (root / "repodata").mkdir(parents=True, exist_ok=True)
    (root / "boot").mkdir(exist_ok=True)
    (root / ".treeinfo").write_text(
        "[system-v1]\nplatform_name = XCP\nplatform_version = 3.4.0\nproduct_name = XenServer\n"
        f"product_version = {version}\n\n[build]\nnumber = {build}\n")
    (root / "repodata" / "repomd.xml").write_text('<?xml version="1.0"?><repomd/>\n')
    (root / "boot" / "xen.gz").write_bytes(b"demo hypervisor\n" * 4096)
    (root / "boot" / "vmlinuz").write_bytes(b"demo dom0 kernel\n" * 8192)
    (root / "install.img").write_bytes(b"demo installer\n" * 65536)
    return root


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_config(workdir: Path) -> Config:
    """Loopback ports chosen up front, so the URLs in the boot configs are the ones really served."""
    http_port = _free_port(socket.SOCK_STREAM)
    (workdir / "tftp_root").mkdir(parents=True, exist_ok=True)
    return load_config(file=None, environ={}, overrides={
        "data_dir": workdir / "data", "bind_address": "127.0.0.1", "http_port": http_port,
        "tftp_port": _free_port(socket.SOCK_DGRAM), "tftp_root": workdir / "tftp_root",
        "public_url": f"http://127.0.0.1:{http_port}", "pxelinux_http": True,
    })


class Pool:
    """The demo's view of the simulated pool through the real XenAPI client (provisioner.xapi)."""

    def __init__(self, driver: XenApiDriver, clock: Clock, say: Callable[[str], None]):
        self.driver, self.clock, self.say = driver, clock, say

    def host(self, uuid: str) -> HostInfo | None:
        """The host's record, or None while the master does not answer (it is being upgraded)."""
        try:
            return next((h for h in self.driver.hosts() if h.uuid == uuid), None)
        except (XapiUnreachable, Failure):
            return None

    def wait(self, what: str, uuid: str, done: Callable[[HostInfo], bool]) -> HostInfo:
        """Poll until done(host) holds; say each change of what XAPI shows; DemoFailure after the timeout."""
        start, shown = self.clock.now(), None
        while self.clock.now() - start < WAIT_SIM_SECONDS:
            info = self.host(uuid)
            if info is not None and done(info):
                return info
            seen = ("master not answering (members in emergency mode)" if info is None
                    else f"live={info.live} enabled={info.enabled} version={info.product_version}")
            if seen != shown:
                self.say(f"    [{(self.clock.now() - start) / 60:5.1f} min] {what}: {seen}")
                shown = seen
            time.sleep(0.05)
        raise DemoFailure(f"{what}: not done after {WAIT_SIM_SECONDS / 3600:.0f} simulated hours")

    def enable(self, uuid: str) -> HostInfo:
        def enabled(info: HostInfo) -> bool:
            if not info.enabled:
                try:
                    self.driver.enable(info.ref)
                except Failure as exc:  # HOST_STILL_BOOTING for a while after xapi starts
                    if exc.details[0] != "HOST_STILL_BOOTING":
                        raise
                return False
            return True
        return self.wait("enable", uuid, enabled)


def upgrade_host(pool: Pool, store: Store, config: Config, host: HostInfo) -> HostResult:
    """disable -> evacuate -> arm -> reboot -> back at the target version -> enable (master first)."""
    say, started = pool.say, pool.clock.now()
    result = HostResult(host.name, host.mac, "master" if host.is_master else "member", host.product_version)
    say(f"{host.name} ({result.role}, {host.mac}): {host.product_version} -> {TARGET_VERSION}")
    pool.driver.disable(host.ref)
    pool.driver.evacuate(host.ref)  # does not disable by itself (xapi.md 2.4): disabled first, like XenCenter
    say("    disabled, VMs evacuated; armed; rebooting")
    attempt = attempts.arm(store, config, host.mac, DEMO_MEDIA)
    pool.driver.reboot(host.ref)
    back = pool.wait("reboot", host.uuid, lambda h: h.live and h.boot_time != host.boot_time)
    if back.product_version != TARGET_VERSION:
        raise DemoFailure(f"{host.name} came back at {back.product_version}, not {TARGET_VERSION}"
                          + (": the master must be restored to a working version" if host.is_master else ""))
    back = pool.enable(host.uuid)
    final = store.get_attempt(attempt.id)
    fetches = [e for e in store.events(mac=host.mac, kind="attempt.fetch")
               if e["details"].get("attempt") == attempt.id and e["details"].get("what") == "answerfile"]
    result.after, result.attempt, result.answer_files = back.product_version, final.state, len(fetches)
    result.sim_minutes = (pool.clock.now() - started) / 60
    result.verified = (back.product_version == TARGET_VERSION and back.build_number == TARGET_BUILD
                       and final.state == states.SUCCEEDED and len(fetches) == 1)
    say(f"    back at {back.product_version} build {back.build_number}, enabled; attempt {final.state}, "
        f"{len(fetches)} answer file fetch(es)")
    return result


def run_demo(workdir: Path | None = None, *, hosts: int = 4, speed: float = 120.0,
             say: Callable[[str], None] = print) -> list[HostResult]:
    """Run the demo; raises DemoFailure unless every host is verified at the target version."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="provisioner-demo-"))
    config = demo_config(workdir)
    store = Store(config.db_path)
    say(f"demo data in {workdir}")
    added = media.import_media(store, config, DEMO_MEDIA, synthetic_media_tree(workdir / "media-tree"))
    say(f"media {added.name}: {added.product_name} {added.product_version} build {added.build}")
    runtime = Runtime(config, store).start()
    say(f"provisioner serving TFTP on udp 127.0.0.1:{config.tftp_port} and HTTP on {runtime.http.url}")
    world = World(Clock(speed))
    build_pool(world, DEMO_POOL, hosts=hosts, version=SOURCE_VERSION, vms_per_host=2)
    handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url)
    world.boot_handler = handler
    sim = serve_world(world)
    driver = XenApiDriver(sim.master_url(), "root", "demo", timeout=5)
    say(f"simulated pool {DEMO_POOL}: {hosts} hosts at {SOURCE_VERSION}, master {sim.master_url()}, "
        f"clock x{speed:g}")
    results = []
    try:
        pool = Pool(driver, world.clock, say)
        found = driver.hosts()  # master first
        for h in found:
            registry.add_host(store, {"mac": h.mac, "name": h.name, "pool": DEMO_POOL, "firmware": "bios",
                                      # XAPI has no field for PRIMARY_DISK (installer.md s.8): a lab value
                                      "disk": f"/dev/disk/by-id/scsi-sim-{h.uuid[:8]}"})
        say(f"registered {len(found)} hosts from XAPI by their management PIF MACs")
        for h in found:
            results.append(upgrade_host(pool, store, config, h))
        loops = [mac for mac, m in handler.machines.items() if m.installs() > 1]
        if loops:
            raise DemoFailure(f"reinstall loop on {', '.join(loops)}")
    finally:
        driver.close()
        handler.stop()
        sim.stop()
        runtime.stop()
    if not all(r.verified for r in results):
        raise DemoFailure("not every host was verified at the target version")
    return results
