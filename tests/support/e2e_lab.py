"""The e2e lab (docs/lab.md): a network namespace with a tap, dnsmasq for DHCP only, `provisioner serve`, QEMU VMs.

Also builds what the VMs boot besides our server's boot loaders: a busybox "installer stand-in" initrd that
does with the answer file what the real installer does (docs/installer.md "Scripts: the installer's only callbacks"),
and a synthetic media tree whose boot/xen.gz and boot/vmlinuz are Debian's Xen and kernel and whose install.img is the
stand-in.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# One namespace per test process: two suites running at once (CI, a developer) must not share or delete it.
NETNS = f"provisioner-e2e-{os.getpid()}"
TAP = "e2etap0"
SERVER_IP = "10.77.0.1"
HTTP_PORT = 80
# The one MAC whose iPXE gets our iPXE script URL from DHCP instead of pxelinux.0 (test_bios_ipxe_script_*);
# ${net0/mac:hexhyp} is iPXE's own setting syntax, expanded by iPXE before it fetches the DHCP filename.
IPXE_SCRIPT_MAC = "52:54:00:e2:e0:05"
IPXE_SCRIPT_URL = f"http://{SERVER_IP}/boot/ipxe/${{net0/mac:hexhyp}}"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
EFI_ROM = Path("/usr/lib/ipxe/qemu/efi-e1000.rom")
BUSYBOX = Path("/bin/busybox")
LOCAL_BOOT_DONE = "No bootable device"  # SeaBIOS, after pxelinux's localboot found no disk
STANDIN_OK = ("STANDIN: GET answer file", "STANDIN: installation-start exit 0",
              "STANDIN: installation-complete exit 0", "STANDIN: done")

# The stand-in's /init. It does the installer's part of the contract only: DHCP on the NIC named by
# network_device=, GET answerfile=, check it is an upgrade of an existing installation, GET and run the
# installation-start script, then the installation-complete script with "0", power off. Markers on the
# console ("STANDIN: ...") let the test tell how far it got.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
# dom0's /dev/console is the last console= (tty0, VGA): write markers through the kernel log, which reaches
# every console including hvc0 (Xen's serial line) or ttyS0.
exec 2>/dev/kmsg
say() { echo "STANDIN: $*" > /dev/kmsg; }
die() { say "FAIL $*"; sync; poweroff -f; }
arg() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" /proc/cmdline | head -n1; }
say "running on $(uname -r)"
# Debian builds e1000 as a module (CONFIG_E1000=m).
insmod /e1000.ko || die "insmod e1000"
af=$(arg answerfile); mac=$(arg network_device)
[ -n "$af" ] || die "no answerfile= on the kernel command line"
ifname=""
for try in 1 2 3 4 5 6 7 8 9 10; do
  for dev in /sys/class/net/*; do
    [ "$(cat $dev/address)" = "$mac" ] && ifname=${dev##*/}
  done
  [ -n "$ifname" ] && break
  sleep 1
done
[ -n "$ifname" ] || die "no interface with MAC $mac"
ip link set lo up; ip link set "$ifname" up
udhcpc -i "$ifname" -s /udhcpc.sh -q -f -n -t 20 -T 1 || die "DHCP on $ifname"
say "GET answer file $af"
wget -q -O /answer.xml "$af" || die "answer file fetch"
grep -q 'mode="upgrade"' /answer.xml || die "not an upgrade answer file"
grep -q '<existing-installation>' /answer.xml || die "no existing-installation"
# Like the installer, read the version being installed from the first <source>'s .treeinfo.
src=$(sed -n 's/.*<source[^>]*>\([^<]*\)<\/source>.*/\1/p' /answer.xml | head -n1)
[ -n "$src" ] || die "no <source> in the answer file"
wget -q -O /treeinfo "${src%/}/.treeinfo" || die "source .treeinfo fetch"
ini() { sed -n "/^\[$1\]/,/^\[/ s/^$2 *= *//p" /treeinfo | head -n1; }
v="product_version=$(ini system-v1 product_version) platform_version=$(ini system-v1 platform_version)"
say "source $v build_number=$(ini build number)"
script_url() {
  sed -n "s/.*<script[^>]*stage=\"$1\"[^>]*>\([^<]*\)<\/script>.*/\1/p" /answer.xml | head -n1 | sed 's/&amp;/\&/g'
}
start=$(script_url installation-start); complete=$(script_url installation-complete)
[ -n "$start" ] || die "no installation-start script"
wget -q -O /start.sh "$start" || die "installation-start script fetch"
sh /start.sh >/dev/kmsg 2>&1; say "installation-start exit $?"
if [ -n "$complete" ]; then
  wget -q -O /complete.sh "$complete" && { sh /complete.sh 0 >/dev/kmsg 2>&1; say "installation-complete exit $?"; }
fi
say "http bytes $(cat /answer.xml /treeinfo /start.sh /complete.sh 2>/dev/null | wc -c)"
say "done"
sync
poweroff -f
"""

