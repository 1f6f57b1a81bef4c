"""`provisioner demo`: the whole boot service on loopback, every host upgraded exactly once."""

from click.testing import CliRunner

from provisioner import demo, states
from provisioner.cli import main
from provisioner.store import Store


def test_run_demo_upgrades_every_host_once(tmp_path):
    lines = []
    results = demo.run_demo(tmp_path, say=lines.append)
    assert [r.name for r in results] == [name for _, name, _ in demo.DEMO_HOSTS]  # master first
    assert all(r.state == states.SUCCEEDED and r.exit_code == 0 and r.second_boot == "local boot" for r in results)
    store = Store(tmp_path / "data" / "provisioner.db")
    for mac, _, _ in demo.DEMO_HOSTS:
        fetched = [e["details"]["what"] for e in store.events(mac=mac, kind="attempt.fetch")]
        assert fetched == ["config", "hypervisor", "kernel", "install.img", "answerfile", "complete-script",
                           "config"]
        assert fetched.count("answerfile") == 1
    assert any("local boot" in line for line in lines)


def test_demo_command(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "every host got the installer exactly once, then booted locally" in result.output
