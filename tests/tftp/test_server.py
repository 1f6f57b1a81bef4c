"""TftpService over real UDP sockets on loopback, with real clients (tftpy, tftp-hpa's tftp, curl) and raw packets."""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tftpy import TftpClient
from tftpy.TftpShared import TftpException, TftpFileNotFoundError

from provisioner.tftp import guard
from provisioner.tftp.server import EV_ABORTED, EV_ERROR, EV_REFUSED, EV_SENT, TftpService, TftpStartupError
from provisioner.tftp.client import TftpFetchError, fetch

MAC_NAMES = ("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff", "EFI/xenserver/grub.cfg")
BIG = bytes(range(256)) * 400 + b"tail"  # 102,404 bytes: many blocks, not a multiple of any block size


class Resolver:
    """A real decision hook: dynamic bytes for the per-MAC names (naming the client), None otherwise."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def render(self, name: str, ip: str) -> bytes:
        return f"# rendered {name} for {ip}\nDEFAULT local\n".encode() * 50  # > 512 bytes: several blocks

    def __call__(self, name: str, ip: str) -> bytes | None:
        self.calls.append((name, ip))
        if name == "boom":
            raise RuntimeError("decision store unavailable")
        return self.render(name, ip) if name in MAC_NAMES else None


class Events(list):
    """on_event recorder; wait() polls until the server thread has reported what we expect."""

    def __call__(self, kind, client, filename, details):
        self.append(SimpleNamespace(kind=kind, client=client, filename=filename, **details))

    def of(self, kind, reason=None):
        return [e for e in list(self) if e.kind == kind and (reason is None or e.reason == reason)]

    def wait(self, kind, reason=None, count=1, timeout=15.0):
        deadline = time.monotonic() + timeout
        while len(self.of(kind, reason)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        found = self.of(kind, reason)
        assert len(found) >= count, f"expected {count} {kind}/{reason} events, got {list(self)}"
        return found


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tftp_root"
    (root / "sub").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(b"PXELINUX" * 100)
    (root / "sub" / "big.bin").write_bytes(BIG)
    (root / "empty").write_bytes(b"")
    (root / "exact").write_bytes(b"e" * 1024)  # exact multiple of 512: ends with a 0-byte DATA
    (tmp_path / "secret").write_bytes(b"root:x:0:0")
    os.symlink(tmp_path / "secret", root / "leak")
    os.symlink("../sub/big.bin", root / "sub" / "same")  # a symlink that stays inside the root
    media = tmp_path / "media"
    (media / "xs84").mkdir(parents=True)
    (media / "xs84" / "xen.gz").write_bytes(b"XEN" * 3000)

    def media_file(name: str) -> Path | None:
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "xenserver" and parts[1] in ("xs84",):
            path = media / parts[1] / parts[2]
            return path if path.is_file() else None
        return None

    return SimpleNamespace(root=root, media=media, media_file=media_file, secret=tmp_path / "secret")


@pytest.fixture
def events():
    return Events()


@pytest.fixture
def resolver():
    return Resolver()


@pytest.fixture(params=["loop", "forked"])
def make_service(request, config, tree, events, resolver):
    """TftpService factory; every test that uses it runs twice: transfers moved by the workers' loops, and each
    transfer in a forked process."""
    started: list[TftpService] = []

    def make(timeout=0.2, retries=2, workers=None, mac_of=None, **overrides):
        if request.param == "forked":  # every transfer in a process of its own (tftp_solo), small files too
            overrides, fork = {"tftp_fork_limit": 64, **overrides}, {"fork_min_size": 0}
        else:  # every transfer in the workers' shared loops (tftp_pump)
            overrides, fork = {"tftp_fork_limit": 0, **overrides}, {}
        cfg = config.replace(tftp_root=tree.root, **overrides)
        svc = TftpService(cfg, resolver, media_file=tree.media_file, on_event=events,
                          timeout=timeout, retries=retries, workers=workers, mac_of=mac_of, **fork)
        svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


@pytest.fixture
def svc(make_service):
    return make_service()


# --- client helpers ---

def tftpy_get(svc, name, options=None, timeout=2, retries=3):
    sink = _Sink()
    TftpClient("127.0.0.1", svc.address[1], options=options or {}).download(
        name, sink, timeout=timeout, retries=retries)
    return bytes(sink.data)


class _Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, chunk):
        self.data += chunk


def curl(svc, name, *args):
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args,
                           f"tftp://127.0.0.1:{svc.address[1]}/{name}", "-o", "-"],
                          capture_output=True, timeout=30)


def hpa(svc, command, tmp_path):
    """tftp-hpa's client; it exits 0 even on errors, so the caller reads its output."""
    return subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(svc.address[1]), "-c", *command],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)


