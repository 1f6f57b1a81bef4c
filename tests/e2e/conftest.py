"""The e2e lab fixture: namespace + tap, dnsmasq (DHCP only), `provisioner serve`, data set up with the real CLI.

Needs root, /dev/net/tun and the Debian kernel + Xen unpacked by `make e2e-cache` (PROVISIONER_E2E_CACHE,
default ./.e2e-cache); without them every e2e test is skipped with a message saying which is missing, or
fails when PROVISIONER_E2E_REQUIRED is set (`make e2e` sets it: CI must not skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import e2e_lab

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("qemu-system-x86_64", "dnsmasq", "ip", "cpio")


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: boots real firmware, boot loaders, Xen and Linux in QEMU (make e2e)")


def _cache() -> Path:
    return Path(os.environ.get("PROVISIONER_E2E_CACHE") or REPO / ".e2e-cache")


def _missing() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "e2e lab needs root (network namespace, tap device): run `make e2e` as root"
    if not os.path.exists("/dev/net/tun"):
        return "e2e lab needs /dev/net/tun"
    if e2e_lab.find_artifacts(_cache()) is None:
        return f"Debian kernel/Xen not unpacked under {_cache()}: run `make e2e` (it downloads them)"
    tools = [t for t in TOOLS if shutil.which(t) is None]
    files = [str(p) for p in (e2e_lab.OVMF_CODE, e2e_lab.OVMF_VARS, e2e_lab.EFI_ROM, e2e_lab.BUSYBOX)
             if not p.exists()]
    if tools or files:
        return f"e2e lab tools missing ({', '.join(tools + files)}): run `make e2e-deps`"
    return None


class Lab:
    """The running lab: CLI access with the lab's environment, the store, VM boots."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir, self.env = workdir, env
        self.db_path = Path(env["PROVISIONER_DATA_DIR"]) / "provisioner.db"
        self.server: e2e_lab.Process | None = None
        self.dnsmasq: e2e_lab.Process | None = None

    def cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "provisioner", *args], env=self.env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"provisioner {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
        return r.stdout

    def store(self):
        from provisioner.store import Store
        return Store(self.db_path)

    def events(self, since_id: int = 0, **filters) -> list[dict]:
        return self.store().events(since_id=since_id, limit=100_000, **filters)

    def last_event_id(self) -> int:
        events = self.events()
        return events[-1]["id"] if events else 0

    def boot(self, name: str, mac: str, firmware: str, disk=None) -> e2e_lab.Boot:
        return e2e_lab.start_vm(name, mac, firmware, self.workdir, disk)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    why = _missing()
    if why and os.environ.get("PROVISIONER_E2E_REQUIRED"):
        pytest.fail(f"PROVISIONER_E2E_REQUIRED is set (make e2e, CI) but {why}")
    if why:
        pytest.skip(why)
    artifacts = e2e_lab.find_artifacts(_cache())
    workdir = tmp_path_factory.mktemp("e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update({
        "PROVISIONER_DATA_DIR": str(workdir / "data"),
        "PROVISIONER_TFTP_ROOT": str(workdir / "tftp_root"),
        "PROVISIONER_BIND_ADDRESS": e2e_lab.SERVER_IP,
        "PROVISIONER_TFTP_PORT": "69",
        "PROVISIONER_HTTP_PORT": str(e2e_lab.HTTP_PORT),
        "PROVISIONER_PUBLIC_URL": f"http://{e2e_lab.SERVER_IP}:{e2e_lab.HTTP_PORT}",
        "PROVISIONER_LOG_LEVEL": "INFO",
    })
    (workdir / "tftp_root").mkdir()
    lab = Lab(workdir, env)
    lab.cli("tftp-root", "prepare")
    initrd = e2e_lab.build_initrd(workdir / "standin.img", artifacts)
    tree = e2e_lab.build_media_tree(workdir / "media-8.4", artifacts, initrd)
    lab.cli("media", "add", "xs84", str(tree))
    e2e_lab.netns_up()
    try:
        lab.dnsmasq = e2e_lab.start_dnsmasq(workdir)
        lab.server = e2e_lab.start_server(env, workdir)
        deadline = time.time() + 30
        while not lab.events(kind="server.started"):
            assert lab.server.proc.poll() is None, f"provisioner serve exited:\n{lab.server.text()}"
            assert time.time() < deadline, f"provisioner serve did not start:\n{lab.server.text()}"
            time.sleep(0.2)
        yield lab
    finally:
        for proc in (lab.server, lab.dnsmasq):
            if proc is not None:
                proc.stop()
        e2e_lab.netns_down()