UDHCPC = r"""#!/bin/sh
# Apply the lease: busybox udhcpc only reports it.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"""

TREEINFO = """[system-v1]
product_brand = XenServer
product_name = XenServer
product_version = 8.4.0
platform_version = 3.4.0
build_number = e2e

[build]
number = e2e
"""

REPOMD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
          '<repomd xmlns="http://linux.duke.edu/metadata/repo">\n</repomd>\n')


@dataclass(frozen=True)
class Artifacts:
    """Debian's kernel, its e1000 module and Xen, unpacked by `make e2e-cache` (dpkg -x)."""

    vmlinuz: Path
    e1000: Path
    xen_gz: Path


def find_artifacts(cache: Path) -> Artifacts | None:
    """The unpacked kernel, e1000.ko and xen.gz under `cache`, or None when any is missing."""
    vmlinuz = sorted((cache / "kernel" / "boot").glob("vmlinuz-*"))
    e1000 = sorted((cache / "kernel" / "lib" / "modules").glob("*/kernel/drivers/net/ethernet/intel/e1000/e1000.ko"))
    xen = sorted((cache / "xen" / "boot").glob("xen-*.gz"))
    if not (vmlinuz and e1000 and xen):
        return None
    return Artifacts(vmlinuz=vmlinuz[-1], e1000=e1000[-1], xen_gz=xen[-1])


def build_initrd(out: Path, artifacts: Artifacts) -> Path:
    """A gzip'd newc cpio: static busybox, the e1000 module, /init (the stand-in) and the udhcpc script."""
    root = out.parent / "initrd-root"
    if root.exists():
        shutil.rmtree(root)
    for sub in ("bin", "proc", "sys", "dev", "tmp"):
        (root / sub).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    shutil.copy2(artifacts.e1000, root / "e1000.ko")
    for name, text in (("init", INIT), ("udhcpc.sh", UDHCPC)):
        (root / name).write_text(text)
        (root / name).chmod(0o755)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input="\n".join(names).encode(),
                             stdout=subprocess.PIPE, check=True).stdout
    out.write_bytes(gzip.compress(archive, 6))
    return out