def rrq(name: bytes, opcode: int = 1, **options) -> bytes:
    packet = struct.pack("!H", opcode) + name + b"\0octet\0"
    for key, value in options.items():
        packet += key.encode() + b"\0" + str(value).encode() + b"\0"
    return packet


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block)


class Raw:
    """A bare UDP socket speaking TFTP by hand (closed by the close_raw fixture after each test)."""

    opened: list[socket.socket] = []

    def __init__(self, svc, src_ip="127.0.0.1", timeout=5.0):
        self.server = svc.address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        Raw.opened.append(self.sock)
        self.sock.bind((src_ip, 0))
        self.sock.settimeout(timeout)

    def send(self, data, to=None):
        self.sock.sendto(data, to or self.server)

    def recv(self):
        data, addr = self.sock.recvfrom(70000)
        return data, addr

    def expect_error(self):
        data, addr = self.recv()
        opcode, code = struct.unpack("!HH", data[:4])
        assert opcode == 5, data
        return code, data[4:].rstrip(b"\0").decode(), addr

    def silent(self, wait=0.5):
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(70000)
        except socket.timeout:
            return True
        raise AssertionError(f"unexpected reply {data!r}")

    def close(self):
        self.sock.close()


@pytest.fixture(autouse=True)
def close_raw():
    yield
    while Raw.opened:
        Raw.opened.pop().close()


def assert_serving(svc):
    assert svc._thread is not None and svc._thread.is_alive()
    assert tftpy_get(svc, "pxelinux.0") == b"PXELINUX" * 100


# --- serving ---

@pytest.mark.parametrize("options", [{}, {"blksize": 1468}, {"blksize": 8, "tsize": 0}])
def test_static_file_tftpy_client(svc, events, options):
    assert tftpy_get(svc, "sub/big.bin", options) == BIG
    assert tftpy_get(svc, "/sub/same", options) == BIG  # leading slash and in-root symlink
    assert tftpy_get(svc, "empty", options) == b""
    assert tftpy_get(svc, "exact", options) == b"e" * 1024
    sent = events.wait(EV_SENT, "complete", count=4)
    # a transfer completes on its last ACK, which the client sends after it has its data: the next (shorter)
    # transfer can complete first, so the events are compared without their order
    assert sorted((e.filename, e.bytes, e.source) for e in sent) == sorted([
        ("sub/big.bin", len(BIG), "static"), ("sub/same", len(BIG), "static"),
        ("empty", 0, "static"), ("exact", 1024, "static")])
    assert svc.counters["bytes_sent"] == 2 * len(BIG) + 1024


def test_static_file_curl_and_tftp_hpa(svc, tmp_path):
    for blksize in ("512", "1468", "65464"):
        result = curl(svc, "sub/big.bin", "--tftp-blksize", blksize)
        assert result.returncode == 0, result.stderr
        assert result.stdout == BIG
    out = hpa(svc, ["get", "sub/big.bin", "got.bin"], tmp_path)
    assert out.stdout == "" and (tmp_path / "got.bin").read_bytes() == BIG


def test_dynamic_files_come_from_resolve_with_the_client_ip(svc, resolver, tmp_path, events):
    for name in MAC_NAMES:
        expected = resolver.render(name, "127.0.0.1")
        # Several in a row: a BytesIO returned by tftpy's dyn_file_func killed its loop on the next transfer.
        assert tftpy_get(svc, name) == expected
        assert tftpy_get(svc, "/" + name, {"blksize": 1468, "tsize": 0}) == expected
        assert curl(svc, name).stdout == expected
        out = hpa(svc, ["get", name, "cfg"], tmp_path)
        assert out.stdout == "" and (tmp_path / "cfg").read_bytes() == expected
    assert (MAC_NAMES[0], "127.0.0.1") in resolver.calls
    assert all(e.source == "dynamic" for e in events.wait(EV_SENT, count=12) if e.filename in MAC_NAMES)
    assert not any(p.name.startswith("tmp") for p in svc.root.rglob("*"))  # nothing written under the root


