"""The CLI through click's runner against a real SQLite file: thin commands, clear errors, --json listings."""

import json

import pytest
from click.testing import CliRunner

from provisioner.cli import main


@pytest.fixture
def run(tmp_path):
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": ""}

    def invoke(*args, input=None):
        return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


def test_hosts_lifecycle(run, tmp_path):
    r = run("hosts", "add", "AA-BB-CC-DD-EE-01", "--name", "h1", "--pool", "p1", "--disk", "/dev/disk/by-id/x",
            "--firmware", "uefi", "--ip", "10.0.0.7")
    assert r.exit_code == 0 and "added aa:bb:cc:dd:ee:01 p1/h1" in r.output
    listing = json.loads(run("hosts", "list", "--json").output)
    assert listing == [{"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/x",
                        "firmware": "uefi", "ip": "10.0.0.7", "notes": ""}]
    assert "aa:bb:cc:dd:ee:01  p1" in run("hosts", "list").output
    assert json.loads(run("hosts", "list", "--pool", "zz", "--json").output) == []
    shown = json.loads(run("hosts", "show", "aabb.ccdd.ee01", "--json").output)
    assert shown["host"]["name"] == "h1" and shown["events"][0]["kind"] == "host.added"
    assert "events:" in run("hosts", "show", "aabbccddee01").output
    assert run("hosts", "remove", "aabbccddee01").exit_code == 0
    assert "no hosts registered" in run("hosts", "list").output


def test_errors_are_one_line_messages(run):
    r = run("hosts", "add", "nonsense", "--name", "h", "--pool", "p")
    assert r.exit_code == 1 and "not a MAC address" in r.output and "Traceback" not in r.output
    run("hosts", "add", "aabbccddee01", "--name", "h", "--pool", "p")
    r = run("hosts", "add", "aabbccddee01", "--name", "h2", "--pool", "p")
    assert r.exit_code == 1 and "already registered" in r.output
    r = run("hosts", "show", "aabbccddee09")
    assert r.exit_code == 1 and "no host with MAC aa:bb:cc:dd:ee:09" in r.output
    r = run("hosts", "add", "aabbccddee02", "--name", "h", "--pool", "p", "--firmware", "efi")
    assert r.exit_code == 2 and "firmware" in r.output


def test_kernel_disk_name_warns_on_add(tmp_path):
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": ""}
    r = CliRunner().invoke(main, ["hosts", "add", "aabbccddee01", "--name", "h", "--pool", "p", "--disk", "/dev/sda"],
                           env=env)
    assert r.exit_code == 0 and "warning: /dev/sda is a kernel device name" in r.output


def test_disk_warning_on_show(run):
    run("hosts", "add", "aabbccddee01", "--name", "h", "--pool", "p")
    assert "boot disk unknown" in run("hosts", "show", "aabbccddee01").output


