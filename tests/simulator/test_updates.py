"""The simulator's update side through the real XenAPI package: repositories, PUT /bundle, pool.sync_updates,
GET /updates, host.apply_updates, pending guidances carried out, the ISO install resetting the level, and pool.join
refused then accepted after Repository.introduce_remote_pool (docs/simulator.md "Updates").

Bundles and mirrors are real-format repositories written by tests/support/bundles.py, signed with a test key."""

from __future__ import annotations

import http.server
import json
import tarfile
import threading
import time
import urllib.error
import urllib.request
from functools import partial

import bundles
import pytest
import sim_tls
import XenAPI

from provisioner.simulator.builder import build_pool, new_world, serve_world
from provisioner.simulator.clock import Clock
from provisioner.simulator.updates import UpdateConf

TOOLSTACK_ONLY = (bundles.Update("XS8E010", mandatory=("RestartToolstack",),
                                 packages=(("xapi-core", "24.19.5", "1.1.xs8"),)),)


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return bundles.signing_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def sim(key):
    """Pool "big" (2 hosts at 8.4.0, no VMs) whose ISO key is the test key, served over HTTPS."""
    world = new_world(Clock(2000.0))
    world.update_conf = UpdateConf(gpg_key=key.armored.read_bytes())
    big = build_pool(world, "big", hosts=2, version="8.4.0", vms_per_host=0)
    handle = serve_world(world)
    yield world, big, handle
    handle.stop()


def login(url):
    s = sim_tls.session(url)
    s.xenapi.login_with_password("root", "any", "1.0", "test")
    return s


def wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def put_bundle(url, s, path):
    """PUT the bundle with a session and a task, as xe / XenCenter do; the task's outcome."""
    task = s.xenapi.task.create("upload", "bundle")
    req = urllib.request.Request(f"{url.rstrip('/')}/bundle?session_id={s._session}&task_id={task}",
                                 data=path.read_bytes(), method="PUT")
    with urllib.request.urlopen(req, context=sim_tls.context(url), timeout=30) as resp:
        assert resp.status == 200  # xapi answers 200 before reading the bundle (xapi_pool.ml:4467)
    return s.xenapi.task.get_status(task), s.xenapi.task.get_error_info(task)


def bundle_repo(s):
    pool = s.xenapi.pool.get_all()[0]
    repo = s.xenapi.Repository.introduce_bundle("bundle", "offline")
    s.xenapi.pool.set_repositories(pool, [repo])
    return repo


def test_bundle_apply_reboot_clears_guidance_and_reports_the_new_xapi(sim, key, tmp_path):
    world, big, handle = sim
    info = bundles.build_bundle(tmp_path / "u.xsbundle", key=key)
    url = handle.master_url()
    s = login(url)
    repo = bundle_repo(s)
    assert put_bundle(url, s, info.path) == ("success", [])
    digest = s.xenapi.Repository.get_hash(repo)
    assert len(digest) == 64
    master = big.master.ref
    assert s.xenapi.host.get_latest_synced_updates_applied(master) == "no"
    # GET /updates: per host what it lacks, with the reduced guidance (RebootHost covers RestartToolstack)
    req = urllib.request.Request(f"{url.rstrip('/')}/updates?session_id={s._session}")
    with urllib.request.urlopen(req, context=sim_tls.context(url), timeout=30) as resp:
        listing = json.loads(resp.read())
    assert listing["hash"] == digest and {u["id"] for u in listing["updates"]} == {"XS8E001", "XS8E002"}
    host = next(h for h in listing["hosts"] if h["ref"] == master)
    assert host["updates"] == ["XS8E001", "XS8E002"] and host["guidance"] == {"mandatory": ["RebootHost"]}
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.host.apply_updates(master, "0" * 64)
    assert err.value.details == ["UPDATEINFO_HASH_MISMATCH"]
    old_git = s.xenapi.host.get_software_version(master)["git_id"]
    assert s.xenapi.host.apply_updates(master, digest) == []
    rec = s.xenapi.host.get_record(master)
    assert rec["pending_guidances"] == ["reboot_host"] and not rec["enabled"]  # apply disabled it first
    assert rec["last_update_hash"] == digest and rec["latest_synced_updates_applied"] == "yes"
    assert rec["software_version"]["git_id"] == old_git  # the running xapi is still the old one
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.host.enable(master)
    assert err.value.details == ["HOST_PENDING_MANDATORY_GUIDANCES_NOT_EMPTY", master]
    with pytest.raises(XenAPI.Failure) as err:  # a second apply waits for the guidance to be carried out
        s.xenapi.host.apply_updates(master, digest)
    assert err.value.details == ["HOST_PENDING_MANDATORY_GUIDANCES_NOT_EMPTY", master]
    s.xenapi.host.reboot(master)
    wait(lambda: big.master.boot_count == 1 and big.master.serving and big.db.get("host", master)["enabled"])
    s = login(url)
    rec = s.xenapi.host.get_record(master)
    assert rec["pending_guidances"] == [] and rec["enabled"]  # consider_enabling_host enabled it
    assert rec["software_version"]["xapi_build"] == "24.19.1" and rec["software_version"]["git_id"] != old_git
    assert sorted(big.master.applied_updates) == ["XS8E001", "XS8E002"]