def test_fetch_helper(svc, resolver):
    host, port = svc.address
    assert fetch(host, port, "sub/big.bin") == BIG
    assert fetch(host, port, MAC_NAMES[0], blksize=512) == resolver.render(MAC_NAMES[0], "127.0.0.1")
    with pytest.raises(FileNotFoundError):
        fetch(host, port, "nope")
    with pytest.raises(TftpFetchError, match="Access violation|ERR"):
        fetch(host, port, "leak")
    nobody = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nobody.bind(("127.0.0.1", 0))  # bound but never answering
    try:
        with pytest.raises(TftpFetchError):
            fetch(host, nobody.getsockname()[1], "pxelinux.0", timeout=0.2, retries=1)
    finally:
        nobody.close()


def test_resolve_is_asked_first_for_every_name(svc, resolver):
    tftpy_get(svc, "pxelinux.0")
    tftpy_get(svc, "xenserver/xs84/xen.gz")
    assert [c[0] for c in resolver.calls] == ["pxelinux.0", "xenserver/xs84/xen.gz"]


def test_stray_real_file_never_shadows_the_decision(svc, resolver, tree):
    # Appears after start-up (start-up refuses such a tree): resolve still wins.
    (tree.root / "pxelinux.cfg").mkdir()
    (tree.root / "pxelinux.cfg" / "01-aa-bb-cc-dd-ee-ff").write_bytes(b"DEFAULT installer\n")
    (tree.root / "EFI" / "xenserver").mkdir(parents=True)
    (tree.root / "EFI" / "xenserver" / "grub.cfg").write_bytes(b"stale\n")
    for name in (MAC_NAMES[0], MAC_NAMES[2]):
        assert tftpy_get(svc, name) == resolver.render(name, "127.0.0.1")


def test_media_files_are_served_from_the_media_tree(svc, tree, events):
    assert tftpy_get(svc, "xenserver/xs84/xen.gz", {"blksize": 1468}) == b"XEN" * 3000
    assert events.wait(EV_SENT)[-1].source == "media"
    assert not (tree.root / "xenserver").exists()
    with pytest.raises(TftpFileNotFoundError):
        tftpy_get(svc, "xenserver/xs84/vmlinuz")
    with pytest.raises(TftpFileNotFoundError):
        tftpy_get(svc, "xenserver/other/xen.gz")


def test_concurrent_transfers_are_byte_identical(svc):
    results: dict[int, bytes] = {}

    def fetch(i):
        results[i] = tftpy_get(svc, "sub/big.bin" if i % 2 else MAC_NAMES[0], {"blksize": 512 + i})

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == (BIG if i % 2 else Resolver().render(MAC_NAMES[0], "127.0.0.1")) for i in range(8))


def test_block_numbers_roll_over_past_65535(svc, tree):
    data = os.urandom(8 * 65536 + 100)  # 65,549 blocks of 8 bytes
    (tree.root / "roll.bin").write_bytes(data)
    result = curl(svc, "roll.bin", "--tftp-blksize", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout == data


def test_wildcard_bind_answers_from_the_address_asked(make_service):
    svc = make_service(bind_address="0.0.0.0")
    port = svc.address[1]
    for ours in ("127.0.0.1", "127.0.0.3"):
        raw = Raw(svc)
        raw.send(rrq(b"pxelinux.0"), (ours, port))
        data, (sender, _) = raw.recv()
        assert data[:4] == b"\x00\x03\x00\x01" and sender == ours
        other = Raw(svc)
        other.send(rrq(b"nope"), (ours, port))
        _, _, (sender, error_port) = other.expect_error()
        assert (sender, error_port) == (ours, port)


# --- options ---

def test_blksize_capped_before_the_session_starts(svc):
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin", blksize=65536))
    oack, tid = raw.recv()
    assert oack == b"\x00\x06blksize\x001468\x00"
    raw.send(ack(0), tid)
    data, _ = raw.recv()
    assert data[:4] == b"\x00\x03\x00\x01" and len(data) == 4 + 1468
    assert tftpy_get(svc, "sub/big.bin", {"blksize": 65536}) == BIG


def test_blksize_cap_follows_config(make_service):
    svc = make_service(tftp_blksize_max=1024)
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin", blksize=1468))
    assert raw.recv()[0] == b"\x00\x06blksize\x001024\x00"


@pytest.mark.parametrize("value", ["0", "7", "abc", "-3", "0x10"])
def test_bad_blksize_falls_back_to_512(svc, value):
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin", blksize=value))
    data, tid = raw.recv()  # the only option was ignored: no OACK, DATA 1 at the default size
    assert data[:4] == b"\x00\x03\x00\x01" and len(data) == 4 + 512
    other = Raw(svc)
    other.send(rrq(b"/sub/big.bin", blksize=value, tsize=0))
    oack, _ = other.recv()
    assert oack == b"\x00\x06tsize\x00%d\x00" % len(BIG)
    assert_serving(svc)


def test_tsize_on_a_dynamic_file(svc, resolver):
    expected = resolver.render(MAC_NAMES[1], "127.0.0.1")
    raw = Raw(svc)
    raw.send(rrq(MAC_NAMES[1].encode(), tsize=0, blksize=1468))
    oack, tid = raw.recv()
    assert oack == b"\x00\x06tsize\x00%d\x00blksize\x001468\x00" % len(expected)
    raw.send(ack(0), tid)
    data, _ = raw.recv()
    assert data[4:] == expected[:1468]


# --- refusals: every one gets an error packet (or a silent drop over a cap) and an event ---

def test_write_requests_are_refused_with_an_error(svc, tree, tmp_path, events):
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"evil")
    client = TftpClient("127.0.0.1", svc.address[1])
    with pytest.raises(TftpException, match="ERR"):  # an error packet, not a timeout
        client.upload("pxelinux.0", str(upload), timeout=5, retries=1)
    result = subprocess.run(["curl", "-sS", "-T", str(upload), f"tftp://127.0.0.1:{svc.address[1]}/new.bin"],
                            capture_output=True, timeout=30)
    assert result.returncode == 69  # curl: "TFTP: Access violation"
    assert "Error code 2" in hpa(svc, ["put", str(upload), "new2.bin"], tmp_path).stdout
    refused = events.wait(EV_REFUSED, guard.R_WRITE, count=3)
    assert {e.filename for e in refused} == {"pxelinux.0", "new.bin", "new2.bin"}
    assert (tree.root / "pxelinux.0").read_bytes() == b"PXELINUX" * 100
    assert not (tree.root / "new.bin").exists() and not (tree.root / "new2.bin").exists()


