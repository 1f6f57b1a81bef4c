"""`provisioner pools ...` and `provisioner upgrade ...` against the simulator."""

import json

from click.testing import CliRunner

from provisioner.cli import main


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