def test_import(run, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("mac,name,pool,disk\naabbccddee01,h1,p,/dev/sda\naabbccddee02,h2,p,\n")
    r = run("hosts", "import", str(good))
    assert r.exit_code == 0 and "imported 2 host(s)" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("mac,name,pool\naabbccddee03,h3,p\nxx,h4,p\naabbccddee01,h5,p\n")
    r = run("hosts", "import", str(bad))
    assert r.exit_code == 1
    assert "line 3:" in r.output and "line 4:" in r.output and "nothing imported" in r.output
    assert len(json.loads(run("hosts", "list", "--json").output)) == 2


def test_bad_config_is_reported_with_source(tmp_path):
    env = {"PROVISIONER_DATA_DIR": str(tmp_path), "PROVISIONER_HTTP_PORT": "eighty", "PROVISIONER_CONFIG": ""}
    r = CliRunner().invoke(main, ["hosts", "list"], env=env)
    assert r.exit_code == 1 and "http_port" in r.output and "PROVISIONER_HTTP_PORT" in r.output


def test_config_option(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "d2"}"\n')
    r = CliRunner().invoke(main, ["--config", str(cfg), "hosts", "add", "aabbccddee01", "--name", "h", "--pool", "p"],
                           env={"PROVISIONER_CONFIG": ""})
    assert r.exit_code == 0 and (tmp_path / "d2" / "provisioner.db").exists()


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


def test_update_arm_disarm_attempts(run, tmp_path):
    from helpers import make_media_tree

    run("media", "add", "xs84", str(make_media_tree(tmp_path / "xs84")))
    run("hosts", "add", "aabbccddee01", "--name", "h1", "--pool", "p")
    r = run("hosts", "arm", "aabbccddee01", "--media", "xs84")
    assert r.exit_code == 1 and "no boot disk" in r.output and "hosts update" in r.output
    r = run("hosts", "update", "aabbccddee01", "--disk", "/dev/disk/by-id/scsi-9", "--firmware", "uefi")
    assert r.exit_code == 0 and "updated aa:bb:cc:dd:ee:01" in r.output
    assert run("hosts", "update", "aabbccddee01").exit_code == 2
    armed = json.loads(run("hosts", "arm", "aa-bb-cc-dd-ee-01", "--media", "xs84", "--json").output)
    assert armed["state"] == "armed" and "token" not in armed
    r = run("hosts", "arm", "aabbccddee01", "--media", "nope")
    assert r.exit_code == 1 and "no media named 'nope'" in r.output
    listing = json.loads(run("hosts", "attempts", "aabbccddee01", "--json").output)
    assert [a["state"] for a in listing] == ["armed"]
    assert "disarmed attempt(s)" in run("hosts", "disarm", "aabbccddee01").output
    assert "nothing was armed" in run("hosts", "disarm", "aabbccddee01").output
    assert "disarmed" in run("hosts", "attempts", "aabbccddee01").output


def test_simulator_serve_runs_until_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import XenAPI

    proc = subprocess.Popen([sys.executable, "-m", "provisioner", "simulator", "serve", "--hosts", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PROVISIONER_CONFIG": ""})
    try:
        first = proc.stdout.readline()
        assert "coordinator" in first and "http://" in first
        url = first.split(": ", 1)[1].strip()
        session = XenAPI.Session(url)
        session.xenapi.login_with_password("root", "any", "1.0", "test")
        assert len(session.xenapi.host.get_all()) == 2
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_pools_and_rolling_upgrade_commands(tmp_path):
    """pools add/discover, upgrade plan/start/status against the simulator, with the real boot service."""
    from provisioner.demo import demo_config, synthetic_media_tree
    from provisioner.runtime import Runtime
    from provisioner.simulator.builder import start_simulator
    from provisioner.simulator.machine import make_boot_handler

    config = demo_config(tmp_path)
    env = {"PROVISIONER_CONFIG": "", **{f"PROVISIONER_{k.upper()}": str(v) for k, v in config.as_dict().items()
                                        if v is not None and k in ("data_dir", "bind_address", "http_port",
                                                                   "tftp_port", "tftp_root", "public_url",
                                                                   "pxelinux_http")}}
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    runtime = Runtime(config).start()
    sim = start_simulator(2, speed=600.0, boot_handler=make_boot_handler(runtime.tftp.address,
                                                                          http_base=runtime.http.url))
    try:
        secret = tmp_path / "pw"
        secret.write_text("s3cret-pool-password\n")
        assert cli("pools", "add", "lab", "--url", sim.master_url(), "--password-file", str(secret)).exit_code == 0
        r = cli("pools", "add", "lab2", "--url", sim.master_url())
        assert r.exit_code == 2 and "PROVISIONER_POOL_PASSWORD" in r.output
        found = json.loads(cli("pools", "discover", "lab", "--json").output)
        assert len(found["added"]) == 2
        assert cli("media", "add", "xs84", str(synthetic_media_tree(tmp_path / "tree"))).exit_code == 0
        blocked = cli("upgrade", "plan", "lab", "--media", "xs84")
        assert blocked.exit_code == 1 and "BLOCKED" in blocked.output  # no boot disks known yet
        for i, host in enumerate(json.loads(cli("hosts", "list", "--pool", "lab", "--json").output)):
            cli("hosts", "update", host["mac"], "--disk", f"/dev/disk/by-id/scsi-{i}")
        planned = json.loads(cli("upgrade", "plan", "lab", "--media", "xs84", "--json").output)
        assert planned["ok"] and [h["role"] for h in planned["hosts"]] == ["master", "member"]
        started = cli("upgrade", "start", "lab", "--media", "xs84")
        assert started.exit_code == 0, started.output
        runs = json.loads(cli("upgrade", "status", "lab", "--json").output)
        assert runs[0]["state"] == "done" and [h["step"] for h in runs[0]["hosts"]] == ["done", "done"]
        assert "s3cret" not in started.output + json.dumps(runs)
    finally:
        sim.stop()
        runtime.stop()