def build_media_tree(tree: Path, artifacts: Artifacts, initrd: Path) -> Path:
    """An 8.x-shaped media tree (.treeinfo, repodata) with real Xen and Linux and the stand-in as install.img."""
    (tree / "boot").mkdir(parents=True, exist_ok=True)
    (tree / "repodata").mkdir(exist_ok=True)
    (tree / ".treeinfo").write_text(TREEINFO)
    (tree / "repodata" / "repomd.xml").write_text(REPOMD)
    shutil.copy2(artifacts.xen_gz, tree / "boot" / "xen.gz")
    shutil.copy2(artifacts.vmlinuz, tree / "boot" / "vmlinuz")
    shutil.copy2(initrd, tree / "install.img")
    return tree


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def netns_up() -> None:
    """The namespace with one tap device at SERVER_IP (docs/lab.md "Network namespace"); first removes those of dead
    test processes."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    prefix = NETNS.rsplit("-", 1)[0] + "-"
    for name in listed:
        pid = name[len(prefix):]
        if name.startswith(prefix) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _run("ip", "netns", "add", NETNS)
    _run("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
    _run("ip", "netns", "exec", NETNS, "ip", "tuntap", "add", TAP, "mode", "tap")
    _run("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{SERVER_IP}/24", "dev", TAP)
    _run("ip", "netns", "exec", NETNS, "ip", "link", "set", TAP, "up")


def netns_down() -> None:
    subprocess.run(["ip", "netns", "del", NETNS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Process:
    """A child run inside the namespace, its output collected into a log file (and kept in memory)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, netns: str | None = None):
        self.log_path = log
        self.lines: list[str] = []
        self._log = open(log, "w", buffering=1)
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns or NETNS, *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            self._log.write(line)

    def text(self) -> str:
        return "".join(self.lines)

    def drain(self, timeout: float = 5) -> None:
        """After the process ended: wait until its last output lines are read."""
        self._reader.join(timeout=timeout)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM the process (its own session, started here), SIGKILL after 10 s."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            if self.wait(10) is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def start_dnsmasq(workdir: Path) -> Process:
    """DHCP only (--port=0: no DNS, no TFTP); BIOS clients get pxelinux.0, x86-64 UEFI ones grubx64.efi, and
    iPXE at IPXE_SCRIPT_MAC (only that MAC: the other tests boot pxelinux.0 from the same iPXE ROM) the URL of
    our per-MAC iPXE script, which iPXE expands (docs/lab.md "Network namespace")."""
    return Process(["dnsmasq", "--no-daemon", "--port=0", f"--interface={TAP}", "--bind-interfaces",
                    "--dhcp-range=10.77.0.100,10.77.0.200,1h", "--dhcp-match=set:efi64,option:client-arch,7",
                    "--dhcp-userclass=set:ipxe,iPXE", f"--dhcp-host={IPXE_SCRIPT_MAC},set:ipxescript",
                    f"--dhcp-boot=tag:ipxescript,tag:ipxe,{IPXE_SCRIPT_URL},,{SERVER_IP}",
                    f"--dhcp-boot=tag:efi64,grubx64.efi,,{SERVER_IP}",
                    f"--dhcp-boot=tag:!efi64,tag:!ipxescript,pxelinux.0,,{SERVER_IP}", "--no-resolv", "--no-hosts",
                    f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}", f"--pid-file={workdir / 'dnsmasq.pid'}"],
                   workdir / "dnsmasq.log")


def start_server(env: dict[str, str], workdir: Path) -> Process:
    """`provisioner serve` in the namespace, with the lab's PROVISIONER_* environment."""
    # the lab runs as root (serve refuses that unless told)
    return Process([sys.executable, "-m", "provisioner", "serve", "--allow-root"], workdir / "serve.log", env=env)


@dataclass
class Boot:
    """One VM power-on: its console output and when it started (time.time(), to compare with event ts)."""

    name: str
    mac: str
    firmware: str
    process: Process
    started: float = field(default_factory=time.time)


def vm_pids_file(workdir: Path) -> Path:
    """Where start_vm notes each QEMU pid, so a test can end the VMs a killed power-cycle command left."""
    return workdir / "qemu.pids"


