"""Small helpers shared by several test modules: a fake XenServer installation tree, step timeouts on the
simulator's clock, host registration, the test API token, TFTP client packets, and a Prometheus exposition parser."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy.TftpPacketTypes import TftpPacketACK, TftpPacketERR

from provisioner.tftp import pump
from provisioner.coordinator import pools
from provisioner.coordinator.steps import Timeouts

INSTALL_IMG_SIZE = 70_001  # several TFTP blocks at any blksize, and not a multiple of 512 (short last block)

FAST = Timeouts(down=900, up=4 * 3600, enable=1800, poll=5)
"""Step timeouts for runs on the simulator's clock (sim seconds): the real ones, polling every 5 s."""


class Crash(Exception):
    """Stands for kill -9 at a step boundary: nothing after the commit runs."""


def crash_once(make_flow: Callable[[Callable[[Any], None]], Any], matches: Callable[[Any], bool]) -> str:
    """kill -9 at a step boundary: run make_flow(on_commit).run() on a thread, with an on_commit that raises Crash
    at the first committed step `matches` (nothing after that commit runs). Returns that step."""
    crashed: list[str] = []
    errors: list[Crash] = []

    def on_commit(record: Any) -> None:
        if not crashed and matches(record):
            crashed.append(record.step)
            raise Crash(record.step)

    def first() -> None:
        try:
            make_flow(on_commit).run()
        except Crash as exc:
            errors.append(exc)
    thread = threading.Thread(target=first)
    thread.start()
    thread.join(120)
    assert errors and len(crashed) == 1, f"no crash: the flow never committed a matching step ({crashed})"
    return crashed[0]


def register_hosts(store, pool: str, driver) -> None:
    """What an operator does before an upgrade: discover the pool's hosts, give each a boot disk."""
    pools.discover(store, pool, driver)
    for h in store.list_hosts(pool=pool):
        store.update_host(h.mac, {"disk": f"/dev/disk/by-id/scsi-{h.name}"})


API_TOKEN = "test-token-0123456789abcdef"
"""The api_token of the test config (tests/conftest.py); import it from here, not from conftest (two exist)."""


def make_media_tree(root: Path, version: str = "8.4.0", build: str = "12345") -> Path:
    """Create a fake extracted XenServer ISO at ROOT and return ROOT.

    Holds what the installer and our importer look at: `.treeinfo` ([system-v1] + [build]),
    `repodata/repomd.xml`, the boot files of both generations and the ISO's UEFI GRUB; contents are small dummies.
    """
    root = Path(root)
    major = int(version.split(".")[0])
    platform_version = "3.4.0" if major < 9 else "4.0.0"
    files = {
        ".treeinfo": (
            "[system-v1]\n"
            "platform_name = XCP\n"
            f"platform_version = {platform_version}\n"
            "product_name = XenServer\n"
            f"product_version = {version}\n"
            "\n[build]\n"
            f"number = {build}\n"
        ).encode(),
        "repodata/repomd.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<repomd xmlns="http://linux.duke.edu/metadata/repo">\n'
            '  <data type="primary"><location href="repodata/primary.xml.gz"/></data>\n'
            "</repomd>\n"
        ).encode(),
        "boot/xen.gz": f"fake xen.gz {version}\n".encode(),
        "boot/vmlinuz": f"fake vmlinuz {version}\n".encode(),
        "install.img": bytes(i % 251 for i in range(INSTALL_IMG_SIZE)),
        "EFI/xenserver/grubx64.efi": b"MZ fake grubx64.efi\n",
        "EFI/xenserver/grub.cfg": b"menuentry 'install' {\n  multiboot2 /boot/xen.gz\n}\n",
    }
    if major >= 9:
        files["boot/xen.efi"] = f"MZ fake xen.efi {version}\n".encode()
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


