"""`provisioner demo`: a simulated pool upgraded through the real boot service, every host verified."""

import multiprocessing

import pytest
import requests
from click.testing import CliRunner

from provisioner import demo, states
from provisioner.cli import main
from provisioner.store import Store


def test_run_demo_upgrades_every_host_once_master_first(tmp_path):
    lines = []
    results = demo.run_demo(tmp_path, hosts=4, speed=600, say=lines.append)
    assert [r.role for r in results] == ["master", "member", "member", "member"]
    # a mixed pool: the master network-first (PXE-first site), the members disk first behind a BMC, one UEFI
    assert [(r.boot_method, r.firmware) for r in results] == [("network-first", "bios"), ("redfish", "bios"),
                                                              ("ipmi", "bios"), ("redfish", "uefi")]
    for r in results:
        assert (r.before, r.after, r.attempt, r.answer_files, r.verified) == (
            demo.SOURCE_VERSION, demo.TARGET_VERSION, states.SUCCEEDED, 1, True)
    store = Store(tmp_path / "data" / "provisioner.db")
    hosts = {h.mac: h for h in store.list_hosts(pool=demo.DEMO_POOL)}
    assert len(hosts) == 4  # registered from XAPI
    for r in results:
        fetched = [e["details"]["what"] for e in store.events(mac=r.mac, kind="attempt.fetch")]
        assert fetched.count("answerfile") == 1
        if r.boot_method == "network-first":
            assert fetched[-1] == "config"  # the reboot after: network first, a local-boot answer
        else:
            assert "config" not in fetched[fetched.index("answerfile"):]  # the reboot after: the disk, no fetch
            assert hosts[r.mac].bmc_kind == r.boot_method
    assert any("boot method redfish" in line for line in lines) and any("ipmi" in line for line in lines)
    assert any("sim min]" in line for line in lines)  # progress shown while waiting
    # the UEFI host: disk first before; after, the installer's entry first and the one-time override used up
    uefi = results[3]
    assert hosts[uefi.mac].firmware == "uefi"
    (before,) = [line for line in lines if line.startswith(f"  {uefi.name} (UEFI) before: BootOrder ")]
    (after,) = [line for line in lines if line.startswith(f"  {uefi.name} (UEFI) after: BootOrder ")]
    assert "(disk)" in before.split(",")[0] and before.endswith("no BMC override pending"), before
    assert after.split("BootOrder ")[1].startswith("Boot") and "XenServer (disk)" in after.split(",")[0], after
    assert after.endswith("no BMC override pending"), after
    fetched = [e["details"]["what"] for e in store.events(mac=uefi.mac, kind="attempt.fetch")]
    assert "config" in fetched  # it network-booted (GRUB asked for its per-MAC config)
    # the BMC fronts are stopped: no IPMI process left, the Redfish emulator does not answer
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("sim-ipmi-")]
    redfish = next(h for h in hosts.values() if h.bmc_kind == "redfish")
    with pytest.raises(requests.ConnectionError):
        requests.get(redfish.bmc_address + "/redfish/v1/", timeout=5)


def test_demo_command(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--hosts", "2", "--speed", "600", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "every host verified at 8.4.0" in result.output
    assert "network-first" in result.output and "redfish" in result.output  # 2 hosts: the master and a redfish one


def test_demo_needs_two_hosts():
    result = CliRunner().invoke(main, ["demo", "--hosts", "1"])
    assert result.exit_code == 2


@pytest.mark.parametrize("speed", ["0", "fast"])
def test_demo_bad_speed(speed):
    assert CliRunner().invoke(main, ["demo", "--speed", speed]).exit_code == 2
