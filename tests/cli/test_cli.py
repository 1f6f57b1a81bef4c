"""The root command: config loading and one-line errors (click runner, real SQLite file)."""


from click.testing import CliRunner

from provisioner.cli import main


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