@pytest.mark.parametrize("name", ["../../etc/passwd", "sub/../../secret", "/../secret", "leak"])
def test_paths_outside_the_root_are_refused(svc, events, name):
    raw = Raw(svc)
    raw.send(rrq(name.encode()))
    code, message, _ = raw.expect_error()
    assert (code, message) == (2, "path outside the TFTP root")
    assert events.wait(EV_REFUSED, guard.R_OUTSIDE)[0].filename == name
    assert_serving(svc)


def test_traversal_with_real_clients(svc, tmp_path, events):
    assert curl(svc, "../../etc/passwd", "--path-as-is").returncode == 69
    assert "Error code 2" in hpa(svc, ["get", "../../etc/passwd", "p"], tmp_path).stdout
    assert "Error code 2" in hpa(svc, ["get", "leak", "p"], tmp_path).stdout
    with pytest.raises(TftpException):
        tftpy_get(svc, "../secret")
    assert not (tmp_path / "p").exists() or b"root" not in (tmp_path / "p").read_bytes()
    events.wait(EV_REFUSED, guard.R_OUTSIDE, count=4)


def test_absolute_paths_stay_under_the_root(svc, tree, events):
    with pytest.raises(TftpFileNotFoundError):
        tftpy_get(svc, str(tree.secret))  # /tmp/.../secret means <root>/tmp/.../secret
    with pytest.raises(TftpFileNotFoundError):
        tftpy_get(svc, "/etc/passwd")
    assert tftpy_get(svc, "/pxelinux.0") == b"PXELINUX" * 100
    assert [e.filename for e in events.wait(EV_REFUSED, guard.R_NOT_FOUND, count=2)] == [
        str(tree.secret), "/etc/passwd"]


def test_not_found_directory_and_fifo(svc, tree, events):
    os.mkfifo(tree.root / "fifo")  # opening a FIFO without O_NONBLOCK would hang the loop
    for name, reason in (("nope", guard.R_NOT_FOUND), ("sub", guard.R_NOT_FILE), ("fifo", guard.R_NOT_FILE)):
        raw = Raw(svc)
        raw.send(rrq(name.encode()))
        assert raw.expect_error()[:2] == (1, "file not found")
        events.wait(EV_REFUSED, reason)
    assert_serving(svc)


def test_hook_failure_is_an_error_packet_and_an_event(svc, events):
    raw = Raw(svc)
    raw.send(rrq(b"boom"))
    assert raw.expect_error()[:2] == (0, "internal error")
    assert events.wait(EV_REFUSED, guard.R_HOOK)[0].filename == "boom"
    assert_serving(svc)


