"""`provisioner reinstall`: refusals with every reason and no secret echoed, --plan, and the whole flow against
the simulator (the command follows it with progress lines while a test thread powers the host on)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from labs import MEDIA, PASSWORD, POOL, macs, power_on_when_armed, shut_down, upgrade

from provisioner import cryptpw, states
from provisioner.cli import main
from provisioner.simulator.builder import add_local_vm

MAC = "52:54:00:aa:00:01"
HASH = cryptpw.hash_password(PASSWORD, rounds=1000)


def invoke(tmp_path, *args, env=None):
    base = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": "",
            "PROVISIONER_UPGRADE_POLL_MS": "50", "PROVISIONER_ROOT_PASSWORD_HASH": ""}
    return CliRunner().invoke(main, list(args), env={**base, **(env or {})}, catch_exceptions=False)


@pytest.fixture
def registered(tmp_path):
    assert invoke(tmp_path, "hosts", "add", MAC, "--name", "h1", "--pool", "p1",
                  "--disk", "/dev/disk/by-id/scsi-1").exit_code == 0
    return tmp_path


def test_wrong_or_missing_confirmation_is_refused_first(registered):
    result = invoke(registered, "reinstall", MAC, "--pool", "p1", "--media", "xs84", "--confirm", "h2")
    assert result.exit_code == 1 and "'h2' is not the name of host" in result.output
    result = invoke(registered, "reinstall", MAC, "--pool", "p1", "--media", "xs84")
    assert result.exit_code == 1 and "confirm it by name with --confirm h1" in result.output


def test_every_problem_is_listed_and_the_plaintext_never_echoed(registered):
    secret = registered / "pw"
    secret.write_text("hunter2-plaintext\n")
    result = invoke(registered, "reinstall", MAC, "--pool", "p1", "--media", "xs84", "--confirm", "h1",
                    "--root-password-hash-file", str(secret))
    assert result.exit_code == 1 and "reinstall refused, nothing changed:" in result.output
    for words in ("no media named 'xs84'", "no pool named 'p1'", "root password hash is not a SHA-512"):
        assert words in result.output
    assert "hunter2" not in result.output
    shown = json.loads(invoke(registered, "reinstall", MAC, "--pool", "p1", "--media", "xs84", "--confirm", "h1",
                              "--json").stdout)
    assert any("is empty" in p for p in shown["refused"])


def test_plan_then_the_whole_flow(lab, tmp_path):
    assert upgrade(lab).state == states.RUN_DONE
    mac = macs(lab)[1]
    name = lab.store.get_host(mac).name
    add_local_vm(lab.world.pools[POOL], "web-halted", lab.world.host(mac).ref, disk_gib=8)
    shut_down(lab, mac)
    hash_file = tmp_path / "root.hash"
    hash_file.write_text(HASH + "\n")
    args = ["reinstall", mac, "--pool", POOL, "--media", MEDIA, "--confirm", name, "--forget",
            "--root-password-hash-file", str(hash_file), "--host-url", lab.sim.url(mac)]
    lost = "VM 'web-halted' (Halted): disk 'web-halted disk' 8.0 GiB on SR 'Local storage'"
    plan = invoke(tmp_path, *args, "--plan")
    assert plan.exit_code == 1 and "REFUSED" in plan.output and f"LOST: {lost}" in plan.output
    assert "--accept-data-loss" in plan.output
    refused = invoke(tmp_path, *args)
    assert refused.exit_code == 1 and "reinstall refused, nothing changed:" in refused.output
    assert f"LOST: {lost}" in refused.output
    shown = json.loads(invoke(tmp_path, *args, "--json").stdout)
    assert [d["vm"] for d in shown["data_loss"]] == ["web-halted"]
    args.append("--accept-data-loss")
    plan = invoke(tmp_path, *args, "--plan")
    assert plan.exit_code == 0 and "ready" in plan.output and "host.destroy of uuid" in plan.output
    assert "(accepted with --accept-data-loss)" in plan.output and f"LOST: {lost}" in plan.output
    assert "pool.join needs: edition trial, updates [], management untagged, openvswitch backend" in plan.output
    assert lab.store.active_reinstall(mac) is None  # --plan changes nothing

    watcher = power_on_when_armed(lab, mac)
    # the CLI's configuration names the lab's boot server, which the flow checks before the host boots (selfcheck.py)
    served = {"PROVISIONER_PUBLIC_URL": lab.config.public_url, "PROVISIONER_TFTP_PORT": str(lab.config.tftp_port)}
    result = invoke(tmp_path, *args, env=served)
    watcher.join(5)
    assert result.exit_code == 0, result.output
    for line in ("forgetting uuid", "fresh install armed", "waiting for the host to network-boot", f"{name}: join",
                 f"reinstall 1 of {name} ({mac}): done, new uuid", f"lost (accepted): {lost}"):
        assert line in result.output
    assert HASH not in result.output and PASSWORD not in result.output
    assert {h.product_version for h in lab.driver.hosts()} == {"8.4.0"} and len(lab.driver.hosts()) == 3
    again = invoke(tmp_path, *args, "--json")  # now a live member: refused, as JSON
    assert again.exit_code == 1 and any("LIVE member" in p for p in json.loads(again.stdout)["refused"])


def test_root_password_hash_from_the_environment(lab, tmp_path):
    mac = macs(lab)[1]
    shut_down(lab, mac)
    result = invoke(tmp_path, "reinstall", mac, "--pool", POOL, "--media", MEDIA, "--confirm",
                    lab.store.get_host(mac).name, "--forget", "--plan", "--json", "--host-url", lab.sim.url(mac),
                    env={"PROVISIONER_ROOT_PASSWORD_HASH": HASH})
    shown = json.loads(result.stdout)
    assert result.exit_code == 1 and shown["ok"] is False  # the master is not upgraded yet
    assert [p for p in shown["problems"] if "POOL_HOSTS_NOT_COMPATIBLE" in p]
    assert not [p for p in shown["problems"] if "hash" in p] and HASH not in result.output
