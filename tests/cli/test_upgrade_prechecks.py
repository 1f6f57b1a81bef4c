"""`provisioner upgrade plan` shows each precheck's level, code, message and fix; --consent lets a consent-level
one pass; --json carries them (docs/prechecks.md). Against the simulator."""

import json

from click.testing import CliRunner

from provisioner.cli import main
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.simulator.builder import start_simulator

GiB = 1024 ** 3


def test_plan_prints_checks_and_takes_consent(tmp_path):
    config = demo_config(tmp_path)
    env = {"PROVISIONER_CONFIG": "", "PROVISIONER_DATA_DIR": str(config.data_dir)}
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, list(args), env=env, catch_exceptions=False)

    sim = start_simulator(2, speed=600.0)
    try:
        db = sim.world.pools["pool0"].db
        db.create("SR", name_label="FCoE LUN", type="lvmofcoe", shared=True, physical_size=str(GiB))
        secret = tmp_path / "pw"
        secret.write_text("s3cret-pool-password\n")
        assert cli("pools", "add", "lab", "--url", sim.master_url(), "--password-file", str(secret),
                   "--fingerprint", sim.master_fingerprint()).exit_code == 0
        assert cli("pools", "discover", "lab").exit_code == 0
        assert cli("media", "add", "xs84", str(synthetic_media_tree(tmp_path / "tree"))).exit_code == 0
        for i, host in enumerate(json.loads(cli("hosts", "list", "--pool", "lab", "--json").output)):
            cli("hosts", "update", host["mac"], "--disk", f"/dev/disk/by-id/scsi-{i}")
        blocked = cli("upgrade", "plan", "lab", "--media", "xs84")
        assert blocked.exit_code == 1 and "BLOCKED" in blocked.output
        lines = blocked.output.splitlines()
        at = lines.index(next(line for line in lines if line.startswith("consent DEPRECATED_SR: FCoE SR(s) FCoE LUN")))
        assert lines[at + 1].startswith("  fix: move the VMs' disks to other storage first")
        assert any(line.startswith("warning LICENCE (") for line in lines)  # the ISO's trial edition
        agreed = cli("upgrade", "plan", "lab", "--media", "xs84", "--consent", "DEPRECATED_SR", "--json")
        planned = json.loads(agreed.output)
        assert agreed.exit_code == 0 and planned["ok"] and planned["consent"] == ["DEPRECATED_SR"]
        assert {(c["code"], c["blocking"]) for c in planned["checks"]} == {("DEPRECATED_SR", False),
                                                                           ("LICENCE", False)}
    finally:
        sim.stop()
