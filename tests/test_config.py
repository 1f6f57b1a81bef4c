"""Config precedence (defaults <- file <- environment <- overrides) and errors naming key and source."""

from pathlib import Path

import pytest

from provisioner.config import REPO_ROOT, ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults():
    cfg = load_config(file=None, environ={})
    assert (cfg.tftp_port, cfg.http_port, cfg.bind_address) == (69, 80, "0.0.0.0")
    assert cfg.tftp_root == REPO_ROOT / "tftp_root"
    assert cfg.answerfiles_dir == REPO_ROOT / "answerfiles"
    assert cfg.api_token == "" and cfg.tftp_blksize_max == 1468
    assert cfg.sources["tftp_port"] == "default"
    assert cfg.base_url == "http://127.0.0.1"


def test_precedence_file_env_override(tmp_path):
    toml = write(tmp_path / "p.toml", 'tftp_port = 1069\nhttp_port = 8080\nbind_address = "10.0.0.5"\n'
                 'public_url = "http://boot.example/"\n')
    cfg = load_config(file=toml, environ={})
    assert (cfg.tftp_port, cfg.http_port) == (1069, 8080)
    assert cfg.sources["tftp_port"] == f"file {toml}"
    assert cfg.public_url == "http://boot.example" and cfg.base_url == "http://boot.example"

    cfg = load_config(file=toml, environ={"PROVISIONER_HTTP_PORT": "9090"})
    assert (cfg.tftp_port, cfg.http_port) == (1069, 9090)
    assert cfg.sources["http_port"] == "environment PROVISIONER_HTTP_PORT"

    cfg = load_config(file=toml, environ={"PROVISIONER_HTTP_PORT": "9090"}, overrides={"http_port": 7070})
    assert cfg.http_port == 7070 and cfg.sources["http_port"] == "override"


def test_file_from_environment_and_provisioner_table(tmp_path):
    toml = write(tmp_path / "p.toml", "[provisioner]\ntftp_port = 6969\n")
    cfg = load_config(environ={"PROVISIONER_CONFIG": str(toml)})
    assert cfg.tftp_port == 6969


def test_base_url_derived_from_bind_and_port():
    cfg = load_config(file=None, environ={}, overrides={"bind_address": "10.1.2.3", "http_port": 8000})
    assert cfg.base_url == "http://10.1.2.3:8000"


def test_config_is_frozen():
    cfg = load_config(file=None, environ={})
    with pytest.raises(AttributeError):
        cfg.tftp_port = 1  # type: ignore[misc]
    assert cfg.replace(tftp_port=1).tftp_port == 1 and cfg.tftp_port == 69


@pytest.mark.parametrize("source, key, value, expect", [
    ("env", "tftp_port", "sixty-nine", "expected an integer"),
    ("env", "http_port", "70000", "out of range"),
    ("env", "bind_address", "not-an-ip", "expected an IP address"),
    ("env", "public_url", "ftp://x", "http:// or https://"),
    ("env", "public_url", "http://user:pw@10.0.0.5", "credentials"),
    ("env", "api_token", "short", "at least 16"),
    ("env", "log_level", "LOUD", "expected one of"),
    ("env", "log_json", "maybe", "true or false"),
    ("override", "tftp_blksize_max", 70000, "out of range"),
    ("override", "tftp_port", True, "boolean"),
])
def test_bad_values_name_key_and_source(source, key, value, expect):
    env = {f"PROVISIONER_{key.upper()}": value} if source == "env" else {}
    overrides = {key: value} if source == "override" else {}
    with pytest.raises(ConfigError) as err:
        load_config(file=None, environ=env, overrides=overrides)
    message = str(err.value)
    assert key in message and expect in message
    assert (f"PROVISIONER_{key.upper()}" if source == "env" else "override") in message


def test_bad_value_in_file_names_file(tmp_path):
    toml = write(tmp_path / "bad.toml", 'http_port = "eighty"\n')
    with pytest.raises(ConfigError, match=r"'http_port' \(from file .*bad.toml\).*integer"):
        load_config(file=toml, environ={})


def test_unknown_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="'tftp_prot'.*unknown key"):
        load_config(file=write(tmp_path / "t.toml", "tftp_prot = 1\n"), environ={})
    with pytest.raises(ConfigError, match="PROVISIONER_HTTP_PROT"):
        load_config(file=None, environ={"PROVISIONER_HTTP_PROT": "1"})


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(file=write(tmp_path / "x.toml", "tftp_port = = 3\n"), environ={})
