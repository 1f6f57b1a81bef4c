"""The BMC e2e lab (docs/lab.md "BMC boots over libvirt"): libvirt QEMU domains whose disk boots first, driven
through sushy-tools' emulator (Redfish, libvirt driver) and virtualbmc (IPMI), both real and run from their own
venv (e2e.mk e2e-bmc-venv, over Debian's python3-libvirt).

libvirt's QEMU runs in the root network namespace, the lab's server and DHCP in the lab's namespace (e2e_lab.NETNS):
a host bridge carries the domains' taps and one end of a veth pair whose other end sits in the lab namespace at
BMC_GW (its own subnet, its own DHCP server; the boot server stays at e2e_lab.SERVER_IP, reached through BMC_GW).

The disks (e2e_disks.py) print LOCAL_DISK on the serial log when the firmware boots them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

import e2e_lab
from e2e_disks import LOCAL_DISK, bios_disk, uefi_disk  # noqa: F401 (LOCAL_DISK: the tests' marker)

from provisioner import netports

URI = "qemu:///system"
BMC_GW = "10.79.0.1"
VETH_NS = "e2ebmc0"
REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("PROVISIONER_E2E_BMC_VENV") or REPO / ".e2e-venv")


def _tag() -> str:
    return str(os.getpid())


BRIDGE = f"e2ebr{_tag()}"[:15]
VETH_HOST = f"e2ebv{_tag()}"[:15]
IMAGES = Path(f"/var/lib/libvirt/images/provisioner-e2e-{_tag()}")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def virsh(*args: str, check: bool = True) -> str:
    return run("virsh", "-q", "-c", URI, *args, check=check).stdout.strip()


def missing() -> str | None:
    """Why the BMC lab cannot run here, or None."""
    tools = [t for t in ("virsh", "libvirtd", "virtlogd", "mformat", "mcopy", "grub-mkimage", "ipmitool")
             if not shutil.which(t)]
    bins = [str(VENV / "bin" / b) for b in ("sushy-emulator", "vbmc", "vbmcd") if not (VENV / "bin" / b).exists()]
    if tools or bins:
        return f"BMC e2e lab missing {', '.join(tools + bins)}: run `make e2e-deps e2e-bmc-venv`"
    return None


def _users_and_kvm() -> None:
    """What the package scripts and udev would have done: the libvirt-qemu user in group kvm, /dev/kvm root:kvm
    0660. Without it libvirtd hangs: QEMU's capability probe runs with accel=kvm:tcg and reports KVM enabled, but
    the cache check tests /dev/kvm as libvirt-qemu, finds it unusable, throws the capabilities away and probes
    again, for ever; any defineXML waits on it (docs/lab.md "BMC boots over libvirt")."""
    for group in ("libvirt-qemu", "kvm", "libvirt"):
        if run("getent", "group", group, check=False).returncode:
            run("groupadd", "-r", group)
    if run("id", "libvirt-qemu", check=False).returncode:
        run("useradd", "-r", "-g", "libvirt-qemu", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin", "libvirt-qemu")
    if "kvm" not in run("id", "-nG", "libvirt-qemu").stdout.split():
        run("usermod", "-a", "-G", "kvm", "libvirt-qemu")
    if os.path.exists("/dev/kvm"):
        run("chgrp", "kvm", "/dev/kvm")
        os.chmod("/dev/kvm", 0o660)


def ensure_libvirtd() -> list[str]:
    """Start virtlogd and libvirtd when `virsh version` does not answer (no systemd here: docs/lab.md "BMC boots
    over libvirt"); the names of the daemons started, for stop_daemons."""
    _users_and_kvm()
    if run("virsh", "-c", URI, "version", check=False).returncode == 0:
        return []
    for d in ("/var/log/libvirt", "/var/run/libvirt", "/var/lib/libvirt/images"):
        os.makedirs(d, exist_ok=True)
    started = []
    for daemon in ("virtlogd", "libvirtd"):
        if run("pgrep", "-x", daemon, check=False).returncode:
            run(daemon, "-d")
            started.append(daemon)
    deadline = time.time() + 30
    while run("virsh", "-c", URI, "version", check=False).returncode:
        assert time.time() < deadline, "libvirtd did not answer `virsh version` within 30 s"
        time.sleep(0.5)
    return started


def stop_daemons(started: list[str]) -> None:
    """SIGTERM the daemons ensure_libvirtd started, by the pid in their pid file, and wait for them to go."""
    for daemon in reversed(started):
        pidfile = Path(f"/var/run/{daemon}.pid")
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text().split()[0])
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            continue
        deadline = time.time() + 20
        while Path(f"/proc/{pid}").exists() and time.time() < deadline:
            time.sleep(0.2)


# --- network ---

