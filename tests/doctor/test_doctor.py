"""`provisioner doctor`: a clean site passes; each seeded misconfiguration is found with its code and its fix.

Real files (tftp_root prepared from the installed syslinux/GRUB packages, an imported media tree), the real
serve runtime on loopback sockets, a real other HTTP server, a tmpfs for a full disk, the XAPI simulator for the
pool checks.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import make_media_tree, serve_process
from provisioner import doctor, media, netports
from provisioner.boot import loaders
from provisioner.cli import main
from provisioner.config import load_config
from provisioner.coordinator import pools
from provisioner.model import Host
from provisioner.runtime import Runtime
from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.store import Store
from provisioner.store.schema import SCHEMA_VERSION


def _config(tmp_path: Path, **overrides):
    http_port = overrides.pop("http_port", None) or netports.free_port(socket.SOCK_STREAM)
    values = {"data_dir": tmp_path / "data", "tftp_root": tmp_path / "root", "bind_address": "127.0.0.1",
              "tftp_port": netports.free_port(socket.SOCK_DGRAM), "http_port": http_port,
              "public_url": f"http://127.0.0.1:{http_port}", **overrides}
    return load_config(file=None, environ={}, overrides=values)


@pytest.fixture
def site(tmp_path):
    """A correctly set-up site: loaders from one build, media imported, one host, serve running on loopback."""
    config = _config(tmp_path)
    loaders.prepare_tftp_root(config)
    store = Store(config.db_path)
    tree = make_media_tree(tmp_path / "xs84")
    media.import_media(store, config, "xs84", tree)
    store.add_host(Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p", "ip": "127.0.0.9"}))
    runtime = Runtime(config, store).start()
    try:
        yield config, store, tree
    finally:
        runtime.stop()
        store.close()


def _by_code(findings) -> dict[str, list]:
    found: dict[str, list] = {}
    for f in findings:
        found.setdefault(f.code, []).append(f)
    return found


def _the(findings, code: str, status: str, *in_fix: str):
    """The one finding of `code` with `status`, whose fix names each of `in_fix`."""
    matching = [f for f in findings if f.code == code and f.status == status]
    assert matching, f"no {status} {code} in " + "\n".join(f"{f.status} {f.code}: {f.message}" for f in findings)
    for text in in_fix:
        assert text in matching[0].fix, (text, matching[0].fix)
    return matching[0]


def test_a_clean_site_passes(site):
    config, store, _ = site
    findings = doctor.run_checks(config, store)
    assert [f for f in findings if f.status == doctor.FAIL] == []
    statuses = {code: [f.status for f in fs] for code, fs in _by_code(findings).items()}
    # the one note: DHCP cannot name a TFTP port, and the test serves TFTP on a high one (a site uses 69)
    assert statuses["dhcp.snippet"] == [doctor.WARN] and "tftp_port is" in _the(findings, "dhcp.snippet", "warn").message
    for code in ("store.writable", "loaders.missing", "loaders.mixed", "loaders.stray",
                 "public_url.loopback", "public_url.https", "public_url.bind", "tftp.reachable", "http.reachable",
                 "media.incomplete", "disk.space"):
        assert statuses[code] == [doctor.OK], (code, statuses[code])
    assert statuses["clock"] == [doctor.SKIP] and statuses["tls.pools"] == [doctor.SKIP]  # no pool: said why
    assert "127.0.0.1" in _the(findings, "tftp.reachable", doctor.OK).message


def test_public_url_unset_while_listening_for_other_machines(site, tmp_path):
    config, store, _ = site
    seeded = config.replace(public_url="", bind_address="0.0.0.0")
    findings = doctor.run_checks(seeded, store, probes=False)
    _the(findings, "public_url.loopback", doctor.FAIL, "set public_url", "next-server")
    _the(findings, "dhcp.snippet", doctor.FAIL, "set public_url")  # no next-server to give DHCP either


def test_public_url_loopback_while_hosts_are_remote(site):
    config, store, _ = site
    store.add_host(Host.from_fields({"mac": "aa:bb:cc:dd:ee:02", "name": "h2", "pool": "p", "ip": "10.0.0.12"}))
    found = _the(doctor.run_checks(config, store, probes=False), "public_url.loopback", doctor.FAIL, "public_url")
    assert "h2" in found.message


def test_https_public_url(site):
    config, store, _ = site
    findings = doctor.run_checks(config.replace(public_url="https://127.0.0.1"), store, probes=False)
    _the(findings, "public_url.https", doctor.FAIL, "http://")


def test_public_url_port_is_not_the_http_port(site):
    config, store, _ = site
    findings = doctor.run_checks(config.replace(public_url="http://127.0.0.1:8081"), store, probes=False)
    _the(findings, "public_url.bind", doctor.WARN, "http_port")


def test_nothing_answers_tftp_on_next_server(site):
    config, store, _ = site
    findings = doctor.run_checks(config.replace(tftp_port=netports.free_port(socket.SOCK_DGRAM)), store)
    _the(findings, "tftp.reachable", doctor.FAIL, "start serve", "firewall")
    _the(findings, "http.reachable", doctor.OK)


def test_public_url_answered_by_another_server(site, tmp_path):
    """Something else listens where public_url points (a stale web server): its files are not ours."""
    config, store, _ = site
    other = tmp_path / "other"
    (other / "tftp").mkdir(parents=True)
    (other / "tftp" / "pxelinux.0").write_bytes(b"someone else's loader")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(other)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        findings = doctor.run_checks(config.replace(public_url=f"http://127.0.0.1:{server.server_port}"), store)
    finally:
        server.shutdown()
        server.server_close()
    _the(findings, "http.reachable", doctor.FAIL, "public_url must be this server")


def test_nothing_answers_at_public_url(site):
    config, store, _ = site
    nobody = netports.free_port(socket.SOCK_STREAM)
    findings = doctor.run_checks(config.replace(public_url=f"http://127.0.0.1:{nobody}"), store)
    _the(findings, "http.reachable", doctor.FAIL, "start serve")


def test_a_loader_is_missing(site):
    config, store, _ = site
    (config.tftp_root / "mboot.c32").unlink()
    found = _the(doctor.run_checks(config, store, probes=False), "loaders.missing", doctor.FAIL,
                 "provisioner tftp-root prepare")
    assert "mboot.c32" in found.message


def test_modules_of_another_syslinux_build(site):
    config, store, _ = site
    ldlinux = config.tftp_root / "ldlinux.c32"
    ldlinux.write_bytes(ldlinux.read_bytes()[:-64] + bytes(64))  # not the installed build's ldlinux.c32
    found = _the(doctor.run_checks(config, store, probes=False), "loaders.mixed", doctor.FAIL,
                 "provisioner tftp-root prepare")
    assert "ldlinux.c32" in found.message and "pxelinux.0" not in found.message.split(" in ")[0]


def test_pxelinux_and_lpxelinux_of_two_versions(site):
    config, store, _ = site
    lpx = config.tftp_root / "lpxelinux.0"
    data = lpx.read_bytes()
    assert b"PXELINUX 6.04 lwIP" in data  # Debian's syslinux (docs/deploy.md)
    lpx.write_bytes(data.replace(b"PXELINUX 6.04 lwIP", b"PXELINUX 6.03 lwIP"))
    found = _the(doctor.run_checks(config, store, probes=False), "loaders.mixed", doctor.FAIL, "tftp-root prepare")
    assert "6.03" in found.message and "6.04" in found.message


def test_a_per_mac_file_in_tftp_root(site):
    config, store, _ = site
    (config.tftp_root / "pxelinux.cfg").mkdir()
    (config.tftp_root / "pxelinux.cfg" / "01-aa-bb-cc-dd-ee-01").write_text("default local\n")
    _the(doctor.run_checks(config, store, probes=False), "loaders.stray", doctor.FAIL, "remove pxelinux.cfg/")


def test_media_tree_lost_a_boot_file(site):
    config, store, tree = site
    (tree / "boot" / "vmlinuz").unlink()
    found = _the(doctor.run_checks(config, store, probes=False), "media.incomplete", doctor.FAIL,
                 "provisioner media add xs84")
    assert "boot/vmlinuz is missing" in found.message


def test_media_tree_lost_its_treeinfo(site):
    config, store, tree = site
    (tree / ".treeinfo").unlink()
    found = _the(doctor.run_checks(config, store, probes=False), "media.incomplete", doctor.FAIL, "restore the tree")
    assert ".treeinfo" in found.message


def test_no_media_imported(tmp_path):
    config = _config(tmp_path)
    _the(doctor.run_checks(config, probes=False), "media.none", doctor.WARN, "provisioner media add")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_data_dir_nearly_full(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)], check=True)
    try:
        findings = doctor.run_checks(_config(tmp_path), probes=False)
        found = _the(findings, "disk.space", doctor.FAIL, "free space", "data_dir")
        assert "GiB free" in found.message
    finally:
        subprocess.run(["umount", str(data)], check=True)


def test_database_newer_than_the_program(tmp_path):
    config = _config(tmp_path)
    Store(config.db_path).close()
    with contextlib.closing(sqlite3.connect(config.db_path)) as db, db:
        db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, '')", (SCHEMA_VERSION + 1,))
    _the(doctor.run_checks(config, probes=False), "store.schema", doctor.FAIL, "upgrade the provisioner package")


def test_database_file_is_not_ours(tmp_path):
    config = _config(tmp_path)
    config.data_dir.mkdir()
    config.db_path.write_bytes(b"this is not an SQLite database, just a stray file" * 100)
    findings = doctor.run_checks(config, probes=False)
    _the(findings, "store.writable", doctor.FAIL, "restore", "backup")
    assert "media.none" not in {f.code for f in findings}  # nothing opened the store it could not check


def test_data_dir_not_writable(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    config = _config(tmp_path, data_dir=tmp_path / "file" / "data")
    findings = [doctor.files.store_ready(config)]
    _the(findings, "store.writable", doctor.FAIL, "write access", "data_dir")


def test_public_url_by_name_gives_dhcp_no_next_server(site):
    config, store, _ = site
    findings = doctor.run_checks(config.replace(public_url="http://provisioner.example"), store, probes=False)
    _the(findings, "dhcp.snippet", doctor.FAIL, "public_url")


@pytest.fixture
def pool_site(site):
    """The site with one registered simulated pool (trust pinned) whose clock runs at real speed."""
    config, store, _ = site
    world = new_world(Clock(speed=1.0))
    build_pool(world, "p", hosts=1, vms_per_host=0)
    sim = serve_world(world)
    pools.add_pool(store, "p", sim.master_url(), "root", "pw", fingerprint=sim.master_fingerprint())
    try:
        yield config, store, world, sim
    finally:
        sim.stop()


def test_pool_trusted_and_clock_in_step(pool_site):
    config, store, _, _ = pool_site
    findings = doctor.run_checks(config, store)
    _the(findings, "tls.pools", doctor.OK)
    _the(findings, "clock", doctor.OK)


def test_pool_certificate_not_the_pinned_one(pool_site):
    config, store, _, sim = pool_site
    pools.add_pool(store, "p", sim.master_url(), "root", "pw", fingerprint="ab" * 32)
    found = _the(doctor.run_checks(config, store), "tls.pools", doctor.FAIL, "provisioner pools trust p")
    assert "p" in found.message


def test_pool_clock_an_hour_ahead(pool_site):
    config, store, world, _ = pool_site
    world.clock._sim0 += 3600  # the coordinator's clock jumps an hour ahead (a broken time source)
    found = _the(doctor.run_checks(config, store), "clock", doctor.FAIL, "NTP")
    assert "ahead" in found.message


def test_cli_doctor_json_and_exit_status(site):
    config, store, _ = site
    env = {"PROVISIONER_CONFIG": "", **{f"PROVISIONER_{k.upper()}": str(v) for k, v in {
        "data_dir": config.data_dir, "tftp_root": config.tftp_root, "bind_address": "127.0.0.1",
        "tftp_port": config.tftp_port, "http_port": config.http_port, "public_url": config.public_url}.items()}}
    r = CliRunner().invoke(main, ["doctor", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert {f["code"] for f in json.loads(r.output)} >= {"tftp.reachable", "http.reachable", "media.incomplete"}
    shutil.rmtree(config.tftp_root)
    config.tftp_root.mkdir()
    r = CliRunner().invoke(main, ["doctor"], env=env)
    assert r.exit_code == 1
    assert "FAIL    loaders.missing" in r.output and "provisioner tftp-root prepare" in r.output


def test_serve_logs_the_failures_at_start(tmp_path):
    """serve runs the same checks once listening: not fatal, each failure logged with its fix."""
    with serve_process(tmp_path) as proc:  # an empty tftp_root: no loader at all
        assert "HTTP on" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        line = ""
        while "doctor:" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "loaders.missing" in line, line
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "doctor fail loaders.missing" in err and "provisioner tftp-root prepare" in err


def test_cli_doctor_on_postgresql_reads_that_database_and_leaves_no_sqlite_file(tmp_path, pg_url):
    """With database_url set, doctor checks the PostgreSQL database serve uses (Store.from_config): its schema
    version, the media imported there; no stray data_dir/provisioner.db is created (issue 22)."""
    config = _config(tmp_path, database_url=pg_url)
    loaders.prepare_tftp_root(config)
    store = Store.from_config(config)
    try:
        media.import_media(store, config, "xs84", make_media_tree(tmp_path / "xs84"))
    finally:
        store.close()
    env = {"PROVISIONER_CONFIG": "", **{f"PROVISIONER_{k.upper()}": str(v) for k, v in {
        "data_dir": config.data_dir, "tftp_root": config.tftp_root, "bind_address": "127.0.0.1",
        "tftp_port": config.tftp_port, "http_port": config.http_port, "public_url": config.public_url,
        "database_url": pg_url}.items()}}
    r = CliRunner().invoke(main, ["doctor", "--json"], env=env)
    findings = {f["code"]: f for f in json.loads(r.output)}
    assert findings["store.writable"]["status"] == "ok", findings["store.writable"]
    assert f"at schema version {SCHEMA_VERSION}" in findings["store.writable"]["message"]
    assert pg_url.rsplit("@", 1)[-1] in findings["store.writable"]["message"]  # names the database, not a file
    assert findings["media.incomplete"]["status"] == "ok" and "media.none" not in findings  # read from PostgreSQL
    assert not config.db_path.exists() and not list(config.data_dir.glob("*.db*"))
