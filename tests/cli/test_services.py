"""media, tftp-root, answerfile preview and the simulator command."""

import json

from click.testing import CliRunner

from provisioner.cli import main


def test_media_add_list_and_answerfile_preview(run, tmp_path):
    from helpers import make_media_tree

    tree = make_media_tree(tmp_path / "xs84")
    r = run("media", "add", "xs84", str(tree))
    assert r.exit_code == 0 and "8.4.0" in r.output
    listing = json.loads(run("media", "list", "--json").output)
    assert listing[0]["name"] == "xs84" and listing[0]["generation"] == "xs8"
    assert "boot/xen.gz" in listing[0]["boot_files"]
    r = run("media", "add", "xs84", str(tree))
    assert r.exit_code == 1 and "already exists" in r.output
    (tmp_path / "empty").mkdir()
    r = run("media", "add", "bad", str(tmp_path / "empty"))
    assert r.exit_code == 1 and ".treeinfo" in r.output

    run("hosts", "add", "aabbccddee01", "--name", "h1", "--pool", "p", "--disk", "/dev/disk/by-id/scsi-1")
    r = run("answerfile", "aa-bb-cc-dd-ee-01")
    assert r.exit_code == 0 and '<installation mode="upgrade">' in r.output
    assert "<existing-installation>/dev/disk/by-id/scsi-1</existing-installation>" in r.output
    run("hosts", "add", "aabbccddee02", "--name", "h2", "--pool", "p")
    r = run("answerfile", "aabbccddee02", "--media", "xs84")
    assert r.exit_code == 1 and "boot disk unknown" in r.output


def test_tftp_root_prepare(tmp_path):
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "d"), "PROVISIONER_TFTP_ROOT": str(tmp_path / "root"),
           "PROVISIONER_CONFIG": ""}
    (tmp_path / "root").mkdir()
    r = CliRunner().invoke(main, ["tftp-root", "prepare"], env=env)
    assert r.exit_code == 0, r.output
    assert "pxelinux.0: created" in r.output and (tmp_path / "root" / "grubx64.efi").exists()
    r = CliRunner().invoke(main, ["tftp-root", "prepare"], env=env)
    assert "pxelinux.0: unchanged" in r.output


def test_simulator_serve_runs_until_sigterm(tmp_path):
    import os
    import re
    import signal
    import subprocess
    import sys

    import sim_tls
    import XenAPI

    from provisioner import xapi_tls

    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "simulator", "serve", "--hosts", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PROVISIONER_CONFIG": ""})
    try:
        first = proc.stdout.readline()
        assert "coordinator" in first and "https://" in first
        url, pin = re.fullmatch(r".*: (https://\S+) \(certificate SHA-256 ([0-9a-f]{64})\)", first.strip()).groups()
        session = XenAPI.Session(url, transport=sim_tls.transport(url))  # verified against the host's certificate
        assert xapi_tls.fetch_certificate(url, 10).fingerprint == pin  # what it printed is what it serves
        session.xenapi.login_with_password("root", "any", "1.0", "test")
        assert len(session.xenapi.host.get_all()) == 2
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