def test_toolstack_restart_clears_restart_toolstack(sim, key, tmp_path):
    world, big, handle = sim
    info = bundles.build_bundle(tmp_path / "t.xsbundle", key=key, updates=TOOLSTACK_ONLY)
    url = handle.master_url()
    s = login(url)
    bundle_repo(s)
    assert put_bundle(url, s, info.path) == ("success", [])
    member = big.hosts[1].ref
    digest = s.xenapi.Repository.get_hash(s.xenapi.Repository.get_all()[0])
    s.xenapi.host.apply_updates(member, digest)
    assert s.xenapi.host.get_pending_guidances(member) == ["restart_toolstack"]
    s.xenapi.host.restart_agent(member)
    wait(lambda: not big.db.get("host", member)["pending_guidances"] and big.hosts[1].serving
         and big.db.get("host", member)["enabled"])
    assert big.db.get("host", member)["software_version"]["xapi_build"] == "24.19.5"
    assert big.hosts[1].boot_count == 0  # a toolstack restart is not a boot


@pytest.mark.parametrize("variant, expected", [
    (dict(key=None), ["BUNDLE_SYNC_FAILED"]),                       # unsigned: repo_gpgcheck fails
    (dict(corrupt="signature"), ["BUNDLE_SYNC_FAILED"]),            # repomd.xml changed after signing
    (dict(corrupt="package"), ["BUNDLE_SYNC_FAILED"]),              # an RPM fails its checksum
    (dict(corrupt="missing-metadata"), ["BUNDLE_SYNC_FAILED"]),
    (dict(truncate=3000), ["BUNDLE_UNPACK_FAILED", "File incomplete"]),
    (dict(extra=("../escape", tarfile.REGTYPE)), ["BUNDLE_UNPACK_FAILED", "Illegal file path: ../escape"]),
    (dict(extra=("link", tarfile.SYMTYPE)), ["BUNDLE_UNPACK_FAILED", "Unsupported file type: Symbolic"]),
], ids=["unsigned", "signature", "package", "metadata", "truncated", "dotdot", "symlink"])
def test_bad_bundles_fail_the_task_with_xapis_code(sim, key, tmp_path, variant, expected):
    world, big, handle = sim
    extra = variant.pop("extra", None)
    members = None
    if extra:
        member = tarfile.TarInfo(extra[0])
        member.type, member.size = extra[1], 0
        member.linkname = "/etc/passwd" if extra[1] == tarfile.SYMTYPE else ""
        members = [member]
    kwargs = {"key": key, **variant}
    info = bundles.build_bundle(tmp_path / "bad.xsbundle", extra_members=members, **kwargs)
    url = handle.master_url()
    s = login(url)
    repo = bundle_repo(s)
    assert put_bundle(url, s, info.path) == ("failure", expected)
    assert s.xenapi.Repository.get_hash(repo) == ""  # nothing synced
    assert not big.synced


def test_a_bundle_signed_by_another_key_is_refused(sim, tmp_path_factory, tmp_path):
    world, big, handle = sim
    other = bundles.signing_key(tmp_path_factory.mktemp("other"), name="other")
    info = bundles.build_bundle(tmp_path / "o.xsbundle", key=other)
    url = handle.master_url()
    s = login(url)
    bundle_repo(s)
    assert put_bundle(url, s, info.path) == ("failure", ["BUNDLE_SYNC_FAILED"])