def start_vm(name: str, mac: str, firmware: str, workdir: Path, disk: Path | None = None,
             netns: str | None = None) -> Boot:
    """QEMU with an e1000 on the tap: SeaBIOS + iPXE ROM (bios) or OVMF + iPXE EFI ROM (uefi); the network boots
    first (`-boot n`), then `disk` (a raw image, e.g. e2e_disks.uefi_disk) when given."""
    argv = ["qemu-system-x86_64", "-m", "1024", "-nographic", "-no-reboot", "-boot", "n",
            "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no"]
    nic_boot = ""
    if disk is not None:  # OVMF follows bootindex, not -boot: the NIC first, then the disk (a PXE-first host)
        argv += ["-drive", f"file={disk},format=raw,if=none,id=d0", "-device", "ide-hd,drive=d0,bus=ide.0,bootindex=2"]
        nic_boot = ",bootindex=1"
    if firmware == "uefi":
        vars_copy = workdir / f"{name}-OVMF_VARS.fd"
        shutil.copy2(OVMF_VARS, vars_copy)
        argv += ["-machine", "q35",
                 "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,file={vars_copy}",
                 "-device", f"e1000,netdev=n0,mac={mac},romfile={EFI_ROM}{nic_boot}"]
    else:
        argv += ["-device", f"e1000,netdev=n0,mac={mac}{nic_boot}"]
    boot = Boot(name=name, mac=mac, firmware=firmware,
                process=Process(argv, workdir / f"{name}.console.log", netns=netns))
    with open(vm_pids_file(workdir), "a") as pids:
        pids.write(f"{boot.process.proc.pid}\n")
    return boot


def kill_leftover_vms(workdir: Path) -> list[int]:
    """SIGKILL the QEMU processes noted in vm_pids_file that still run (by pid, only if still QEMU)."""
    killed = []
    path = vm_pids_file(workdir)
    for pid in (int(p) for p in (path.read_text().split() if path.exists() else [])):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def wait_boot(boot: Boot, timeout: float) -> str:
    """Until the VM ends: "installed" (the stand-in ran both scripts with 0 and powered off), "local" (the
    firmware went on to the (absent) disk), "failed" (QEMU ended otherwise) or "timeout"."""
    deadline = time.time() + timeout
    while True:
        text = boot.process.text()
        if LOCAL_BOOT_DONE in text:
            return "local"
        if boot.process.proc.poll() is not None:
            boot.process.drain()
            return "installed" if standin_version(boot.process.text()) is not None else "failed"
        if time.time() > deadline:
            return "timeout"
        time.sleep(0.5)


def standin_version(console: str) -> dict | None:
    """The version the stand-in read from the media's .treeinfo, only when it fetched the answer file and ran
    both scripts with exit 0 (its console markers); else None."""
    if not all(marker in console for marker in STANDIN_OK):
        return None
    found = re.search(r"STANDIN: source (product_version=.*)", console)
    if found is None:
        return None
    version = dict(re.findall(r"(\w+)=(\S*)", found.group(1)))
    return version if version.get("product_version") else None


def event_ts(event: dict) -> float:
    return dt.datetime.fromisoformat(event["ts"]).timestamp()


def fetches(events: list[dict], mac: str, what: str) -> list[dict]:
    return [e for e in events if e["kind"] == "attempt.fetch" and e["mac"] == mac and e["details"].get("what") == what]


def boot_numbers(events: list[dict], mac: str, started: float, console: str, label: str) -> dict:
    """Print and return one boot's numbers from the server's events during it and the VM's console: seconds
    from power-on to the answer-file GET, bytes moved by TFTP and by HTTP."""
    tftp = sum(int(e["details"].get("bytes") or 0) for e in events if e["kind"] == "tftp.sent")
    # HTTP: media files as the server recorded them (attempt.fetch details.bytes; GRUB on UEFI) plus the
    # answer file, .treeinfo and scripts, which the server records without a size: the stand-in reports those.
    http_media = sum(int(e["details"].get("bytes") or 0) for e in events if e["kind"] == "attempt.fetch")
    standin = re.findall(r"STANDIN: http bytes (\d+)", console)
    http = http_media + (int(standin[-1]) if standin else 0)
    answer = fetches(events, mac, "answerfile")
    seconds = round(event_ts(answer[0]) - started, 1) if answer else None
    files = [e["details"].get("file") for e in events if e["kind"] == "tftp.sent"]
    print(f"\n[e2e] {label}: answer-file GET at {seconds} s after power-on; TFTP {tftp} bytes "
          f"({len(files)} files), HTTP {http} bytes ({http_media} media files per the server's events); "
          f"TFTP files: {files}")
    return {"seconds": seconds, "tftp": tftp, "http": http, "events": events}
