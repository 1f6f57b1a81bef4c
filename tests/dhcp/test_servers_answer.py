"""Each generated snippet loaded into the real DHCP server (kea-dhcp4, ISC dhcpd, dnsmasq) in a network namespace,
and asked by a PXE client's DHCPDISCOVER (tests/support/dhcp_probe.py, its own packet code): a registered MAC gets
next-server and the boot file of its architecture (option 93) or, with iPXE chosen, the iPXE script URL for user
class "iPXE"; an unregistered MAC gets an address and no boot file. Needs root (network namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner import registry
from provisioner.config import load_config
from provisioner.dhcp import dnsmasq, isc, kea
from provisioner.dhcp.plan import build_plan

NS = f"provisioner-dhcp-test-{os.getpid()}"
CLIENT_NS = f"provisioner-dhcp-client-{os.getpid()}"  # the client apart, as on a network: a broadcast sent in the
# server's own namespace leaves with one of its local addresses as source and is dropped as martian on arrival
PROBE = Path(__file__).resolve().parents[1] / "support" / "dhcp_probe.py"
BIOS, UEFI, STRANGER = "52:54:00:77:00:01", "52:54:00:77:00:02", "52:54:00:77:00:99"
IPXE_URL = "http://10.0.0.5/boot/ipxe/${net0/mac:hexhyp}?platform=${platform}"


def _netns(*argv: str, ns: str = NS, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace (the real servers bind port 67 on a veth)")
    for ns in (NS, CLIENT_NS):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for argv in (("ip", "link", "set", "lo", "up"), ("ip", "link", "add", "srv0", "type", "veth", "peer", "name", "cli0"),
                     ("ip", "link", "set", "cli0", "netns", CLIENT_NS),
                     ("ip", "addr", "add", "10.88.0.1/24", "dev", "srv0"), ("ip", "link", "set", "srv0", "up")):
            _netns(*argv)
        _netns("ip", "link", "set", "cli0", "up", ns=CLIENT_NS)
        yield NS
    finally:
        for ns in (NS, CLIENT_NS):
            subprocess.run(["ip", "netns", "del", ns])


@pytest.fixture
def plan(store, tmp_path):
    registry.add_host(store, {"mac": BIOS, "name": "bios", "pool": "p"})
    registry.add_host(store, {"mac": UEFI, "name": "uefi", "pool": "p", "firmware": "uefi"})
    cfg = load_config(file=None, environ={}, overrides={"data_dir": tmp_path / "data", "public_url": "http://10.0.0.5"})
    return build_plan(store, cfg, ipxe=True)


def _ask(mac: str, arch: int, user_class: str | None = None) -> dict:
    out = _netns(sys.executable, str(PROBE), "cli0", mac, str(arch), *([user_class] if user_class else []),
                 ns=CLIENT_NS, timeout=30).stdout.strip()
    assert out, f"no DHCP answer for {mac} arch {arch}"
    return json.loads(out)


def _serve(argv: list[str], log: Path, env=None) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(["ip", "netns", "exec", NS, *argv], stdout=out, stderr=subprocess.STDOUT, env=env)
    time.sleep(1.5)  # the servers open their sockets at start; a probe repeats its DISCOVER anyway
    assert proc.poll() is None, log.read_text()
    return proc


def _check_answers(plan) -> None:
    bios, uefi = _ask(BIOS, 0), _ask(UEFI, 7)
    assert (bios["siaddr"], bios["file"]) == ("10.0.0.5", "pxelinux.0"), bios
    assert (uefi["siaddr"], uefi["file"]) == ("10.0.0.5", "grubx64.efi"), uefi
    assert _ask(UEFI, 9)["file"] == "grubx64.efi"
    assert _ask(BIOS, 0, "iPXE")["file"] == IPXE_URL
    stranger = _ask(STRANGER, 0)
    assert stranger["yiaddr"].startswith("10.88.0.") and stranger["file"] == "", stranger


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_kea_answers_from_the_snippet(netns, plan, tmp_path):
    conf = {"Dhcp4": {"interfaces-config": {"interfaces": ["srv0"], "dhcp-socket-type": "raw"},
                      "lease-database": {"type": "memfile", "persist": False},
                      "subnet4": [{"id": 1, "subnet": "10.88.0.0/24", "pools": [{"pool": "10.88.0.100-10.88.0.200"}]}],
                      **json.loads(kea.render(plan))["Dhcp4"]}}
    path = tmp_path / "kea.conf"
    path.write_text(json.dumps(conf))
    env = {**os.environ, "KEA_LOCKFILE_DIR": str(tmp_path), "KEA_PIDFILE_DIR": str(tmp_path)}
    proc = _serve(["kea-dhcp4", "-c", str(path)], tmp_path / "kea.log", env=env)
    try:
        _check_answers(plan)
    finally:
        _stop(proc)


def test_isc_dhcpd_answers_from_the_snippet(netns, plan, tmp_path):
    path = tmp_path / "dhcpd.conf"
    path.write_text("subnet 10.88.0.0 netmask 255.255.255.0 { range 10.88.0.100 10.88.0.200; }\n" + isc.render(plan))
    (tmp_path / "dhcpd.leases").write_text("")
    proc = _serve(["dhcpd", "-f", "-d", "-4", "-cf", str(path), "-lf", str(tmp_path / "dhcpd.leases"),
                   "-pf", str(tmp_path / "dhcpd.pid"), "srv0"], tmp_path / "dhcpd.log")
    try:
        _check_answers(plan)
    finally:
        _stop(proc)


def test_dnsmasq_answers_from_the_snippet(netns, plan, tmp_path):
    path = tmp_path / "dnsmasq.conf"
    path.write_text(dnsmasq.render(plan) + "\n".join([
        "port=0", "interface=srv0", "bind-interfaces", "dhcp-range=10.88.0.100,10.88.0.200,1h", "no-resolv",
        "no-hosts", f"dhcp-leasefile={tmp_path / 'leases'}", f"pid-file={tmp_path / 'pid'}"]) + "\n")
    proc = _serve(["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--log-dhcp", f"--conf-file={path}"],
                  tmp_path / "dnsmasq.log")
    try:
        _check_answers(plan)
    finally:
        _stop(proc)