def network_up() -> None:
    """The host bridge, the veth into the lab namespace at BMC_GW/24."""
    ns = e2e_lab.NETNS
    run("ip", "link", "add", "name", BRIDGE, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    run("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
    run("ip", "link", "set", VETH_NS, "netns", ns)
    run("ip", "link", "set", VETH_HOST, "master", BRIDGE)
    run("ip", "link", "set", VETH_HOST, "up")
    run("ip", "link", "set", BRIDGE, "up")
    run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{BMC_GW}/24", "dev", VETH_NS)
    run("ip", "netns", "exec", ns, "ip", "link", "set", VETH_NS, "up")


def network_down() -> None:
    run("ip", "link", "del", VETH_HOST, check=False)
    run("ip", "link", "del", BRIDGE, check=False)


def start_dnsmasq(workdir: Path) -> e2e_lab.Process:
    """DHCP on the veth: a lease in BMC_GW's subnet, BMC_GW the router, the boot server the next server."""
    server = e2e_lab.SERVER_IP
    return e2e_lab.Process(
        ["dnsmasq", "--no-daemon", "--port=0", f"--interface={VETH_NS}", "--bind-interfaces",
         "--dhcp-range=10.79.0.100,10.79.0.200,1h", f"--dhcp-option=option:router,{BMC_GW}",
         "--dhcp-match=set:efi64,option:client-arch,7", f"--dhcp-boot=tag:efi64,grubx64.efi,,{server}",
         f"--dhcp-boot=tag:!efi64,pxelinux.0,,{server}", "--no-resolv", "--no-hosts",
         f"--dhcp-leasefile={workdir / 'dnsmasq-bmc.leases'}", f"--pid-file={workdir / 'dnsmasq-bmc.pid'}"],
        workdir / "dnsmasq-bmc.log")


# --- disks ---

# --- domains ---

def domain_xml(name: str, mac: str, firmware: str, disk: Path, serial_log: Path) -> str:
    """A TCG domain, disk first (boot order 1), the NIC second, the serial port appended to serial_log."""
    if firmware == "uefi":
        os_xml = ("<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type><firmware>"
                  "<feature enabled='no' name='secure-boot'/><feature enabled='no' name='enrolled-keys'/>"
                  "</firmware></os>")
        target, rom = "<target dev='sda' bus='sata'/>", f"<rom file='{e2e_lab.EFI_ROM}'/>"
    else:
        os_xml = "<os><type arch='x86_64' machine='pc'>hvm</type><bios useserial='yes'/></os>"
        target, rom = "<target dev='hda' bus='ide'/>", ""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>1</vcpu>
  {os_xml}
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>{target}
      <boot order='1'/></disk>
    <interface type='bridge'><source bridge='{BRIDGE}'/><mac address='{mac}'/><model type='e1000'/>{rom}
      <boot order='2'/></interface>
    <serial type='file'><source path='{serial_log}' append='on'/><target port='0'/></serial>
  </devices>
</domain>
"""


class Domain:
    """One libvirt domain: its serial log read from an offset, its state."""

    def __init__(self, name: str, mac: str, firmware: str, workdir: Path):
        self.name, self.mac, self.firmware = name, mac, firmware
        IMAGES.mkdir(parents=True, exist_ok=True)
        IMAGES.chmod(0o755)
        disk = IMAGES / f"{name}.img"
        if firmware == "uefi":
            uefi_disk(disk, workdir)
        else:
            bios_disk(disk)
        self.serial = IMAGES / f"{name}.serial.log"
        self.serial.write_text("")
        xml = workdir / f"{name}.xml"
        xml.write_text(domain_xml(name, mac, firmware, disk, self.serial))
        virsh("define", str(xml))
        self.uuid = virsh("domuuid", name)

    def console(self, since: int = 0) -> str:
        return self.serial.read_bytes()[since:].decode(errors="replace")

    def mark(self) -> int:
        return self.serial.stat().st_size

    def state(self) -> str:
        return virsh("domstate", self.name, check=False)

    def xml(self) -> str:
        return virsh("dumpxml", "--inactive", self.name)

    def wait_off(self, timeout: float) -> bool:
        deadline = time.time() + timeout
        while self.state() != "shut off":
            if time.time() > deadline:
                return False
            time.sleep(1)
        return True

    def wait_console(self, text: str, since: int, timeout: float) -> bool:
        deadline = time.time() + timeout
        while text not in self.console(since):
            if time.time() > deadline or self.state() == "shut off" and text not in self.console(since):
                return text in self.console(since)
            time.sleep(0.5)
        return True

    def remove(self, keep_log: Path) -> None:
        """Destroy and undefine (with its NVRAM), keep the serial log in keep_log, delete the disk."""
        virsh("destroy", self.name, check=False)
        virsh("undefine", "--nvram", self.name, check=False)
        if self.serial.exists():
            shutil.copy(self.serial, keep_log / self.serial.name)
        for path in (self.serial, IMAGES / f"{self.name}.img"):
            path.unlink(missing_ok=True)
        if IMAGES.exists() and not any(IMAGES.iterdir()):
            IMAGES.rmdir()


# --- the emulators ---

class Emulator:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sushy(workdir: Path, uuids: list[str], username: str, password: str) -> tuple[Emulator, str]:
    """sushy-emulator's libvirt driver on 127.0.0.1, basic auth from an htpasswd file (bcrypt, the only kind it
    reads), limited to our domains (SUSHY_EMULATOR_ALLOWED_INSTANCES)."""
    port = netports.free_port()
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (workdir / "htpasswd").write_text(f"{username}:{digest}\n")
    config = {"SUSHY_EMULATOR_LISTEN_IP": "127.0.0.1", "SUSHY_EMULATOR_LISTEN_PORT": port,
              "SUSHY_EMULATOR_LIBVIRT_URI": URI, "SUSHY_EMULATOR_ALLOWED_INSTANCES": uuids,
              "SUSHY_EMULATOR_AUTH_FILE": str(workdir / "htpasswd")}
    conf = workdir / "sushy.conf"
    conf.write_text("".join(f"{k} = {v!r}\n" for k, v in config.items()))
    emulator = Emulator([str(VENV / "bin" / "sushy-emulator"), "--config", str(conf)], workdir / "sushy.log")
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/redfish/v1/", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            assert emulator.proc.poll() is None and time.time() < deadline, \
                f"sushy-emulator did not start:\n{(workdir / 'sushy.log').read_text()[-2000:]}"
            time.sleep(0.2)
    return emulator, url


def start_vbmc(workdir: Path, domain: str, username: str, password: str) -> tuple[Emulator, str, dict]:
    """vbmcd in the foreground with its own config (its own ZeroMQ port and config dir), then `vbmc add` and
    `vbmc start` for the domain on a free UDP port of 127.0.0.1."""
    vdir = workdir / "vbmc"
    (vdir / "bmcs").mkdir(parents=True, exist_ok=True)  # vbmcd only logs ENOENT and never answers without it
    conf = vdir / "virtualbmc.conf"
    conf.write_text(f"[default]\nconfig_dir = {vdir / 'bmcs'}\npid_file = {vdir / 'master.pid'}\n"
                    f"server_port = {netports.free_port()}\n[log]\nlogfile = {vdir / 'vbmc.log'}\ndebug = true\n")
    env = {**os.environ, "VIRTUALBMC_CONFIG": str(conf)}
    daemon = Emulator([str(VENV / "bin" / "vbmcd"), "--foreground"], vdir / "vbmcd.out", env=env)
    port = netports.free_port()
    vbmc = str(VENV / "bin" / "vbmc")
    deadline = time.time() + 30
    while True:
        r = subprocess.run([vbmc, "add", domain, "--port", str(port), "--address", "127.0.0.1", "--username",
                            username, "--password", password, "--libvirt-uri", URI], env=env, capture_output=True,
                           text=True)
        if r.returncode == 0:
            break
        assert daemon.proc.poll() is None and time.time() < deadline, f"vbmc add failed: {r.stdout}{r.stderr}"
        time.sleep(0.5)
    r = subprocess.run([vbmc, "start", domain], env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"vbmc start failed: {r.stdout}{r.stderr}"
    return daemon, f"127.0.0.1:{port}", env


# --- what a real BMC does by itself: the one-time override is consumed by the boot that used it ---

def redfish_disk_first(url: str, system: str, username: str, password: str) -> dict:
    """PATCH BootSourceOverrideTarget=Hdd through sushy-tools, which keeps every override as Continuous (its NOTE at
    set_boot_device in sushy_tools/emulator/main.py): the libvirt driver puts the disk back at boot order 1. A real
    BMC needs no such call: BootSourceOverrideEnabled=Once is cleared by the boot that used it (docs/lab.md "BMC
    boots over libvirt"). Returns the system's Boot object read back."""
    import base64
    import json
    auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    path = f"{url}/redfish/v1/Systems/{system}"
    body = json.dumps({"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous"}})
    urllib.request.urlopen(urllib.request.Request(path, data=body.encode(), method="PATCH", headers=headers),
                           timeout=60).close()
    with urllib.request.urlopen(urllib.request.Request(path, headers=headers), timeout=60) as r:
        return json.loads(r.read())["Boot"]


def ipmi_disk_first(address: str, username: str, password: str) -> str:
    """`ipmitool chassis bootdev disk options=persistent` through vbmc, which rewrites <os><boot dev='hd'/>. vbmc
    applies every boot device as persistent (virtualbmc/vbmc.py set_boot_device ignores the persist bit), so after
    the product's one-time PXE the domain stays network-only; a real BMC clears the one-time flag on the next boot
    (IPMI v2.0 Set System Boot Options, boot flags; docs/lab.md). `-C 3`: vbmc's pyghmi server speaks cipher
    suite 3 only and ipmitool 1.8.19 proposes 17 by default. Returns `chassis bootparam get 5` read back."""
    host, port = address.rsplit(":", 1)
    base = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", host, "-p", port, "-U", username, "-P", password]
    run(*base, "chassis", "bootdev", "disk", "options=persistent")
    return " ".join(run(*base, "chassis", "bootparam", "get", "5").stdout.split())
