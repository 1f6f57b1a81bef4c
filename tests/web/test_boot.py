"""Boot endpoints: one-shot answer files, always-200 scripts, the result report, iPXE scripts."""

import subprocess
import threading

import pytest
import requests
from werkzeug.serving import make_server

from helpers import make_media_tree
from provisioner import media, states
from provisioner.boot import attempts
from provisioner.model import Host
from provisioner.web.access import get_config, set_config

MAC = "aa:bb:cc:dd:ee:01"


@pytest.fixture
def armed(store, config, tmp_path):
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    # ip: the test client (and the real server below) call from 127.0.0.1, the host's registered address,
    # which the attempt binding admits (tests/hostile/test_steal_install.py covers the boot-config fetcher)
    store.add_host(Host.from_fields({"mac": MAC, "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/scsi-1",
                                     "ip": "127.0.0.1"}))
    return attempts.arm(store, config, MAC, "xs84")


def kinds(store):
    return [e["kind"] for e in store.events()]


def test_reinstall_loop_is_impossible(client, store, armed):
    """arm, config, answer file, start script, 'reboot' => local boot; answer file again => 404."""
    first = client.get(f"/boot/ipxe/{MAC.replace(':', '-')}")
    # BIOS host: iPXE chains to pxelinux.0, whose per-MAC config carries the answer file (docs/firmware.md)
    assert first.status_code == 200 and b"chain ${210:string}pxelinux.0" in first.data
    r = client.get(f"/boot/answerfile/{armed.token}")
    assert r.status_code == 200 and r.mimetype == "application/xml"
    assert b'<installation mode="upgrade">' in r.data and r.headers["Cache-Control"] == "no-store"
    r = client.get(f"/boot/script/{armed.token}/installation-start")
    assert r.status_code == 200 and r.data.startswith(b"#!/bin/sh\n") and b"window is now closed" in r.data
    assert attempts.attempt_by_token(store, armed.token).state == states.STARTED
    again = client.get(f"/boot/ipxe/{MAC.replace(':', '-')}")
    assert again.status_code == 200 and b"pxelinux.0" not in again.data and b"exit" in again.data
    r = client.get(f"/boot/answerfile/{armed.token}")
    assert r.status_code == 404
    assert "attempt.refused" in kinds(store)


def test_answer_file_is_served_once_per_arming(client, store, armed):
    assert client.get(f"/boot/answerfile/{armed.token}").status_code == 200
    # the installer died before its start script and the host PXE-boots again: no second run
    assert client.get(f"/boot/answerfile/{armed.token}").status_code == 404
    assert b"pxelinux.0" not in client.get(f"/boot/ipxe?mac={MAC}").data


@pytest.mark.parametrize("token", ["", "short", "A" * 32, "not-a-real-token-but-long-enough-1234", "%00" * 20])
def test_unknown_tokens(client, store, armed, token):
    assert client.get(f"/boot/answerfile/{token}").status_code == 404
    for stage in ("installation-start", "installation-complete"):
        r = client.get(f"/boot/script/{token}/{stage}")
        if token:  # an empty token is not even a route
            assert r.status_code == 200 and r.data.startswith(b"#!/bin/sh\n") and b"exit 0" in r.data
    assert attempts.attempt_by_token(store, armed.token).state == states.ARMED


def test_stale_token_after_rearm(client, store, config, armed):
    new = attempts.arm(store, config, MAC, "xs84")
    assert client.get(f"/boot/answerfile/{armed.token}").status_code == 404
    r = client.get(f"/boot/script/{armed.token}/installation-start")
    assert r.status_code == 200 and b"nothing to do" in r.data
    assert attempts.attempt_by_token(store, new.token).state == states.ARMED


def test_unknown_stage_is_a_noop_script_and_an_event(client, store, armed):
    r = client.get(f"/boot/script/{armed.token}/filesystem-populated")
    assert r.status_code == 200 and r.data.startswith(b"#!/bin/sh\n")
    assert "boot.bad_script_stage" in kinds(store)


def test_refused_render_is_500_and_event(client, store, armed):
    store.update_host(MAC, {"disk": None})
    r = client.get(f"/boot/answerfile/{armed.token}")
    assert r.status_code == 500 and b"<installation" not in r.data
    assert "answerfile.refused" in kinds(store)
    store.update_host(MAC, {"disk": "/dev/disk/by-id/scsi-1"})
    assert client.get(f"/boot/answerfile/{armed.token}").status_code == 200  # the failed render cost no run