def test_repository_rules(sim, key, tmp_path):
    world, big, handle = sim
    s = login(handle.master_url())
    pool = s.xenapi.pool.get_all()[0]
    bundle = s.xenapi.Repository.introduce_bundle("bundle", "")
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.introduce_bundle("bundle2", "")
    assert err.value.details == ["BUNDLE_REPOSITORY_ALREADY_EXISTS", bundle]
    with pytest.raises(XenAPI.Failure) as err:  # the source URL is checked like the binary one (repository.ml:36-39)
        s.xenapi.Repository.introduce("cdn", "", "https://repo.example.com/8.4/", "", True, "")
    assert err.value.details == ["INVALID_BASE_URL", ""]
    mirror = s.xenapi.Repository.introduce("cdn", "", "https://repo.example.com/8.4/",
                                           "https://repo.example.com/8.4-src/", True, "")
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.pool.set_repositories(pool, [bundle, mirror])
    assert err.value.details == ["REPO_SHOULD_BE_SINGLE_ONE_ENABLED"]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.host.apply_updates(big.master.ref, "x")
    assert err.value.details == ["NO_REPOSITORY_ENABLED"]
    s.xenapi.pool.set_repositories(pool, [bundle])
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.pool.sync_updates(pool, False, "", "")
    assert err.value.details == ["CAN_NOT_SYNC_UPDATES"]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.forget(bundle)
    assert err.value.details == ["REPOSITORY_IS_IN_USE"]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.introduce("cdn", "", "https://other.example.com/", "https://other.example.com/s/",
                                      True, "")
    assert err.value.details == ["REPOSITORY_ALREADY_EXISTS", mirror]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.introduce("ftp", "", "ftp://repo.example.com/", "https://repo.example.com/", True, "")
    assert err.value.details == ["INVALID_BASE_URL", "ftp://repo.example.com/"]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.introduce_remote_pool("rp", "", "https://pool.example.com/repository/enabled", "")
    assert err.value.details == ["INVALID_BASE_URL", "https://pool.example.com/repository/enabled"]
    big.update_conf = UpdateConf(allowlist=["updates.example.com"], blocklist=[r"/blocked/"])
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.introduce("a", "", "https://repo.example.org/x/", "https://updates.example.com/s/",
                                      True, "")
    assert err.value.details == ["INVALID_BASE_URL", "https://repo.example.org/x/"]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.introduce("b", "", "https://cdn.updates.example.com/blocked/",
                                      "https://cdn.updates.example.com/s/", True, "")
    assert err.value.details == ["BLOCKED_REPO_URL", "https://cdn.updates.example.com/blocked/"]
    s.xenapi.Repository.introduce("c", "", "https://cdn.updates.example.com/8.4/",
                                  "https://cdn.updates.example.com/8.4-src/", True, "")
    s.xenapi.pool.set_repositories(pool, [])
    s.xenapi.Repository.forget(bundle)
    assert bundle not in s.xenapi.Repository.get_all()


@pytest.fixture
def mirror(tmp_path, key):
    """An unpacked repository served over plain HTTP (what `provisioner updates add` serves like media)."""
    root = tmp_path / "mirror"
    bundles.build_repo(root, key=key, updates=TOOLSTACK_ONLY)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_mirror_sync_fetches_over_http_and_applies(sim, mirror):
    world, big, handle = sim
    s = login(handle.master_url())
    pool = s.xenapi.pool.get_all()[0]
    repo = s.xenapi.Repository.introduce("mirror", "", mirror, mirror + "src/", True, "")
    s.xenapi.pool.set_repositories(pool, [repo])
    task = s.xenapi.Async.pool.sync_updates(pool, False, "", "")
    wait(lambda: s.xenapi.task.get_status(task) != "pending")
    assert s.xenapi.task.get_status(task) == "success"
    digest = s.xenapi.Repository.get_hash(repo)
    assert digest and digest in s.xenapi.task.get_result(task)
    assert s.xenapi.pool.get_last_update_sync(pool).value != "19700101T00:00:00Z"
    for h in big.hosts:
        s.xenapi.host.apply_updates(h.ref, digest)
    assert {h.name: sorted(h.applied_updates) for h in big.hosts} == {"big-host0": ["XS8E010"],
                                                                        "big-host1": ["XS8E010"]}


