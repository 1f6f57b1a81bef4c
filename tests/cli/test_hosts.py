"""`provisioner hosts ...` through click's runner against a real SQLite file."""

import json

from click.testing import CliRunner

from provisioner.cli import main


def test_hosts_lifecycle(run, tmp_path):
    r = run("hosts", "add", "AA-BB-CC-DD-EE-01", "--name", "h1", "--pool", "p1", "--disk", "/dev/disk/by-id/x",
            "--firmware", "uefi", "--ip", "10.0.0.7")
    assert r.exit_code == 0 and "added aa:bb:cc:dd:ee:01 p1/h1" in r.output
    listing = json.loads(run("hosts", "list", "--json").output)
    assert listing == [{"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/x",
                        "firmware": "uefi", "ip": "10.0.0.7", "notes": "", "boot_mac": None, "multipath": False,
                        "boot_method": None, "bmc_kind": None, "bmc_address": None, "bmc_username": None,
                        "bmc_system_id": None, "bmc_password_set": False, "site": "default"}]
    assert "aa:bb:cc:dd:ee:01  p1" in run("hosts", "list").output
    assert json.loads(run("hosts", "list", "--pool", "zz", "--json").output) == []
    shown = json.loads(run("hosts", "show", "aabb.ccdd.ee01", "--json").output)
    assert shown["host"]["name"] == "h1" and shown["events"][0]["kind"] == "host.added"
    assert "events:" in run("hosts", "show", "aabbccddee01").output
    assert run("hosts", "remove", "aabbccddee01").exit_code == 0
    assert "no hosts registered" in run("hosts", "list").output


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


def test_a_hosts_site_from_the_command_line(run, tmp_path):
    """--site on add and edit (`hosts edit` is `hosts update`), the CSV column, the list; an unregistered site is
    accepted with a warning (docs/sites.md); no --site: this server's site (config `site`, default "default")."""
    r = run("hosts", "add", "aabbccddee01", "--name", "h1", "--pool", "p", "--site", "dc2")
    assert r.exit_code == 0 and "warning: no boot server has registered site 'dc2' yet" in r.output
    assert run("hosts", "add", "aabbccddee02", "--name", "h2", "--pool", "p").exit_code == 0
    r = run("hosts", "edit", "aabbccddee02", "--site", "dc3", "--json")
    assert r.exit_code == 0 and "site 'dc3'" in r.output
    (tmp_path / "h.csv").write_text("mac,name,pool,site\naabbccddee03,h3,p,\naabbccddee04,h4,p,dc2\n")
    assert run("hosts", "import", str(tmp_path / "h.csv")).exit_code == 0
    listing = json.loads(run("hosts", "list", "--json").output)
    assert [(h["name"], h["site"]) for h in listing] == [("h1", "dc2"), ("h2", "dc3"), ("h3", "default"),
                                                         ("h4", "dc2")]
    table = run("hosts", "list").output
    assert table.splitlines()[0].split()[:4] == ["MAC", "POOL", "NAME", "SITE"] and " dc3 " in table
    assert run("hosts", "update", "aabbccddee02", "--site", "bad site").exit_code != 0
