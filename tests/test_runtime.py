"""`serve` over real sockets on loopback: real TFTP clients (tftpy, tftp-hpa, curl) and HTTP, one decision."""

import io
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests
import tftpy

from helpers import make_media_tree, serve_process
from provisioner import media
from provisioner.boot import attempts
from provisioner.model import Host
from provisioner.boot.service import tftp_media_file
from provisioner.runtime import Runtime, StartupError

ARMED, KNOWN, UNKNOWN = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:99"


def dashed(mac):
    return mac.replace(":", "-")


@pytest.fixture
def running(config, store, tmp_path):
    root = tmp_path / "tftp_root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(b"PXE" * 1000)
    cfg = config.replace(tftp_root=root)
    media.import_media(store, cfg, "xs84", make_media_tree(tmp_path / "tree"))
    for mac, name in ((ARMED, "h1"), (KNOWN, "h2")):
        store.add_host(Host.from_fields({"mac": mac, "name": name, "pool": "p", "disk": "/dev/disk/by-id/d-" + name}))
    attempt = attempts.arm(store, cfg, ARMED, "xs84")
    rt = Runtime(cfg, store).start()
    yield rt, attempt
    rt.stop()


def tftp_get(rt, name, **options):
    ip, port = rt.tftp.address
    out = io.BytesIO()
    tftpy.TftpClient(ip, port, options=options).download(name, out, timeout=2)
    return out.getvalue()


@pytest.mark.parametrize("names", [
    ("pxelinux.cfg/01-{d}", b"answerfile=", b"localboot 0"),
    ("grub/grub.cfg-01-{d}", b"answerfile=", b"exit"),
    ("/grub/grub.cfg-{m}", b"answerfile=", b"exit"),
])
def test_one_decision_on_every_tftp_name(running, names):
    rt, attempt = running
    template, installer_marker, local_marker = names
    armed = tftp_get(rt, template.format(d=dashed(ARMED), m=ARMED))
    assert installer_marker in armed and attempt.token.encode() in armed
    known = tftp_get(rt, template.format(d=dashed(KNOWN), m=KNOWN))
    unknown = tftp_get(rt, template.format(d=dashed(UNKNOWN), m=UNKNOWN))
    for body in (known, unknown):
        assert installer_marker not in body and local_marker in body


def test_reinstall_loop_over_real_sockets(running):
    rt, attempt = running
    base = rt.http.url
    assert b"answerfile=" in tftp_get(rt, f"pxelinux.cfg/01-{dashed(ARMED)}")
    assert requests.get(f"{base}/boot/answerfile/{attempt.token}", timeout=5).status_code == 200
    start = requests.get(f"{base}/boot/script/{attempt.token}/installation-start", timeout=5)
    assert start.status_code == 200 and start.text.startswith("#!/bin/sh")
    # the installer reboots the host: every path now says local boot
    assert b"localboot 0" in tftp_get(rt, f"pxelinux.cfg/01-{dashed(ARMED)}")
    assert b"answerfile" not in tftp_get(rt, f"grub/grub.cfg-01-{dashed(ARMED)}")
    assert b"answerfile" not in requests.get(f"{base}/boot/ipxe/{dashed(ARMED)}", timeout=5).content
    assert requests.get(f"{base}/boot/answerfile/{attempt.token}", timeout=5).status_code == 404


def test_static_and_media_files_over_tftp(running, tmp_path):
    rt, _ = running
    assert tftp_get(rt, "pxelinux.0") == b"PXE" * 1000
    assert tftp_get(rt, "xenserver/xs84/boot/xen.gz") == (tmp_path / "tree" / "boot" / "xen.gz").read_bytes()
    assert tftp_media_file(rt.store, "xenserver/xs84/../../etc/passwd") is None
    assert tftp_media_file(rt.store, "xenserver/nope/boot/xen.gz") is None