def test_mirror_with_a_key_it_was_not_signed_with_fails_reposync(sim, mirror):
    world, big, handle = sim
    big.update_conf = UpdateConf(gpg_key=None)
    s = login(handle.master_url())
    pool = s.xenapi.pool.get_all()[0]
    s.xenapi.pool.set_repositories(pool, [s.xenapi.Repository.introduce("mirror", "", mirror, mirror + "src/", True, "")])
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.pool.sync_updates(pool, False, "", "")
    assert err.value.details == ["REPOSYNC_FAILED"]


def test_apply_refuses_a_host_with_vms_when_a_guidance_reboots_it(key, tmp_path):
    world = new_world(Clock(2000.0))
    world.update_conf = UpdateConf(gpg_key=key.armored.read_bytes())
    pool = build_pool(world, "p", hosts=2, version="8.4.0", vms_per_host=1)
    handle = serve_world(world)
    try:
        info = bundles.build_bundle(tmp_path / "u.xsbundle", key=key)
        url = handle.master_url()
        s = login(url)
        repo = bundle_repo(s)
        put_bundle(url, s, info.path)
        with pytest.raises(XenAPI.Failure) as err:
            s.xenapi.host.apply_updates(pool.master.ref, s.xenapi.Repository.get_hash(repo))
        assert err.value.details == ["HOST_EVACUATION_IS_REQUIRED", pool.master.ref]
        assert not pool.master.applied_updates
    finally:
        handle.stop()


def _join(url, master_address):
    s = login(url)
    try:
        s.xenapi.pool.join(master_address, "root", "any")
    finally:
        try:
            s.xenapi.session.logout()
        except XenAPI.Failure:
            pass


def test_reinstalled_host_is_refused_then_converges_from_the_pool_and_joins(key, tmp_path):
    info = bundles.build_bundle(tmp_path / "u.xsbundle", key=key)
    world = new_world(Clock(2000.0))
    world.update_conf = UpdateConf(gpg_key=key.armored.read_bytes())
    big = build_pool(world, "big", hosts=2, version="8.4.0", vms_per_host=0, updates=info.path)
    new = build_pool(world, "new", hosts=1, version="8.4.0", vms_per_host=0, address="127.0.0.2")
    handle = serve_world(world)
    try:
        assert sorted(big.master.applied_updates) == ["XS8E001", "XS8E002"] and not new.master.applied_updates
        big_url, new_url = handle.master_url("big"), handle.master_url("new")
        sb = login(big_url)
        bundle_repo(sb)
        assert put_bundle(big_url, sb, info.path) == ("success", [])
        with pytest.raises(XenAPI.Failure) as err:  # the updated xapi-core: another xapi build (git_id)
            _join(new_url, big.master.address)
        assert err.value.details == ["POOL_HOSTS_NOT_HOMOGENEOUS", "Software version differs"]
        joiner = new.master
        s = login(new_url)
        port = handle.endpoints[big.master.mac].host.port
        binary_url = f"https://{big.master.address}:{port}/repository/enabled"
        with pytest.raises(XenAPI.Failure) as err:  # a certificate that is not the coordinator's
            repo = s.xenapi.Repository.introduce_remote_pool("bad", "", binary_url,
                                                             handle.cert_pem(joiner.mac).decode())
            s.xenapi.pool.set_repositories(s.xenapi.pool.get_all()[0], [repo])
            s.xenapi.pool.sync_updates(s.xenapi.pool.get_all()[0], False, "", "", "root", "any")
        assert err.value.details[0] == "SSL_VERIFY_ERROR"
        pool_ref = s.xenapi.pool.get_all()[0]
        s.xenapi.pool.set_repositories(pool_ref, [])
        s.xenapi.Repository.forget(repo)
        repo = s.xenapi.Repository.introduce_remote_pool("pool", "", binary_url,
                                                         handle.cert_pem(big.master.mac).decode())
        s.xenapi.pool.set_repositories(pool_ref, [repo])
        digest = s.xenapi.pool.sync_updates(pool_ref, False, "", "", "root", "any")
        assert digest == sb.xenapi.Repository.get_hash(sb.xenapi.Repository.get_all()[0])
        s.xenapi.host.apply_updates(joiner.ref, digest)
        assert s.xenapi.host.get_pending_guidances(joiner.ref) == ["reboot_host"]
        with pytest.raises(XenAPI.Failure) as err:  # still pending: the join is refused for that first
            _join(new_url, big.master.address)
        assert err.value.details == ["HOST_PENDING_MANDATORY_GUIDANCES_NOT_EMPTY", joiner.ref]
        s.xenapi.host.reboot(joiner.ref)
        wait(lambda: joiner.boot_count == 1 and joiner.state == "XAPI_RUNNING")
        _join(new_url, big.master.address)
        wait(lambda: joiner.pool is big)
        assert sorted(joiner.applied_updates) == sorted(big.master.applied_updates)
    finally:
        handle.stop()


