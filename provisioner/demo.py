"""`provisioner demo`: the boot service end to end on loopback, with no hardware.

A throw-away data dir, a synthetic XenServer 8.4 media tree, a demo pool of registered hosts, and the real
`serve` runtime (TFTP + HTTP on 127.0.0.1). Each host, master first, is armed and then "powers on" like PXE
firmware: TFTP-fetch its per-MAC pxelinux config, follow it over HTTP (hypervisor, kernel, install.img),
fetch and check the answer file and the media's .treeinfo, run the installation-start and -complete
scripts with /bin/sh as the installer would, and reboot: the second network boot must be a local boot.
The XAPI side (host shutdown, evacuation, rejoin) comes with the simulator; this shows every byte a booting
host gets from us.
"""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import requests

from provisioner import answerfile, attempts, media, registry, states, tftp
from provisioner.config import Config, load_config
from provisioner.runtime import Runtime
from provisioner.store import Store

DEMO_POOL = "demo-pool"
DEMO_MEDIA = "xs-8.4-demo"
DEMO_HOSTS = (  # master first, as the vendor's rolling pool upgrade requires
    ("52:54:00:de:00:01", "xs-master", "/dev/disk/by-id/scsi-3600508b1001c0001"),
    ("52:54:00:de:00:02", "xs-member-1", "/dev/disk/by-id/scsi-3600508b1001c0002"),
    ("52:54:00:de:00:03", "xs-member-2", "/dev/disk/by-id/scsi-3600508b1001c0003"),
)


class DemoFailure(RuntimeError):
    """Something a real host would have hit went wrong; the message says what."""


@dataclass
class HostResult:
    name: str
    mac: str
    state: str = ""
    exit_code: int | None = None
    second_boot: str = ""
    seconds: float = 0.0


def synthetic_media_tree(root: Path, version: str = "8.4.0", build: str = "demo-1") -> Path:
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


def _get(url: str) -> requests.Response:
    response = requests.get(url, timeout=10)
    if response.status_code != 200:
        raise DemoFailure(f"GET {url} answered {response.status_code}")
    return response


def _run_script(body: bytes, workdir: Path, *args: str) -> None:
    path = workdir / "script.sh"
    path.write_bytes(body)
    done = subprocess.run(["/bin/sh", str(path), *args], capture_output=True, timeout=60)
    if done.returncode != 0:
        raise DemoFailure(f"installer script exited {done.returncode}: {done.stderr.decode()[:300]}")


def network_boot(config: Config, store: Store, mac: str, workdir: Path, say: Callable[[str], None]) -> str:
    """One power-on of a BIOS host, as its firmware and the installer would behave. Returns 'installer'
    or 'local boot'."""
    name = f"pxelinux.cfg/01-{mac.replace(':', '-')}"
    body = tftp.fetch("127.0.0.1", config.tftp_port, name).decode()
    if "localboot" in body:
        say(f"    TFTP {name}: local boot")
        return "local boot"
    found = re.search(r"answerfile=(\S+)", body)
    if not found:
        raise DemoFailure(f"{name} is neither a local boot nor an installer entry:\n{body}")
    say(f"    TFTP {name}: installer entry")
    for url in re.findall(r"http://\S+", body):
        if "/media/" in url:
            size = len(_get(url).content)
            say(f"    HTTP {url.split('/media/')[1]} ({size:,} bytes)")
    text = _get(found.group(1)).text
    parsed = answerfile.parse_upgrade(text)  # what the installer would do with it, checked our strictest way
    say(f"    answer file: upgrade of {parsed.disk} from {parsed.sources[0]}")
    treeinfo = _get(parsed.sources[0].rstrip("/") + "/.treeinfo").text
    version = re.search(r"product_version\s*=\s*(\S+)", treeinfo).group(1)
    _run_script(_get(parsed.scripts[answerfile.STAGE_START]).content, workdir)
    say(f"    installation-start script run: window closed; installing XenServer {version} ...")
    time.sleep(0.2)
    _run_script(_get(parsed.scripts[answerfile.STAGE_COMPLETE]).content, workdir, "0")
    say("    installation-complete script run with 0; rebooting")
    return "installer"


def run_demo(workdir: Path | None = None, say: Callable[[str], None] = print) -> list[HostResult]:
    """Run the demo; raises DemoFailure if any host does not upgrade exactly once."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="provisioner-demo-"))
    config = demo_config(workdir)
    store = Store(config.db_path)
    say(f"demo data in {workdir}")
    added = media.import_media(store, config, DEMO_MEDIA, synthetic_media_tree(workdir / "media-tree"))
    say(f"media {added.name}: {added.product_name} {added.product_version} build {added.build}")
    for mac, name, disk in DEMO_HOSTS:
        registry.add_host(store, {"mac": mac, "name": name, "pool": DEMO_POOL, "disk": disk})
    say(f"registered {len(DEMO_HOSTS)} hosts in pool {DEMO_POOL}")
    runtime = Runtime(config, store).start()
    say(f"serving TFTP on udp 127.0.0.1:{config.tftp_port} and HTTP on {runtime.http.url}")
    results = []
    try:
        for mac, name, _ in DEMO_HOSTS:
            started = time.monotonic()
            say(f"{name} ({mac}): arm for {DEMO_MEDIA}, power on")
            attempts.arm(store, config, mac, DEMO_MEDIA)
            if network_boot(config, store, mac, workdir, say) != "installer":
                raise DemoFailure(f"{name} was armed but did not get the installer")
            attempt = attempts.current_attempt(store, mac)
            say(f"  {name} after reboot:")
            second = network_boot(config, store, mac, workdir, say)
            if second != "local boot" or attempt.state != states.SUCCEEDED:
                raise DemoFailure(f"{name}: attempt {attempt.state}, second boot {second}: reinstall loop!")
            results.append(HostResult(name, mac, attempt.state, attempt.exit_code, second,
                                      time.monotonic() - started))
    finally:
        runtime.stop()
    timeline = [e for e in store.events(mac=DEMO_HOSTS[0][0]) if e["kind"].startswith("attempt.")]
    say(f"timeline of {DEMO_HOSTS[0][1]}: " + ", ".join(
        e["details"].get("what", e["kind"].split(".")[1]) for e in timeline))
    return results