CLIENT_PACKETS = [
    b"\x00\x04\x00\x01",  # the ACK for DATA 1
    b"\x00\x04\x00\x01\x00\x00",  # the same with trailing bytes (tftpy truncates them)
    b"\x00\x04\x00\x01" + b"x" * 1000,
    b"\x00\x04\x00\x00",  # a duplicate of an earlier ACK: no resend (Sorcerer's Apprentice)
    b"\x00\x04\x00\x02",  # a future block
    b"\x00\x04\xff\xff",
    b"\x00\x04\x00",  # short packets
    b"\x00\x04",
    b"\x00",
    b"",
    b"\x00\x05\x00\x01disk full\x00",  # the client gives up
    b"\x00\x05\x00\x00",
    b"\x00\x05\x00\x02no terminator",
    b"\x00\x03\x00\x01data",  # not what a reading client sends
    b"\x00\x06blksize\x00512\x00",
    b"\x00\x01file\x00octet\x00",
    b"\x00\x02file\x00octet\x00",
    b"\x00\x09\x00\x00",
    b"\xff\xff\xff\xff",
]
"""Every shape of packet a TFTP client can send a transfer that waits for ACK 1 (tests/tftp/test_transfer_contract.py
holds each against tftp_packet_outcome, on both data paths)."""


def tftp_packet_outcome(packet: bytes, block: int) -> str:
    """What a full parse says the session must do with `packet` while it waits for ACK `block`."""
    try:
        parsed = TftpPacketFactory().parse(packet)
    except Exception:
        parsed = None
    if isinstance(parsed, TftpPacketACK):
        return "advance" if parsed.blocknumber == block else "ignore"
    if len(packet) < 4:
        return "ignore"  # not even a header: like a lost packet (tftpy cannot parse these either)
    if isinstance(parsed, TftpPacketERR):
        return "client_error"
    return "illegal_operation"  # DATA, OACK, RRQ, WRQ or an opcode tftpy does not know


# --- Prometheus text exposition (the /metrics tests) ---

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """The samples of a Prometheus text exposition: (name, labels) -> value."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not an exposition line: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def made_then_closed(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A factory fixture's body (`yield from made_then_closed(Rig)`): yields a maker of `make(...)` objects and
    closes every one it made when the test is over."""
    made: list[Any] = []

    def maker(*args: Any, **kwargs: Any) -> Any:
        made.append(make(*args, **kwargs))
        return made[-1]

    yield maker
    for thing in made:
        thing.close()


def udp_pair(timeout: float = 5.0) -> tuple[socket.socket, socket.socket]:
    """(client, server) UDP sockets on loopback, the server's connected to the client as tftp.py makes one per
    transfer; the client blocks for at most `timeout` s."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(timeout)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.connect(client.getsockname())
    return client, server


class TftpPeer:
    """A pump.Session over `data` whose client is a bare UDP socket (the test), for the Pump's and
    serve_alone's test rigs: the server socket is non-blocking, as a worker gets it."""

    def __init__(self, tmp_path: Path, data: bytes, blksize: int, timeout: float):
        self.timeout = timeout
        self.client, server = udp_pair(timeout)
        server.setblocking(False)
        self.server_addr = server.getsockname()
        (tmp_path / "file").write_bytes(data)
        ip, port = self.client.getsockname()
        self.session = pump.Session(server, ip, port, "file", "static", open(tmp_path / "file", "rb"), blksize)

    def recv(self) -> bytes:
        return self.client.recv(70000)

    def send(self, packet: bytes) -> None:
        self.client.sendto(packet, self.server_addr)

    def nothing_sent(self, within: float = 0.2) -> bool:
        self.client.settimeout(within)
        try:
            self.client.recv(70000)
        except socket.timeout:
            return True
        finally:
            self.client.settimeout(self.timeout)
        return False


@contextlib.contextmanager
def serve_process(tmp_path: Path, **env: str) -> Iterator[subprocess.Popen]:
    """`provisioner serve` as a user starts it (loopback, ports 0, an empty tftp_root, a data dir in tmp_path),
    PROVISIONER_* overrides in `env`; killed on the way out if the test did not stop it."""
    (tmp_path / "root").mkdir(exist_ok=True)
    environ = {**os.environ, "PROVISIONER_DATA_DIR": str(tmp_path / "d"),
               "PROVISIONER_TFTP_ROOT": str(tmp_path / "root"), "PROVISIONER_BIND_ADDRESS": "127.0.0.1",
               "PROVISIONER_HTTP_PORT": "0", "PROVISIONER_TFTP_PORT": "0", "PROVISIONER_CONFIG": "",
               "PROVISIONER_ALLOW_ROOT": "1", **env}  # the tests run as root (serve refuses it by default)
    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "serve"], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def at_step(lab, i: int, step: str, act):
    """An on_commit hook that does `act(lab)` once, when host i commits `step` (after the plan passed)."""
    done = []

    def hook(rh):
        if not done and rh.mac == lab.mac(i) and rh.step == step:
            done.append(step)
            act(lab)
    return hook
