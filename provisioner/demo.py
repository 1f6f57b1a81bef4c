"""`provisioner demo`: a simulated XenServer pool upgraded through the real boot service, on loopback.

A throw-away data dir, a synthetic XenServer 8.4 media tree, the real `serve` runtime (TFTP + HTTP on
127.0.0.1 high ports), and the XAPI simulator: a pool of N hosts at 8.2.1 with VMs, one XML-RPC endpoint per
host. The pool mixes machines (docs/simulator.md "Firmware boot order"), host i as PROFILES[i % 4]: the master is
network-first (a PXE-first site, boot method network-first); the next three boot their disk first and sit behind
a simulated BMC, registered with that boot method, so the coordinator network-boots them once through the BMC
(docs/power.md): a BIOS host behind Redfish (the sushy-tools emulator), a BIOS host behind IPMI (pyghmi's BMC) and
a UEFI host behind Redfish, whose BootOrder the installer rewrites (its entry first, docs/firmware.md) and whose
one-time UEFI Pxe override the run sets; the demo shows that host's BootOrder before and after. The hosts are
registered from XAPI (management PIF MACs), planned (prechecks) and upgraded by the coordinator, master first; the
demo then checks each host itself: version and build in XAPI, attempt succeeded, one answer file.
"""

from __future__ import annotations

import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provisioner import media, netports, output, registry, states
from provisioner.coordinator import pools as coord_pools
from provisioner.coordinator import wiring
from provisioner.coordinator.plan import make_plan
from provisioner.coordinator.report import run_report as report
from provisioner.coordinator.runner import Runner, start_run
from provisioner.config import Config, load_config
from provisioner.runtime import Runtime
from provisioner.simulator.bmc_ipmi import IpmiFront
from provisioner.simulator.bmc_redfish import RedfishFront
from provisioner.simulator.boots import EV_FIRMWARE
from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.boot_handler import make_boot_handler
from provisioner.store import Store
from provisioner.xapi import XenApiDriver

DEMO_POOL = "demo-pool"
DEMO_MEDIA = "xs-8.4-demo"
SOURCE_VERSION, TARGET_VERSION, TARGET_BUILD = "8.2.1", "8.4.0", "demo-84"
NETWORK_FIRST = "network-first"
BIOS, UEFI = "bios", "uefi"
PROFILES = ((NETWORK_FIRST, BIOS), ("redfish", BIOS), ("ipmi", BIOS), ("redfish", UEFI))
"""(boot method, firmware) of host i: PROFILES[i % 4]; the master is network-first."""
BMC_USER, BMC_PASSWORD = "admin", "bmc-7r4k-Secret"  # the simulated BMCs' (never printed)


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
    verified: bool = False
    boot_method: str = NETWORK_FIRST
    firmware: str = BIOS


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


def demo_config(workdir: Path) -> Config:
    """Loopback ports chosen up front, so the URLs in the boot configs are the ones really served."""
    http_port = netports.free_port(socket.SOCK_STREAM)
    (workdir / "tftp_root").mkdir(parents=True, exist_ok=True)
    return load_config(file=None, environ={}, overrides={
        "data_dir": workdir / "data", "bind_address": "127.0.0.1", "http_port": http_port,
        "tftp_port": netports.free_port(socket.SOCK_DGRAM), "tftp_root": workdir / "tftp_root",
        "public_url": f"http://127.0.0.1:{http_port}", "pxelinux_http": True,
    })


def boot_methods(macs: list[str]) -> dict[str, str]:
    """MAC -> the demo host's boot method (PROFILES in turn, the master first)."""
    return {mac: PROFILES[i % len(PROFILES)][0] for i, mac in enumerate(macs)}


def firmwares(macs: list[str]) -> dict[str, str]:
    """MAC -> the demo host's firmware mode (PROFILES in turn)."""
    return {mac: PROFILES[i % len(PROFILES)][1] for i, mac in enumerate(macs)}


def _boot_order(method: str, firmware: str) -> str:
    """The simulator's boot state (bootorder.SPECS): a PXE-first site, else the disk first."""
    return f"{firmware}-{'network' if method == NETWORK_FIRST else 'disk'}-first"


