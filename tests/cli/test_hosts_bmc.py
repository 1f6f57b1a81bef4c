"""`provisioner hosts bmc / boot-method`, --boot-mac and --multipath, `pools set --boot-method`, and the CSV
columns: through click's runner against a real SQLite file. The BMC password never shows."""

import json

from provisioner import registry
from provisioner.store import Store

PASSWORD = "Cli-Bmc-Secret-42"
MAC = "aa:bb:cc:dd:ee:01"


def _host(run, *extra):
    r = run("hosts", "add", MAC, "--name", "h1", "--pool", "p1", *extra)
    assert r.exit_code == 0, r.output


def _password_file(tmp_path, text=PASSWORD + "\nsecond line ignored\n", name="bmc.pw"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_bmc_set_shown_without_the_password_then_cleared(run, tmp_path):
    _host(run)
    r = run("hosts", "bmc", MAC, "--kind", "redfish", "--address", "https://bmc1:443", "--username", "admin",
            "--password-file", _password_file(tmp_path), "--system-id", "System.Embedded.1")
    assert r.exit_code == 0, r.output
    assert "redfish https://bmc1:443 system System.Embedded.1 user admin, password set" in r.output
    for args in (("hosts", "list"), ("hosts", "list", "--json"), ("hosts", "show", MAC),
                 ("hosts", "show", MAC, "--json")):
        out = run(*args).output
        assert PASSWORD not in out and "fernet" not in out
    assert "password set" in run("hosts", "list").output
    shown = json.loads(run("hosts", "show", MAC, "--json").output)
    assert {"bmc_kind": "redfish", "bmc_address": "https://bmc1:443", "bmc_username": "admin",
            "bmc_system_id": "System.Embedded.1", "bmc_password_set": True}.items() <= shown["host"].items()
    assert PASSWORD not in json.dumps(shown["events"])
    [db] = (tmp_path / "data").glob("*.db")
    assert registry.bmc_password(Store(db), MAC) == PASSWORD  # the file's first line only
    assert PASSWORD.encode() not in db.read_bytes()
    r = run("hosts", "bmc", MAC, "--clear", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["bmc_password_set"] is False


def test_bmc_errors_name_the_problem(run, tmp_path):
    _host(run)
    pw = _password_file(tmp_path)
    base = ("hosts", "bmc", MAC, "--username", "admin", "--password-file", pw)
    cases = [
        ((*base, "--kind", "redfish", "--address", "bmc1:443"), "is not a Redfish service root URL"),
        ((*base, "--kind", "redfish", "--address", "ftp://bmc1"), "is not a Redfish service root URL"),
        ((*base, "--kind", "ipmi", "--address", "https://bmc1"), "is not an IPMI address"),
        ((*base, "--kind", "ipmi", "--address", "10.0.0.9:70000"), "is not an IPMI address"),
        ((*base, "--kind", "ipmi", "--address", "10.0.0.9", "--system-id", "1"), "for Redfish BMCs only"),
        (("hosts", "bmc", MAC, "--kind", "ipmi", "--address", "10.0.0.9", "--username", "u", "--password-file",
          str(tmp_path / "missing.pw")), "cannot read the password file"),
        (("hosts", "bmc", MAC, "--kind", "ipmi", "--address", "10.0.0.9", "--username", "u", "--password-file",
          _password_file(tmp_path, "\n", "empty.pw")), "is empty"),
        (("hosts", "bmc", MAC, "--kind", "ipmi", "--address", "10.0.0.9"), "missing --username --password-file"),
        (("hosts", "bmc", MAC, "--clear", "--kind", "ipmi"), "--clear takes no other option"),
        ((*base, "--kind", "redfish", "--address", "https://user:pw@bmc1"), "must not contain credentials"),
    ]
    for args, message in cases:
        r = run(*args)
        assert r.exit_code != 0 and message in r.output, (args, r.output)
        assert PASSWORD not in r.output and "user:pw" not in r.output
    assert json.loads(run("hosts", "show", MAC, "--json").output)["host"]["bmc_kind"] is None
    r = run(*base, "--kind", "ipmi", "--address", "[fd00::5]:623")
    assert r.exit_code == 0, r.output


def test_boot_method_needs_a_bmc_of_its_kind(run, tmp_path):
    _host(run)
    r = run("hosts", "boot-method", MAC, "redfish")
    assert r.exit_code == 1 and "redfish needs a redfish BMC, and this host has no BMC" in r.output
    assert run("hosts", "boot-method", MAC, "host-plugin").exit_code == 0
    run("hosts", "bmc", MAC, "--kind", "ipmi", "--address", "10.0.0.9", "--username", "u",
        "--password-file", _password_file(tmp_path))
    assert "has a BMC of kind ipmi" in run("hosts", "boot-method", MAC, "redfish").output
    r = run("hosts", "boot-method", MAC, "ipmi")
    assert r.exit_code == 0 and "boot method ipmi" in r.output
    r = run("hosts", "bmc", MAC, "--clear")
    assert r.exit_code == 1 and "boot method is ipmi" in r.output
    assert run("hosts", "boot-method", MAC, "pool-default").exit_code == 0
    assert json.loads(run("hosts", "show", MAC, "--json").output)["host"]["boot_method"] is None
    assert run("hosts", "boot-method", MAC, "pxe").exit_code == 2


def test_boot_mac_and_multipath_on_add_and_update(run):
    _host(run, "--boot-mac", "AA-BB-CC-DD-EE-99", "--multipath")
    host = json.loads(run("hosts", "show", MAC, "--json").output)["host"]
    assert (host["boot_mac"], host["multipath"]) == ("aa:bb:cc:dd:ee:99", True)
    assert "from aa:bb:cc:dd:ee:99, multipath" in run("hosts", "list").output
    r = run("hosts", "add", "aa:bb:cc:dd:ee:99", "--name", "h2", "--pool", "p1")
    assert r.exit_code == 1 and "already the boot MAC of host aa:bb:cc:dd:ee:01" in r.output
    r = run("hosts", "add", "aa:bb:cc:dd:ee:02", "--name", "h2", "--pool", "p1", "--boot-mac", "01:00:5e:00:00:01")
    assert r.exit_code == 1 and "boot_mac:" in r.output and "multicast" in r.output
    r = run("hosts", "update", MAC, "--no-multipath", "--boot-mac", "", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["multipath"] is False and json.loads(r.output)["boot_mac"] is None


def test_pools_set_boot_method(run, tmp_path):
    pw = _password_file(tmp_path, "poolpw\n", "pool.pw")
    assert run("pools", "add", "p1", "--url", "https://127.0.0.1:9", "--password-file", pw,
               "--fingerprint", "ab" * 32).exit_code == 0
    r = run("pools", "set", "p1", "--boot-method", "redfish")
    assert r.exit_code == 0 and "pool p1: default boot method redfish" in r.output
    assert "no pool named 'zz'" in run("pools", "set", "zz", "--boot-method", "ipmi").output


def test_csv_import_with_the_new_columns(run, tmp_path):
    pw = _password_file(tmp_path)
    good = tmp_path / "good.csv"
    good.write_text("mac,name,pool,boot_method,bmc_kind,bmc_address,bmc_username,bmc_password_file,bmc_system_id,"
                    "boot_mac,multipath\n"
                    f"aabbccddee01,h1,p,redfish,redfish,https://bmc1,admin,{pw},1,aabbccddee91,yes\n"
                    "aabbccddee02,h2,p,,,,,,,,\n")
    r = run("hosts", "import", str(good))
    assert r.exit_code == 0 and "imported 2 host(s)" in r.output
    listing = {h["name"]: h for h in json.loads(run("hosts", "list", "--json").output)}
    assert {"boot_method": "redfish", "bmc_kind": "redfish", "bmc_address": "https://bmc1", "bmc_system_id": "1",
            "boot_mac": "aa:bb:cc:dd:ee:91", "multipath": True, "bmc_password_set": True}.items() \
        <= listing["h1"].items()
    assert listing["h2"]["bmc_kind"] is None and listing["h2"]["multipath"] is False
    bad = tmp_path / "bad.csv"
    bad.write_text("mac,name,pool,bmc_kind,bmc_address,bmc_username,bmc_password_file,boot_mac,multipath\n"
                   f"aabbccddee03,h3,p,ipmi,10.0.0.3,u,{tmp_path / 'nope.pw'},,\n"
                   f"aabbccddee04,h4,p,,,,{pw},,\n"
                   "aabbccddee05,h5,p,,,,,aabbccddee91,\n"
                   "aabbccddee06,h6,p,,,,,,maybe\n")
    r = run("hosts", "import", str(bad))
    assert r.exit_code == 1 and "nothing imported" in r.output
    assert "line 2: bmc_password_file: cannot read the password file" in r.output
    assert "line 3: bmc_password_file: needs a BMC" in r.output
    assert "line 4: boot MAC aa:bb:cc:dd:ee:91 is already the boot MAC of host aa:bb:cc:dd:ee:01" in r.output
    assert "line 5: multipath: expected true or false" in r.output
    assert PASSWORD not in r.output
