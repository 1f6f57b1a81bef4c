"""`provisioner bmc check MAC` and `provisioner hosts netboot MAC` against the real BMC servers (pyghmi's BMC
server and the sushy-tools emulator) in front of a machine: a registered BMC is read, a bad one is refused with
exit status 1 and no password in the output, and netboot powers the machine on with a one-time network boot."""

from __future__ import annotations

import json

PASSWORD_FILE_TEXT = "pw-Zq81-secret\n"  # conftest.PASSWORD
MAC = "52:54:00:12:34:56"


def _register(run, tmp_path, kind: str, address: str, password: str = PASSWORD_FILE_TEXT, firmware: str = "bios"):
    assert run("hosts", "add", MAC, "--name", "h1", "--pool", "p1", "--firmware", firmware).exit_code == 0
    pw = tmp_path / "bmc.pw"
    pw.write_text(password)
    r = run("hosts", "bmc", MAC, "--kind", kind, "--address", address, "--username", "admin",
            "--password-file", str(pw))
    assert r.exit_code == 0, r.output


def test_bmc_check_reads_an_ipmi_bmc_and_changes_nothing(run, tmp_path, machine_type, ipmi_bmc):
    machine = machine_type(on=True)
    _register(run, tmp_path, "ipmi", ipmi_bmc(machine))
    r = run("bmc", "check", MAC, "--json")
    assert r.exit_code == 0, r.output
    found = json.loads(r.output)
    assert (found["power"], found["network_override"], found["usable"]) == ("on", True, True)
    assert machine.boots == [] and machine.state == "on"  # read only


def test_bmc_check_refuses_a_wrong_password_without_showing_it(run, tmp_path, machine_type, ipmi_bmc):
    _register(run, tmp_path, "ipmi", ipmi_bmc(machine_type(on=True)), password="not-the-password-77\n")
    r = run("bmc", "check", MAC)
    assert r.exit_code == 1 and "NOT usable" in r.output and "not-the-password-77" not in r.output


def test_bmc_check_refuses_a_bmc_without_override(run, tmp_path, machine_type, ipmi_bmc):
    # (the sushy-tools emulator always lists Pxe, so only an IPMI BMC can say it has no override: docs/power.md)
    _register(run, tmp_path, "ipmi", ipmi_bmc(machine_type(on=True, override=False)))
    r = run("bmc", "check", MAC, "--json")
    found = json.loads(r.output)
    assert r.exit_code == 1 and found["usable"] is False and "override" in found["problem"]


def test_bmc_check_without_a_registered_bmc_says_how_to_add_one(run):
    assert run("hosts", "add", MAC, "--name", "h1", "--pool", "p1").exit_code == 0
    r = run("bmc", "check", MAC)
    assert r.exit_code == 1 and "provisioner hosts bmc" in r.output


def test_netboot_power_cycles_into_one_network_boot(run, tmp_path, machine_type, redfish_bmc):
    machine = machine_type(on=True)
    url, _ = redfish_bmc(machine, MAC, boot_mode="UEFI")
    _register(run, tmp_path, "redfish", url, firmware="uefi")
    refused = run("hosts", "netboot", MAC)
    assert refused.exit_code != 0 and "--yes" in refused.output and machine.state == "on"
    r = run("hosts", "netboot", MAC, "--yes")
    assert r.exit_code == 0, r.output
    assert machine.state == "on" and machine.boots[-1].startswith("network")
    assert machine.boot_override() == (None, True)  # consumed by that one boot