def _uefi_order(machine) -> str:
    """A UEFI machine's boot state in a line: BootOrder, BootNext, a pending BMC override."""
    view = machine.bootorder.describe()
    text = "BootOrder " + ", ".join(view.get("order", []))
    if view.get("boot_next") is not None:
        text += f", BootNext {view['boot_next']:04X}"
    override = view.get("override")
    if override is None:
        return text + "; no BMC override pending"
    return text + f"; BMC override {override['device']} ({'once' if override['once'] else 'continuous'})"


def _free_udp_port() -> int:
    return netports.free_port(socket.SOCK_DGRAM)


def start_bmcs(world, store: Store, methods: dict[str, str], state_dir: Path,
               firmware: dict[str, str] | None = None) -> list:
    """A BMC front for each redfish/ipmi host, registered with its credentials and boot method; the fronts
    started (stop each at the end)."""
    fronts: list = []
    redfish = {mac: m for mac, m in methods.items() if m == "redfish"}
    try:
        for mac, method in methods.items():
            if method == "ipmi":
                front = IpmiFront(world.bmc(mac), BMC_USER, BMC_PASSWORD, _free_udp_port()).start()
                fronts.append(front)
                registry.set_bmc(store, mac, kind="ipmi", address=front.address, username=BMC_USER,
                                 password=BMC_PASSWORD)
        if redfish:
            front = RedfishFront(BMC_USER, BMC_PASSWORD, state_dir=state_dir)
            ids = {mac: front.add(world.bmc(mac), mac, boot_mode="UEFI" if (firmware or {}).get(mac) == UEFI
                                  else "Legacy") for mac in redfish}
            fronts.append(front.start())
            for mac, system_id in ids.items():
                registry.set_bmc(store, mac, kind="redfish", address=front.url, username=BMC_USER,
                                 password=BMC_PASSWORD, system_id=system_id)
        for mac, method in methods.items():
            registry.set_boot_method(store, mac, method)
    except BaseException:
        for front in fronts:
            front.stop()
        raise
    return fronts


def _verify(store: Store, driver: XenApiDriver, run_report: dict) -> list[HostResult]:
    """The demo's own check of what the coordinator reports: version and build in XAPI, the attempt, and exactly
    one answer-file fetch per host (no reinstall loop)."""
    now = {h.mac: h for h in driver.hosts()}
    results = []
    for rh in run_report["hosts"]:
        attempt = store.get_attempt(rh["attempt_id"]) if rh["attempt_id"] else None
        fetches = [e for e in store.events(mac=rh["mac"], kind="attempt.fetch")
                   if attempt and e["details"].get("attempt") == attempt.id and e["details"].get("what") == "answerfile"]
        info = now.get(rh["mac"])
        result = HostResult(rh["name"], rh["mac"], rh["role"], rh["before_version"] or "",
                            info.product_version if info else "?", attempt.state if attempt else "-", len(fetches))
        result.verified = bool(info and info.product_version == TARGET_VERSION and info.build_number == TARGET_BUILD
                               and attempt and attempt.state == states.SUCCEEDED and len(fetches) == 1
                               and rh["step"] == states.STEP_DONE)
        results.append(result)
    return results