@pytest.mark.parametrize("packet, reason", [
    (b"", guard.R_MALFORMED),
    (b"\x00", guard.R_MALFORMED),
    (b"\x00\x01", guard.R_MALFORMED),
    (b"\x00\x01abc", guard.R_MALFORMED),
    (b"\x00\x01abc\x00", guard.R_MALFORMED),
    (b"\x00\x01abc\x00octet\x00blksize\x00", guard.R_MALFORMED),
    (b"\x00\x01abc\x00octet\x00blksize\x00\x00", guard.R_MALFORMED),
    (b"\x00\x01\xff\xfe\x00octet\x00", guard.R_MALFORMED),
    (b"\x00\x02\x00\x00\x00\x00", guard.R_MALFORMED),
    (b"\x00\x01\x00octet\x00", guard.R_NOT_FOUND),
    (b"\x00\x00abc\x00octet\x00", guard.R_OPCODE),
    (b"\x00\x07abc\x00octet\x00", guard.R_OPCODE),
    (b"\x00\x09\x00\x00", guard.R_OPCODE),
    (b"\xff\xff\xff\xff" * 100, guard.R_OPCODE),
])
def test_malformed_packets_and_unknown_opcodes(svc, events, packet, reason):
    raw = Raw(svc)
    raw.send(packet)
    code = raw.expect_error()[0]
    assert code == (1 if reason == guard.R_NOT_FOUND else 4)
    assert events.wait(EV_REFUSED, reason)[0].port == raw.sock.getsockname()[1]
    assert_serving(svc)


def test_stray_transfer_packets_get_unknown_tid_and_errors_get_nothing(svc, events):
    raw = Raw(svc)
    for packet in (ack(1), b"\x00\x03\x00\x01data", b"\x00\x06blksize\x00512\x00"):
        raw.send(packet)
        assert raw.expect_error()[0] == 5  # RFC 1350 "unknown transfer ID"
    raw.send(b"\x00\x05\x00\x01boom\x00")
    assert raw.silent()  # never answer an error with an error
    assert_serving(svc)
    assert not events.of(EV_REFUSED)


# --- the transfer itself ---

def test_retransmits_on_timeout_ignores_duplicates_and_strangers(svc, events):
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin"))
    first, tid = raw.recv()
    again, _ = raw.recv()  # no ACK: the same block comes again after the session timeout
    assert first == again and first[:4] == b"\x00\x03\x00\x01"
    stranger = Raw(svc)
    stranger.send(ack(1), tid)  # the session socket is connected: the kernel drops this
    raw.send(ack(1), tid)
    second, _ = raw.recv()
    assert second[:4] == b"\x00\x03\x00\x02" and second[4:] == BIG[512:1024]
    raw.send(ack(1), tid)  # duplicate ACK: no resend (Sorcerer's Apprentice)
    raw.send(ack(2) + b"\0\0", tid)  # trailing bytes after a valid ACK are tolerated
    assert raw.recv()[0][:4] == b"\x00\x03\x00\x03"
    raw.send(b"\x00\x05\x00\x00cancelled\x00", tid)
    aborted = events.wait(EV_ABORTED, "client_error")[0]
    assert aborted.bytes == 3 * 512 and "cancelled" in aborted.error


def test_silent_client_times_out(svc, events):
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin", blksize=1024))
    raw.recv()  # OACK, never acknowledged
    assert events.wait(EV_ABORTED, "timeout")[0].filename == "sub/big.bin"
    raw.sock.settimeout(0.2)
    resent = 0
    with pytest.raises(socket.timeout):
        while True:
            raw.recv()
            resent += 1
    assert resent == 1  # the OACK was never acknowledged: one resend cycle (pump.FIRST_RETRIES), not retries=2
    assert svc._caps.count == 0


def test_client_that_went_away(svc, events):
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin"))
    raw.recv()
    raw.close()  # the resend hits a closed port: ICMP unreachable ends the session before its retries
    assert events.wait(EV_ABORTED)[0].reason == "client_gone"
    assert svc._caps.count == 0


def test_illegal_packet_inside_a_session(svc, events):
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin"))
    _, tid = raw.recv()
    raw.send(b"\x00\x03\x00\x01data", tid)
    assert raw.expect_error()[0] == 4
    assert events.wait(EV_ABORTED, "illegal_operation")[0].opcode == 3


# --- caps and floods ---

def _flood(svc, count, sources):
    """RRQs from `count` distinct source ports that never ACK; paced so no RRQ is lost in a full queue."""
    socks = []
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((sources[i % len(sources)], 0))
        s.sendto(rrq(b"sub/big.bin"), svc.address)
        socks.append(s)
        if i % 100 == 99:
            _wait_handled(svc, i + 1)
    _wait_handled(svc, count)
    return socks