def test_curl_tftp_client(running):
    rt, attempt = running
    ip, port = rt.tftp.address
    out = subprocess.run(["curl", "-s", f"tftp://{ip}:{port}/pxelinux.cfg/01-{dashed(ARMED)}"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0 and attempt.token.encode() in out.stdout


def test_tftp_hpa_client(running, tmp_path):
    rt, _ = running
    ip, port = rt.tftp.address
    out = subprocess.run(["tftp", ip, str(port), "-c", "get", f"pxelinux.cfg/01-{dashed(KNOWN)}",
                          str(tmp_path / "got")], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert b"localboot 0" in (tmp_path / "got").read_bytes()


def test_events_from_the_tftp_thread_reach_the_store(running):
    rt, _ = running
    ip, port = rt.tftp.address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a write request
        sock.sendto(b"\x00\x02evil.txt\x00octet\x00", (ip, port))
        sock.settimeout(3)
        reply, _ = sock.recvfrom(1024)
    assert reply[:2] == b"\x00\x05"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [e for e in rt.store.events() if e["kind"].startswith("tftp.")]:
        time.sleep(0.05)
    assert [e for e in rt.store.events() if e["kind"].startswith("tftp.")]


def test_port_in_use_is_a_clear_startup_error(config, store, tmp_path):
    (tmp_path / "r").mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = config.replace(tftp_root=tmp_path / "r", http_port=busy.getsockname()[1])
        with pytest.raises(StartupError, match=str(busy.getsockname()[1])):
            Runtime(cfg, store).start()
    with pytest.raises(StartupError, match="tftp_root"):
        Runtime(config.replace(tftp_root=tmp_path / "missing"), store).start()


def test_startup_refuses_per_mac_files_in_the_root(config, store, tmp_path):
    root = tmp_path / "tftp_root"
    root.mkdir()
    cfg = config.replace(tftp_root=root)
    for stray in ("pxelinux.cfg/default", "grub.cfg", "EFI/xenserver/grub.cfg", "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff"):
        path = root / stray
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        with pytest.raises(StartupError, match="per-MAC"):
            Runtime(cfg, store).start()
        shutil.rmtree(root / stray.split("/")[0]) if "/" in stray else path.unlink()
    Runtime(cfg, store).start().stop()


def test_serve_command_stops_cleanly_on_sigterm(tmp_path):
    with serve_process(tmp_path) as proc:
        line = proc.stdout.readline()
        warning = proc.stdout.readline()
        assert "lacks pxelinux.0" in warning and "tftp-root prepare" in warning
        assert "TFTP on udp 127.0.0.1:" in line and "HTTP on http://127.0.0.1:" in line
        url = line.split("HTTP on ")[1].split(";")[0]
        assert requests.get(f"{url}/boot/ipxe/{dashed(UNKNOWN)}", timeout=5).status_code == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopping" in out


def test_serve_warns_that_an_https_public_url_gets_no_installer(tmp_path):
    with serve_process(tmp_path, PROVISIONER_PUBLIC_URL="https://192.0.2.1") as proc:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert "booting hosts are told https://192.0.2.1" in lines[0]
        assert "public_url is https" in lines[2] and "installer boot configs are refused" in lines[2]
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0


def test_serve_resumes_runs_in_progress_at_start_up_and_stops_them_resumably(tmp_path):
    """A run left in progress (a crash right after it was created) is resumed by the next `serve`; SIGTERM
    interrupts it at its next wait (announced), and the `serve` after that finishes it: one install per host."""
    from labs import MEDIA, POOL
    from serve_lab import make_serve_lab

    from provisioner import states
    from provisioner.coordinator import pools, runner

    lab = make_serve_lab(tmp_path, hosts=2)
    try:
        driver = pools.connect(lab.store, POOL, timeout=5)
        run = runner.start_run(lab.store, POOL, MEDIA, driver)
        driver.close()
        lab.start_serve()
        deadline = time.monotonic() + 300
        while lab.store.get_run_host(run.id, lab.world.pools[POOL].hosts[0].mac).step != states.STEP_WAIT_UP:
            assert time.monotonic() < deadline, lab.output()
            time.sleep(0.02)
        assert lab.kill(signal.SIGTERM) == 0
        first = lab.output()
        assert f"resuming upgrade run {run.id} of pool {POOL} (was precheck)" in first
        assert f"upgrade run {run.id} interrupted" in first and "stopping" in first
        assert lab.store.get_run(run.id).state not in states.RUN_TERMINAL
        assert lab.store.events(run_id=run.id, kind="run.interrupted")
        lab.start_serve()
        while lab.store.get_run(run.id).state not in states.RUN_TERMINAL:
            assert time.monotonic() < deadline, lab.output()
            time.sleep(0.05)
        assert lab.store.get_run(run.id).state == states.RUN_DONE
        assert lab.output().count(f"resuming upgrade run {run.id}") == 2
        assert [lab.handler.machine(h.mac).installs() for h in lab.world.pools[POOL].hosts] == [1, 1]
    finally:
        lab.stop()
