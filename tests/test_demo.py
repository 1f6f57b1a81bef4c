"""`provisioner demo`: a simulated pool upgraded through the real boot service, every host verified."""

import pytest
from click.testing import CliRunner

from provisioner import demo, states
from provisioner.cli import main
from provisioner.store import Store


def test_run_demo_upgrades_every_host_once_master_first(tmp_path):
    lines = []
    results = demo.run_demo(tmp_path, hosts=3, speed=600, say=lines.append)
    assert [r.role for r in results] == ["master", "member", "member"]
    for r in results:
        assert (r.before, r.after, r.attempt, r.answer_files, r.verified) == (
            demo.SOURCE_VERSION, demo.TARGET_VERSION, states.SUCCEEDED, 1, True)
    store = Store(tmp_path / "data" / "provisioner.db")
    assert len(store.list_hosts(pool=demo.DEMO_POOL)) == 3  # registered from XAPI
    for r in results:
        fetched = [e["details"]["what"] for e in store.events(mac=r.mac, kind="attempt.fetch")]
        assert fetched.count("answerfile") == 1 and fetched[-1] == "config"  # the reboot after: local boot
    assert any("sim min]" in line for line in lines)  # progress shown while waiting


def test_demo_command(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--hosts", "2", "--speed", "600", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "every host verified at 8.4.0" in result.output


def test_demo_needs_two_hosts():
    result = CliRunner().invoke(main, ["demo", "--hosts", "1"])
    assert result.exit_code == 2


@pytest.mark.parametrize("speed", ["0", "fast"])
def test_demo_bad_speed(speed):
    assert CliRunner().invoke(main, ["demo", "--speed", speed]).exit_code == 2