@pytest.mark.parametrize("code, state", [("0", states.SUCCEEDED), ("1", states.FAILED)])
def test_complete_script_reports_exit_code_when_run(app, store, armed, code, state, tmp_path):
    """Run the served script with /bin/sh as the installer would (argv[1] = 0/1) against a real server."""
    config = get_config(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    set_config(app, config.replace(public_url=f"http://127.0.0.1:{server.server_port}"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert requests.get(f"{base}/boot/script/{armed.token}/installation-start", timeout=5).status_code == 200
        script = requests.get(f"{base}/boot/script/{armed.token}/installation-complete", timeout=5)
        path = tmp_path / "complete.sh"
        path.write_bytes(script.content)
        done = subprocess.run(["/bin/sh", str(path), code], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        got = attempts.attempt_by_token(store, armed.token)
        assert got.state == state and got.exit_code == int(code)
    finally:
        server.shutdown()
        server.server_close()


def test_report_endpoint_ignores_other_codes(client, store, armed):
    client.get(f"/boot/script/{armed.token}/installation-start")
    assert client.get(f"/boot/report/{armed.token}/7").status_code == 200
    assert attempts.attempt_by_token(store, armed.token).state == states.STARTED
    assert "attempt.report_ignored" in kinds(store)


def test_ipxe_unknown_known_and_bad_mac(client, store, armed):
    unknown = client.get("/boot/ipxe/00-11-22-33-44-55")
    assert unknown.status_code == 200 and unknown.data.startswith(b"#!ipxe") and b"answerfile" not in unknown.data
    attempts.disarm(store, MAC)
    known = client.get(f"/boot/ipxe/{MAC}")
    assert known.status_code == 200 and b"answerfile" not in known.data
    bad = client.get("/boot/ipxe/zz-zz-zz-zz-zz-zz")
    assert bad.status_code == 400 and b"bad MAC" in bad.data
    assert "boot.bad_name" in kinds(store)
    injected = client.get("/boot/ipxe/zz-zz%0Akernel%20evil")  # the router refuses it: 404, still an event
    assert injected.status_code in (400, 404) and b"\nkernel" not in injected.data
    assert "http.not_found" in kinds(store) or kinds(store).count("boot.bad_name") == 2
    assert client.get("/boot/ipxe").status_code == 400  # no MAC at all


def test_kernel_and_install_img_fetches_join_the_attempt_timeline(client, store, armed):
    client.get(f"/boot/ipxe/{MAC}")  # the config fetch tells us the client's address
    for path in ("boot/xen.gz", "boot/vmlinuz", "install.img", ".treeinfo"):
        with client.get(f"/media/xs84/{path}") as response:
            assert response.status_code == 200
    fetched = [e["details"]["what"] for e in store.events(mac=MAC, kind="attempt.fetch")]
    assert fetched == ["ipxe", "hypervisor", "kernel", "install.img"]


# --- lab reinstall: the fresh-install answer file (answerfile_fresh), only for a reinstall's own attempt ---

FRESH_HASH = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


def _fresh_armed(store):
    found = store.create_reinstall(MAC, "p1", "xs84", host_name="h1", forget_first=False, old_uuid=None,
                                   old_pool=None, host_url="http://10.0.0.11/", network={"mode": "dhcp"},
                                   root_password_hash=FRESH_HASH)
    return found, attempts.arm_fresh_install(store, found.id)


def test_fresh_answer_file_is_served_once_to_the_reinstall_attempt_only(client, store, armed):
    from provisioner.boot.answerfile_fresh_check import parse_fresh

    attempts.disarm(store, MAC)  # the upgrade arming of the fixture; the reinstall arms its own attempt
    found, attempt = _fresh_armed(store)
    assert b"chain ${210:string}pxelinux.0" in client.get(f"/boot/ipxe/{MAC}").data
    r = client.get(f"/boot/answerfile/{attempt.token}")
    assert r.status_code == 200 and b"<installation>" in r.data and b"mode=" not in r.data
    parsed = parse_fresh(r.data.decode(), expected_disk="/dev/disk/by-id/scsi-1", expected_mac=MAC)
    assert parsed.root_password_hash == FRESH_HASH and parsed.hostname == "h1"
    assert store.get_reinstall(found.id).root_password_hash is None  # served: the hash is not kept
    again = client.get(f"/boot/answerfile/{attempt.token}")  # a second fetch of the fresh file
    assert again.status_code == 404 and b"<installation" not in again.data
    assert store.events(mac=MAC, kind="attempt.refused")
    assert b"window is now closed" in client.get(f"/boot/script/{attempt.token}/installation-start").data
    assert b"answerfile=" not in client.get(f"/boot/ipxe/{MAC}").data
    assert not [e for e in store.events() if FRESH_HASH in str(e["details"])]


def test_an_upgrade_attempt_never_gets_the_fresh_file(client, store, config, armed):
    attempts.disarm(store, MAC)
    found, fresh_attempt = _fresh_armed(store)
    store.set_reinstall_step(found.id, states.RI_FAILED, reason="test")  # the reinstall ended ...
    attempts.disarm(store, MAC)
    upgrade = attempts.arm(store, config, MAC, "xs84")  # ... and the host is armed for an upgrade
    r = client.get(f"/boot/answerfile/{upgrade.token}")
    assert r.status_code == 200 and b'<installation mode="upgrade">' in r.data and b"primary-disk" not in r.data
    assert client.get(f"/boot/answerfile/{fresh_attempt.token}").status_code == 404


def test_fresh_answer_file_without_its_hash_is_refused_not_served(client, store, armed):
    attempts.disarm(store, MAC)
    found, attempt = _fresh_armed(store)
    store.clear_reinstall_hash(found.id)
    r = client.get(f"/boot/answerfile/{attempt.token}")
    assert r.status_code == 500 and b"<installation" not in r.data
    refused = store.events(mac=MAC, kind="answerfile.refused")
    assert refused and "served once" in refused[-1]["details"]["error"]
    assert store.get_attempt(attempt.id).runs == 0  # not counted: nothing was served