def test_an_iso_upgrade_lands_on_the_isos_base_level(sim, key, tmp_path):
    world, big, handle = sim
    info = bundles.build_bundle(tmp_path / "u.xsbundle", key=key, updates=TOOLSTACK_ONLY)
    from provisioner.simulator import updates as up
    member = big.hosts[1]
    up.apply_now(world, big, member, up.updates_from(info.path))
    assert big.db.get("host", member.ref)["software_version"]["xapi_build"] == "24.19.5"
    world.boot_handler = lambda mac: {"product_version": "8.4.0"} if mac == member.mac else None  # the installer
    s = login(handle.master_url())
    s.xenapi.host.disable(member.ref)
    s.xenapi.host.reboot(member.ref)
    wait(lambda: member.boot_count == 1 and member.state == "XAPI_RUNNING")
    rec = big.db.get("host", member.ref)
    assert not member.applied_updates and rec["latest_synced_updates_applied"] == "unknown"
    assert rec["software_version"]["xapi_build"] == "24.19.2"  # the ISO's own xapi again


def test_restart_agent_on_the_coordinator_drops_its_sessions_and_members_reconnect(sim):
    world, big, handle = sim
    url = handle.master_url()
    s = login(url)
    old = s._session
    s.xenapi.host.restart_agent(big.master.ref)
    wait(lambda: old not in big.sessions)  # xapi stopped: sessions live in its memory
    wait(lambda: big.master.state == "XAPI_RUNNING" and big.hosts[1].linked)
    s = login(url)
    assert s.xenapi.host.get_enabled(big.master.ref) and big.master.boot_count == 0


def test_get_updates_without_an_enabled_repository_is_404_and_needs_a_session(sim):
    world, big, handle = sim
    url = handle.master_url().rstrip("/")
    s = login(handle.master_url())
    for query, code in ((f"session_id={s._session}", 404), ("session_id=OpaqueRef:nobody", 403)):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/updates?{query}", context=sim_tls.context(url + "/"), timeout=30)
        assert err.value.code == code
        err.value.close()


def test_add_and_remove_repository(sim):
    world, big, handle = sim
    s = login(handle.master_url())
    pool = s.xenapi.pool.get_all()[0]
    a = s.xenapi.Repository.introduce("a", "", "https://a.example.com/", "https://a.example.com/src/", True, "")
    b = s.xenapi.Repository.introduce("b", "", "https://b.example.com/", "https://b.example.com/src/", False, "")
    bundle = s.xenapi.Repository.introduce_bundle("bundle", "")
    s.xenapi.pool.add_repository(pool, a)
    s.xenapi.pool.add_repository(pool, b)
    s.xenapi.pool.add_repository(pool, a)  # already there: nothing changes
    assert s.xenapi.pool.get_repositories(pool) == [a, b]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.pool.add_repository(pool, bundle)
    assert err.value.details == ["REPO_SHOULD_BE_SINGLE_ONE_ENABLED"]
    s.xenapi.pool.remove_repository(pool, b)
    assert s.xenapi.pool.get_repositories(pool) == [a]
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.Repository.forget(a)
    assert err.value.details == ["REPOSITORY_IS_IN_USE"]
