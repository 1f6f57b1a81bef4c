"""Issue 23 acceptance in QEMU: (1) the lab's dnsmasq configured ONLY from `provisioner dhcp-config --format dnsmasq`
(plus the interface and range lines the lab needs) sends a BIOS host to our pxelinux.0 and it installs; (2) a
separate DHCP server with no boot options hands out the address and `serve --proxy-dhcp` answers the boot file.

Its own lab (not the session `lab` fixture, whose dnsmasq answers every PXE client): a namespace with a bridge that
carries the VMs' tap, our server at 10.77.0.1 and a veth to a second namespace, the "site", whose DHCP server is at
10.77.0.2, as a real site's DHCP server is another machine (docs/dhcp.md "ProxyDHCP", docs/lab.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import e2e_lab

pytestmark = pytest.mark.e2e

NS = f"provisioner-e2e-dhcp-{os.getpid()}"
SITE_NS = f"provisioner-e2e-site-{os.getpid()}"
BRIDGE = "e2ebr0"
SITE_IP = "10.77.0.2"
SNIPPET_MAC = "52:54:00:e2:d0:01"
PROXY_MAC = "52:54:00:e2:d0:02"
STRANGER_MAC = "52:54:00:e2:d0:03"
UEFI_MAC = "52:54:00:e2:d0:04"
BOOT_TIMEOUT = 300  # software emulation; a boot takes ~35-60 s


def _ip(*argv: str, ns: str = NS) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "ip", *argv], check=True, stdout=subprocess.DEVNULL)


def _net_up() -> None:
    """NS: tap + veth end on a bridge at 10.77.0.1; SITE_NS: the other veth end at 10.77.0.2."""
    for ns in (NS, SITE_NS):
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        _ip("link", "set", "lo", "up", ns=ns)
    _ip("link", "add", BRIDGE, "type", "bridge")
    _ip("tuntap", "add", e2e_lab.TAP, "mode", "tap")
    _ip("link", "add", "e2eveth0", "type", "veth", "peer", "name", "e2eveth1")
    _ip("link", "set", "e2eveth1", "netns", SITE_NS)
    for dev in (e2e_lab.TAP, "e2eveth0"):
        _ip("link", "set", dev, "master", BRIDGE)
        _ip("link", "set", dev, "up")
    _ip("addr", "add", f"{e2e_lab.SERVER_IP}/24", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")
    _ip("addr", "add", f"{SITE_IP}/24", "dev", "e2eveth1", ns=SITE_NS)
    _ip("link", "set", "e2eveth1", "up", ns=SITE_NS)


def _net_down() -> None:
    for ns in (NS, SITE_NS):
        subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class DhcpLab:
    def __init__(self, workdir: Path, env: dict[str, str]):
        self.workdir, self.env = workdir, env
        self.db_path = Path(env["PROVISIONER_DATA_DIR"]) / "provisioner.db"
        self.running: list[e2e_lab.Process] = []

    def cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "provisioner", *args], env=self.env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"provisioner {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
        return r.stdout

    def events(self, since_id: int = 0, **filters) -> list[dict]:
        from provisioner.store import Store
        return Store(self.db_path).events(since_id=since_id, limit=100_000, **filters)

    def start(self, argv: list[str], log: str, ns: str = NS, env=None) -> e2e_lab.Process:
        proc = e2e_lab.Process(argv, self.workdir / log, env=env, netns=ns)
        self.running.append(proc)
        return proc

    def serve(self, *extra: str) -> e2e_lab.Process:
        since = self.events()[-1]["id"] if self.events() else 0
        proc = self.start([sys.executable, "-m", "provisioner", "serve", "--allow-root", *extra],
                          f"serve{'-'.join(extra)}.log", env=self.env)
        deadline = time.time() + 30
        while not self.events(since_id=since, kind="server.started"):
            assert proc.proc.poll() is None, f"provisioner serve exited:\n{proc.text()}"
            assert time.time() < deadline, f"provisioner serve did not start:\n{proc.text()}"
            time.sleep(0.2)
        return proc

    def stop(self, proc: e2e_lab.Process) -> None:
        proc.stop()
        self.running.remove(proc)


@pytest.fixture(scope="module")
def dhcp_lab(tmp_path_factory):
    cache = Path(os.environ.get("PROVISIONER_E2E_CACHE") or Path(__file__).resolve().parents[2] / ".e2e-cache")
    why = ("needs root (network namespaces)" if os.geteuid() != 0
           else None if e2e_lab.find_artifacts(cache) else f"Debian kernel/Xen not unpacked under {cache}: make e2e")
    if why and os.environ.get("PROVISIONER_E2E_REQUIRED"):
        pytest.fail(f"PROVISIONER_E2E_REQUIRED is set (make e2e, CI) but {why}")
    if why:
        pytest.skip(why)
    artifacts = e2e_lab.find_artifacts(cache)
    workdir = tmp_path_factory.mktemp("e2e-dhcp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update({"PROVISIONER_DATA_DIR": str(workdir / "data"), "PROVISIONER_TFTP_ROOT": str(workdir / "tftp_root"),
                "PROVISIONER_BIND_ADDRESS": e2e_lab.SERVER_IP, "PROVISIONER_TFTP_PORT": "69",
                "PROVISIONER_HTTP_PORT": str(e2e_lab.HTTP_PORT),
                "PROVISIONER_PUBLIC_URL": f"http://{e2e_lab.SERVER_IP}:{e2e_lab.HTTP_PORT}",
                "PROVISIONER_LOG_LEVEL": "INFO"})
    (workdir / "tftp_root").mkdir()
    lab = DhcpLab(workdir, env)
    lab.cli("tftp-root", "prepare")
    initrd = e2e_lab.build_initrd(workdir / "standin.img", artifacts)
    lab.cli("media", "add", "xs84", str(e2e_lab.build_media_tree(workdir / "media-8.4", artifacts, initrd)))
    _net_up()
    try:
        yield lab
    finally:
        for proc in list(lab.running):
            proc.stop()
        _net_down()


# A PXE client's DHCPDISCOVER (RFC 2131 fixed part, magic cookie, options 53 DISCOVER, 93 arch 0, 60 "PXEClient",
# 97 client UUID), sent from the site namespace as broadcast, so both DHCP servers see it as from a booting host.
DISCOVER = r"""
import socket, struct, sys
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
packet = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, 0x1234abcd, 0, 0x8000, bytes(4), bytes(4), bytes(4),
                     bytes(4), mac + bytes(10), bytes(64), bytes(128))