def run_demo(workdir: Path | None = None, *, hosts: int = 4, speed: float = 120.0,
             say: Callable[[str], None] = print) -> list[HostResult]:
    """Run the demo; raises DemoFailure unless every host is verified at the target version."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="provisioner-demo-"))
    config = demo_config(workdir)
    store = Store.from_config(config)
    say(f"demo data in {workdir}")
    added = media.import_media(store, config, DEMO_MEDIA, synthetic_media_tree(workdir / "media-tree"))
    say(f"media {added.name}: {added.product_name} {added.product_version} build {added.build}")
    runtime = Runtime(config, store).start()
    say(f"provisioner serving TFTP on udp 127.0.0.1:{config.tftp_port} and HTTP on {runtime.http.url}")
    world = new_world(Clock(speed))
    build_pool(world, DEMO_POOL, hosts=hosts, version=SOURCE_VERSION, vms_per_host=2)
    macs = [h.mac for h in world.pools[DEMO_POOL].hosts]
    methods, firmware = boot_methods(macs), firmwares(macs)
    # network-first hosts: a PXE-first site; the others boot their disk unless their BMC overrides it once; a
    # UEFI machine's network boot loads GRUB (what DHCP hands client-arch 7, docs/lab.md), the others pxelinux
    names = {h.mac.lower(): h.name for h in world.pools[DEMO_POOL].hosts if firmware[h.mac] == UEFI}

    def firmware_pass(kind: str, mac: str, details: dict) -> None:  # what a UEFI host's firmware tries, each boot
        if kind == EV_FIRMWARE and mac.lower() in names:
            say(f"  {names[mac.lower()]} (UEFI firmware) power cycle {details['cycle']}, boot {details['boot']}: "
                f"tries {' -> '.join(details['devices'])}")

    handler = make_boot_handler(runtime.tftp.address, clock=world.clock, http_base=runtime.http.url,
                                boot_orders={mac: _boot_order(m, firmware[mac]) for mac, m in methods.items()},
                                loaders={mac: "grub" for mac in macs if firmware[mac] == UEFI},
                                on_event=firmware_pass)
    world.boot_handler = handler
    sim = serve_world(world)
    pin = sim.master_fingerprint()  # the demo made the pool: it knows its certificate (docs/xapi.md "TLS")
    driver = wiring.driver(sim.master_url(), "root", "demo", timeout=5, trust=coord_pools.check_trust(
        sim.master_url(), pin, None))
    say(f"simulated pool {DEMO_POOL}: {hosts} hosts at {SOURCE_VERSION}, master {sim.master_url()} (certificate "
        f"SHA-256 {pin}), clock x{speed:g}")
    results, fronts = [], []
    try:
        coord_pools.add_pool(store, DEMO_POOL, sim.master_url(), "root", "demo", fingerprint=pin)
        found = coord_pools.discover(store, DEMO_POOL, driver)
        for h in driver.hosts():
            # XAPI has no field for PRIMARY_DISK (docs/installer.md "The boot disk is not in XAPI"): the demo registers
            # a lab by-id path
            registry.update_host(store, h.mac, {"disk": f"/dev/disk/by-id/scsi-sim-{h.uuid[:8]}",
                                                "firmware": firmware.get(h.mac, BIOS)})
        say(f"registered {len(found.added)} hosts from XAPI by their management PIF MACs")
        fronts = start_bmcs(world, store, methods, workdir / "redfish", firmware)
        uefi = sorted((h.name, h.mac) for h in store.list_hosts(pool=DEMO_POOL) if firmware.get(h.mac) == UEFI)
        for name, mac in sorted((h.name, h.mac) for h in store.list_hosts(pool=DEMO_POOL)):
            order = "network first" if methods[mac] == NETWORK_FIRST else f"disk first, {methods[mac]} BMC"
            say(f"  {name} {mac}: boot method {methods[mac]} ({firmware[mac].upper()}, {order})")
        for name, mac in uefi:
            say(f"  {name} (UEFI) before: {_uefi_order(handler.machine(mac))}")
        plan = make_plan(store, DEMO_POOL, DEMO_MEDIA, driver)
        say(output.plan(plan))
        run = start_run(store, DEMO_POOL, DEMO_MEDIA, driver)
        started = world.clock.now()
        done = Runner(store, config, run.id, driver, clock=world.clock, say=lambda line: say(
            f"  [{(world.clock.now() - started) / 60:6.1f} sim min] {line}")).run()
        run_report = report(store, done.id)
        say(output.run_report(run_report))
        for name, mac in uefi:  # the installer put its entry first; the one-time override was used up
            say(f"  {name} (UEFI) after: {_uefi_order(handler.machine(mac))}")
        results = _verify(store, driver, run_report)
        for result in results:
            result.boot_method = methods.get(result.mac, NETWORK_FIRST)
            result.firmware = firmware.get(result.mac, BIOS)
        loops = [mac for mac, m in handler.machines.items() if m.installs() > 1]
        if loops:
            raise DemoFailure(f"reinstall loop on {', '.join(loops)}")
    finally:
        for front in fronts:
            front.stop()
        driver.close()
        handler.stop()
        sim.stop()
        runtime.stop()
    if not all(r.verified for r in results):
        raise DemoFailure("not every host was verified at the target version")
    return results