def _wait_handled(svc, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while svc.counters["sessions"] + svc.counters["refused"] < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert svc.counters["sessions"] + svc.counters["refused"] >= n


def _refusals(events, reason, expected):
    """Refusals the events stand for (each carries a count); waits for the budget's summary events."""
    deadline = time.monotonic() + 30
    while sum(e.count for e in events.of(EV_REFUSED, reason)) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return sum(e.count for e in events.of(EV_REFUSED, reason))


@pytest.fixture
def many_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_flood_from_one_host_hits_the_per_client_cap(make_service, events, many_fds):
    svc = make_service(timeout=5.0)  # flood sessions stay open for the whole test
    socks = _flood(svc, 1100, ["127.0.0.2"])
    try:
        assert svc.counters["sessions"] == 16 and svc._caps.count == 16
        assert _refusals(events, guard.R_CLIENT_CAP, 1100 - 16) == 1100 - 16
        assert len(events.of(EV_REFUSED)) < 1100 - 16  # the event budget kept the events table small
        assert_serving(svc)  # another client is served while the flood's sessions are open
        assert curl(svc, "sub/big.bin").stdout == BIG
    finally:
        for s in socks:
            s.close()


def test_flood_past_the_select_limit_from_many_hosts(make_service, events, many_fds):
    # 900 open sessions plus 1,100 client sockets in this process: descriptors far above 1,024, where
    # tftpy's select() loop died. Over the total cap RRQs are refused with an error packet, but a fresh client
    # (holding no session) evicts the oldest unacknowledged flood session of a bigger holder and is served.
    # Flood sessions live 2 s + 4 s (timeout, one doubled retry): far longer than the flood takes.
    svc = make_service(tftp_max_sessions=900, tftp_max_sessions_per_client=900, timeout=2.0, retries=1)
    socks = _flood(svc, 1100, [f"127.0.{i // 250}.{2 + i % 250}" for i in range(300)])
    try:
        assert svc.counters["sessions"] == 900 and svc._caps.count == 900
        assert _refusals(events, guard.R_TOTAL_CAP, 200) == 200
        assert max(s.fileno() for s in socks) > 1024
        assert tftpy_get(svc, "sub/big.bin", timeout=1, retries=15) == BIG
        assert curl(svc, MAC_NAMES[0]).returncode == 0
        assert svc.counters["evicted"] >= 1
        events.wait(EV_ABORTED, "timeout", count=900 - svc.counters["evicted"])
    finally:
        for s in socks:
            s.close()


def test_over_the_cap_is_an_error_packet(make_service, events):
    svc = make_service(tftp_max_sessions_per_client=1, timeout=5.0)
    first = Raw(svc)
    first.send(rrq(b"sub/big.bin"))
    first.recv()
    second = Raw(svc)
    second.send(rrq(b"pxelinux.0"))
    reply = second.recv()[0]  # issue 15: RFC 1350 code 3 with a message, not a silent drop
    assert reply[:4] == b"\x00\x05\x00\x03" and b"too many sessions" in reply
    refused = events.wait(EV_REFUSED, guard.R_CLIENT_CAP)[0]
    assert (refused.filename, refused.client) == ("pxelinux.0", "127.0.0.1")


def _fetch_one_block(raw) -> bytes:
    """pxelinux.0 the way pxelinux asks (blksize: one DATA block), the last ACK sent; the first reply's opcode
    packet back if it was not the OACK."""
    raw.send(rrq(b"pxelinux.0", blksize=1468))
    reply, peer = raw.recv()
    if reply[:2] != b"\x00\x06":
        return reply
    raw.send(b"\x00\x04\x00\x00", peer)
    data, peer = raw.recv()
    raw.send(b"\x00\x04\x00\x01", peer)  # the last ACK; the next request follows at once
    return data


@pytest.mark.parametrize("cap", ["tftp_max_sessions_per_client", "tftp_max_sessions"])
def test_a_finished_session_no_longer_counts_against_either_cap(make_service, events, cap):
    # Issue 17: the client's next RRQ reached the deciding thread before the worker's report that the session
    # it had just acknowledged was over, and was refused over a place it no longer held.
    svc = make_service(**{cap: 1})
    for _ in range(150):
        data = _fetch_one_block(Raw(svc))
        assert data == b"\x00\x03\x00\x01" + b"PXELINUX" * 100, data[:60]
    assert svc.counters["refused"] == 0 and not events.of(EV_REFUSED)


def test_an_over_cap_request_waits_for_the_last_ack_it_needs(make_service, events, monkeypatch):
    monkeypatch.setattr(guard.Parked, "PARK_SECONDS", 30.0)  # the wait is bounded; here only the ACK ends it
    svc = make_service(tftp_max_sessions_per_client=1, timeout=5.0)
    first = Raw(svc)
    first.send(rrq(b"empty"))
    data, peer = first.recv()
    assert data == b"\x00\x03\x00\x01"  # all of it: only the last ACK is awaited
    second = Raw(svc)
    second.send(rrq(b"pxelinux.0"))
    assert second.silent(0.3)  # parked, not refused: the one place it needs frees with that ACK
    first.send(b"\x00\x04\x00\x01", peer)
    assert second.recv()[0][:4] == b"\x00\x03\x00\x01"
    assert svc.counters["refused"] == 0 and not events.of(EV_REFUSED)


def test_an_over_cap_request_whose_place_does_not_free_gets_an_error(make_service, events):
    svc = make_service(tftp_max_sessions_per_client=1, timeout=5.0)
    first = Raw(svc)
    first.send(rrq(b"empty"))
    assert first.recv()[0] == b"\x00\x03\x00\x01"  # never acknowledged: its place stays taken
    second = Raw(svc)
    second.send(rrq(b"pxelinux.0"))
    code, message, _ = second.expect_error()  # after at most Parked.PARK_SECONDS, never silence
    assert code == 3 and "too many sessions" in message
    refused = events.wait(EV_REFUSED, guard.R_CLIENT_CAP)[0]
    assert (refused.filename, refused.client, refused.count) == ("pxelinux.0", "127.0.0.1", 1)
    third = Raw(svc)
    third.send(rrq(b"pxelinux.0"))
    assert third.expect_error()[0] == 3  # the place is still taken: refused again, with an ERROR packet


def test_retransmitted_rrq_does_not_open_a_second_session(svc):
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin"))
    raw.send(rrq(b"sub/big.bin"))
    raw.recv()
    time.sleep(0.05)
    assert svc.counters["sessions"] == 1 and svc._caps.count == 1


# --- lifecycle ---

def test_startup_errors_are_clear(config, tmp_path, resolver):
    with pytest.raises(TftpStartupError, match="does not exist"):
        TftpService(config.replace(tftp_root=tmp_path / "missing"), resolver).start()
    (tmp_path / "root").mkdir()
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        cfg = config.replace(tftp_root=tmp_path / "root", tftp_port=busy.getsockname()[1])
        with pytest.raises(TftpStartupError, match="in use"):
            TftpService(cfg, resolver).start()
    finally:
        busy.close()


def test_stop_aborts_transfers_frees_the_port_and_is_idempotent(make_service, events, config, tree, resolver):
    svc = make_service(timeout=5.0)
    port = svc.address[1]
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin"))
    raw.recv()
    svc.stop()
    svc.stop()
    assert events.wait(EV_ABORTED, "shutdown")[0].filename == "sub/big.bin"
    with pytest.raises(RuntimeError):
        svc.address
    again = TftpService(config.replace(tftp_root=tree.root, tftp_port=port), resolver)
    with again:
        assert again.address[1] == port
        assert tftpy_get(again, "pxelinux.0") == b"PXELINUX" * 100
    assert not events.of(EV_ERROR)


def test_on_event_failures_do_not_stop_the_service(config, tree, resolver):
    def broken(*args):
        raise RuntimeError("events table locked")

    with TftpService(config.replace(tftp_root=tree.root), resolver, on_event=broken) as svc:
        with pytest.raises(TftpFileNotFoundError):
            tftpy_get(svc, "nope")
        assert tftpy_get(svc, "pxelinux.0") == b"PXELINUX" * 100


def test_port_reuse_starts_a_new_transfer_but_a_retransmitted_rrq_does_not(svc):
    """A client that reuses its source port for a new request has moved on: answer the new request (found by
    bench/config_latency.py: such RRQs were dropped as duplicates while the old session awaited its last ACK)."""
    raw = Raw(svc)
    raw.send(rrq(b"pxelinux.0"))
    first, peer = raw.recv()
    assert first[:4] == struct.pack("!HH", 3, 1)
    raw.send(rrq(b"pxelinux.0"))  # retransmitted before any ACK: the live session answers, no new one
    time.sleep(0.1)  # ordering only: let the server read the retransmission before the ACK (as on a wire)
    raw.send(ack(1), to=peer)
    last, _ = raw.recv()
    while last[:4] == struct.pack("!HH", 3, 1):  # a resend of block 1 may still be in flight
        last, _ = raw.recv()
    assert last[:4] == struct.pack("!HH", 3, 2) and svc.counters["sessions"] == 1
    raw.send(rrq(b"exact"))  # same port, new file, while the old final ACK was never sent
    data, new_peer = raw.recv()
    while new_peer == peer:  # drain resends from the old session, if any were queued
        data, new_peer = raw.recv()
    assert data == struct.pack("!HH", 3, 1) + b"e" * 512
    assert svc.counters["sessions"] == 2


# --- worker processes ---

def test_a_worker_that_dies_mid_transfer_costs_only_its_transfers(make_service, events):
    svc = make_service(workers=2)
    svc._workers.respawn_after = 0.0  # replace it, however young (the default guards against crash loops)
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin"))
    raw.recv()
    sid = svc._peers[raw.sock.getsockname()]
    deadline = time.monotonic() + 5  # the worker may answer before the service thread notes who has it
    while sid not in svc._workers.owner and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = svc._workers.owner[sid].proc
    os.kill(victim.pid, signal.SIGKILL)
    aborted = events.wait(EV_ABORTED, "worker_died")[0]
    assert (aborted.filename, aborted.source, aborted.port) == ("sub/big.bin", "static", raw.sock.getsockname()[1])
    assert svc._caps.count == 0 and not svc._peers
    def replaced() -> bool:  # the abort can be reported before the pool drops the dead worker from its list
        pids = [w.proc.pid for w in svc._workers.workers.values()]
        return len(pids) == 2 and victim.pid not in pids

    deadline = time.monotonic() + 15
    while not replaced() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert replaced(), [w.proc.pid for w in svc._workers.workers.values()]
    assert_serving(svc)


def test_each_mode_moves_the_bytes_where_it_says(make_service, request):
    """The fixture's two modes really differ: in "forked" the transfer is a child of its worker."""
    svc = make_service(workers=1)
    raw = Raw(svc)
    raw.send(rrq(b"sub/big.bin"))
    raw.recv()  # DATA 1, not acknowledged: the transfer waits
    (worker,) = svc._workers.workers.values()
    children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children").read_text().split()
    assert len(children) == (1 if request.node.callspec.params["make_service"] == "forked" else 0)


def test_no_worker_left_is_an_error_packet_and_an_event(svc, events):
    svc._workers.respawn_after = float("inf")  # as after a crash loop: none is replaced
    for w in list(svc._workers.workers.values()):
        os.kill(w.proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while svc._workers.workers and time.monotonic() < deadline:
        time.sleep(0.02)
    raw = Raw(svc)
    raw.send(rrq(b"pxelinux.0"))
    assert raw.expect_error()[:2] == (0, "internal error")
    refused = events.wait(EV_REFUSED, guard.R_UNAVAILABLE)[0]
    assert refused.filename == "pxelinux.0"
    assert svc._caps.count == 0 and svc.counters["sessions"] == 0
    assert svc._thread.is_alive()


def test_transfers_spread_over_the_workers(make_service):
    svc = make_service(workers=3, timeout=5.0)
    assert len(svc._workers.workers) == 3
    for _ in range(6):
        raw = Raw(svc)
        raw.send(rrq(b"sub/big.bin"))
        raw.recv()
    deadline = time.monotonic() + 5  # the last worker may answer before the service thread notes it
    while len(svc._workers.owner) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(len(w.sessions) for w in svc._workers.workers.values()) == [2, 2, 2]


def test_log_lines_about_a_per_mac_name_carry_the_mac(make_service, tmp_path, events, caplog):
    # The caller knows which names carry a MAC (runtime passes boot.filenames.mac_of_tftp_name); here, a table.
    svc = make_service(mac_of={"pxelinux.cfg/01-aa-bb-cc-dd-ee-0f": "aa:bb:cc:dd:ee:0f"}.get)
    upload = tmp_path / "up.bin"
    upload.write_bytes(b"evil")
    with caplog.at_level("WARNING", logger="provisioner.tftp.server"):
        with pytest.raises(TftpException, match="ERR"):
            TftpClient("127.0.0.1", svc.address[1]).upload("pxelinux.cfg/01-aa-bb-cc-dd-ee-0f", str(upload),
                                                             timeout=5, retries=1)
        events.wait(EV_REFUSED, guard.R_WRITE, count=1)
    refused = [r for r in caplog.records if r.name == "provisioner.tftp.server" and "refused" in r.getMessage()]
    assert refused and refused[0].mac == "aa:bb:cc:dd:ee:0f"