packet += bytes([99, 130, 83, 99, 53, 1, 1, 93, 2, 0, 0, 60, 9]) + b"PXEClient" + bytes([97, 17, 0]) + bytes(16) + b"\xff"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"e2eveth1")
s.bind(("0.0.0.0", 68))
s.sendto(packet, ("255.255.255.255", 67))
"""


def _discover(mac: str) -> None:
    subprocess.run(["ip", "netns", "exec", SITE_NS, sys.executable, "-c", DISCOVER, mac], check=True, timeout=30)


def _install(lab: DhcpLab, name: str, mac: str) -> tuple[str, list[dict], float]:
    """Boot `mac` (BIOS) until QEMU ends; (console, the server's events since power-on, seconds)."""
    since = lab.events()[-1]["id"]
    boot = e2e_lab.start_vm(name, mac, "bios", lab.workdir, netns=NS)
    try:
        code = boot.process.wait(BOOT_TIMEOUT)
    finally:
        boot.process.stop()
    console = boot.process.text()
    assert code is not None, f"{name}: QEMU still running after {BOOT_TIMEOUT} s:\n{console[-3000:]}"
    return console, lab.events(since_id=since), time.time() - boot.started


def _assert_installed(console: str, events: list[dict], mac: str) -> None:
    assert "STANDIN: installation-complete exit 0" in console, console[-3000:]
    served = {e["details"].get("file", "").lstrip("/") for e in events if e["kind"] == "tftp.sent"}
    assert {"pxelinux.0", f"pxelinux.cfg/01-{mac.replace(':', '-')}"} <= served, served
    assert len(e2e_lab.fetches(events, mac, "answerfile")) == 1


def test_dnsmasq_configured_only_from_the_generated_snippet(dhcp_lab):
    lab = dhcp_lab
    lab.cli("hosts", "add", SNIPPET_MAC, "--name", "e2e-snippet", "--pool", "e2e", "--disk", "/dev/sda")
    lab.cli("hosts", "arm", SNIPPET_MAC, "--media", "xs84")
    lab.cli("hosts", "add", UEFI_MAC, "--name", "e2e-snippet-uefi", "--pool", "e2e", "--disk", "/dev/sda",
            "--firmware", "uefi")
    conf = lab.workdir / "site-dnsmasq.conf"
    lab.cli("dhcp-config", "--format", "dnsmasq", "--output", str(conf))
    snippet = conf.read_text()
    # Only the lines a lab needs to be a DHCP server at all: no boot option of our own.
    conf.write_text(snippet + "\n".join([
        "port=0", f"interface={BRIDGE}", "bind-interfaces", "dhcp-range=10.77.0.100,10.77.0.200,1h", "no-resolv",
        "no-hosts", "log-dhcp", f"dhcp-leasefile={lab.workdir / 'snippet.leases'}"]) + "\n")
    dnsmasq = lab.start(["dnsmasq", "--no-daemon", f"--conf-file={conf}", f"--pid-file={lab.workdir / 'snippet.pid'}"],
                        "snippet-dnsmasq.log")
    server = lab.serve()
    try:
        console, events, seconds = _install(lab, "snippet-install", SNIPPET_MAC)
        _assert_installed(console, events, SNIPPET_MAC)
        print(f"\n[e2e] dnsmasq from the generated snippet: installed in {seconds:.1f} s")
        # UEFI (OVMF's iPXE EFI ROM sends client-arch 7): the snippet's option-93 rule gives it our GRUB, which asks
        # for its per-MAC config; that is the DHCP part, so the boot stops there.
        since = lab.events()[-1]["id"]
        boot = e2e_lab.start_vm("snippet-uefi", UEFI_MAC, "uefi", lab.workdir, netns=NS)
        wanted = {"grubx64.efi", f"grub/grub.cfg-01-{UEFI_MAC.replace(':', '-')}"}
        try:
            deadline = time.time() + BOOT_TIMEOUT
            while not wanted <= {e["details"].get("file", "").lstrip("/")
                                 for e in lab.events(since_id=since, kind="tftp.sent")}:
                assert time.time() < deadline and boot.process.proc.poll() is None, boot.process.text()[-3000:]
                time.sleep(0.5)
            print(f"[e2e] UEFI host: grubx64.efi and its per-MAC GRUB config {time.time() - boot.started:.1f} s "
                  "after power-on")
        finally:
            boot.process.stop()
    finally:
        lab.stop(server)
        lab.stop(dnsmasq)
    assert "DHCPACK(" in dnsmasq.text() and SNIPPET_MAC in dnsmasq.text()


def test_proxy_dhcp_answers_the_boot_file_next_to_a_separate_dhcp_server(dhcp_lab):
    lab = dhcp_lab
    lab.cli("hosts", "add", PROXY_MAC, "--name", "e2e-proxy", "--pool", "e2e", "--disk", "/dev/sda")
    lab.cli("hosts", "arm", PROXY_MAC, "--media", "xs84")
    # The site's DHCP server: addresses only, no next-server, no boot file.
    site = lab.start(["dnsmasq", "--no-daemon", "--port=0", "--interface=e2eveth1", "--bind-interfaces",
                      "--dhcp-range=10.77.0.100,10.77.0.200,1h", "--no-resolv", "--no-hosts", "--log-dhcp",
                      f"--dhcp-leasefile={lab.workdir / 'site.leases'}", f"--pid-file={lab.workdir / 'site.pid'}"], "site-dnsmasq.log",
                     ns=SITE_NS)
    server = lab.serve("--proxy-dhcp")
    proxy_log = Path(lab.env["PROVISIONER_DATA_DIR"]) / "proxy-dhcp" / "dnsmasq.log"
    try:
        assert "ProxyDHCP (dnsmasq pid" in server.text(), server.text()
        console, events, seconds = _install(lab, "proxy-install", PROXY_MAC)
        _assert_installed(console, events, PROXY_MAC)
        print(f"\n[e2e] ProxyDHCP next to a separate DHCP server: installed in {seconds:.1f} s")
        # A PXE client we do not know: the proxy stays silent to it (dhcp-ignore=tag:!known), the site answers it.
        _discover(STRANGER_MAC)
        deadline = time.time() + 20
        while STRANGER_MAC not in proxy_log.read_text() or STRANGER_MAC not in site.text():
            assert time.time() < deadline, f"the DISCOVER did not arrive:\n{proxy_log.read_text()[-1500:]}"
            time.sleep(0.2)
        proxy_text = proxy_log.read_text()
    finally:
        lab.stop(server)
        lab.stop(site)
    # The address came from the site's server, which offered no boot file; the boot file came from our proxy.
    assert "DHCPACK(e2eveth1)" in site.text() and PROXY_MAC in site.text(), site.text()[-2000:]
    assert "proxy" in proxy_text.lower() and PROXY_MAC in proxy_text, proxy_text[-2000:]
    assert "pxelinux.0" in proxy_text, proxy_text[-2000:]
    stranger = [line for line in proxy_text.splitlines() if STRANGER_MAC in line]
    assert stranger and all("ignored" in line for line in stranger), stranger
    print("[e2e] ProxyDHCP log for the host:\n" + "\n".join(
        line for line in proxy_text.splitlines() if PROXY_MAC in line or "filename" in line or "next server" in line))
    print("[e2e] its iPXE:\n" + "\n".join(line for line in console.splitlines()
                                            if "DHCP" in line or "ProxyDHCP" in line or "pxelinux.0" in line)[:1500])
