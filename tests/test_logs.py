"""provisioner.logs: JSON or text lines, the host fields, masking of secrets, and the logs of a real demo run."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from click.testing import CliRunner

from provisioner import demo, logs
from provisioner.cli import main
from provisioner.config import load_config
from provisioner.store import Store

from helpers import make_media_tree

API_TOKEN = "logs-test-api-token-0123456789"
DEMO_PASSWORD = "demo"  # the pool password demo.run_demo gives the simulator
MAC_RE = re.compile(r"\b([0-9a-f]{2}:){5}[0-9a-f]{2}\b")


@pytest.fixture(autouse=True)
def restore_logging():
    """setup_logging changes the root logger: put it back after each test."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _config(tmp_path, **overrides):
    return load_config(file=None, environ={}, overrides={"data_dir": tmp_path / "data", "api_token": API_TOKEN,
                                                          **overrides})


def test_json_lines_carry_time_level_logger_message_and_host_fields(tmp_path):
    out = io.StringIO()
    logs.setup_logging(_config(tmp_path, log_json=True, log_level="INFO"), stream=out)
    log = logging.getLogger("provisioner.test")
    log.info("armed %s", "aa:bb:cc:dd:ee:01", extra={"mac": "aa:bb:cc:dd:ee:01", "attempt": 7, "run": "r-1"})
    logs.host_log(log, "aa:bb:cc:dd:ee:02", 8).warning("went down")
    log.debug("not shown at INFO")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["armed aa:bb:cc:dd:ee:01", "went down", "failed"]
    first = lines[0]
    assert (first["level"], first["logger"], first["mac"], first["attempt"], first["run"]) == (
        "INFO", "provisioner.test", "aa:bb:cc:dd:ee:01", 7, "r-1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["time"])
    assert (lines[1]["mac"], lines[1]["attempt"], "run" in lines[1]) == ("aa:bb:cc:dd:ee:02", 8, False)
    assert "mac" not in lines[2] and "RuntimeError: boom" in lines[2]["exception"]


def test_text_lines_name_the_host_and_a_second_setup_replaces_the_first(tmp_path):
    first, second = io.StringIO(), io.StringIO()
    logs.setup_logging(_config(tmp_path, log_json=True), stream=first)
    logs.setup_logging(_config(tmp_path, log_level="DEBUG"), stream=second)
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_provisioner_handler", False)]
    assert len(ours) == 1
    logs.host_log(logging.getLogger("provisioner.test"), "aa:bb:cc:dd:ee:03", 9).debug("step %s", "reboot")
    assert first.getvalue() == ""
    assert re.fullmatch(r"\S+ \S+ DEBUG provisioner.test: step reboot \[mac=aa:bb:cc:dd:ee:03 attempt=9\]\n",
                        second.getvalue())


@pytest.mark.parametrize("log_json", [True, False])
def test_the_api_token_and_boot_url_tokens_are_masked(tmp_path, log_json):
    out = io.StringIO()
    logs.setup_logging(_config(tmp_path, log_json=log_json), stream=out)
    attempt_token = "Zx9_-abcdefghijklmnopqrstuvwx"
    log = logging.getLogger("provisioner.test")
    log.warning("Authorization: Bearer %s", API_TOKEN)
    log.warning('GET http://10.0.0.5/boot/answerfile/%s "200"', attempt_token)
    log.warning("GET /boot/script/%s/installation-start", attempt_token)
    try:
        raise ValueError(f"/boot/report/{attempt_token}/0 with {API_TOKEN}")
    except ValueError:
        log.exception("report failed")
    text = out.getvalue()
    assert API_TOKEN not in text and attempt_token not in text
    assert text.count(logs.MASK) == 5
    assert "/boot/script/***/installation-start" in text


def test_cli_root_sets_up_json_logging(tmp_path):
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": "",
           "PROVISIONER_LOG_JSON": "true", "PROVISIONER_LOG_LEVEL": "INFO"}
    runner = CliRunner()
    for args in (["media", "add", "xs84", str(make_media_tree(tmp_path / "tree"))],
                 ["hosts", "add", "aa:bb:cc:dd:ee:10", "--name", "h1", "--pool", "p1", "--disk", "/dev/disk/by-id/x"]):
        assert runner.invoke(main, args, env=env).exit_code == 0
    result = runner.invoke(main, ["hosts", "arm", "aa-bb-cc-dd-ee-10", "--media", "xs84"], env=env)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    armed = [line for line in lines if line["logger"] == "provisioner.boot.attempts"]
    assert len(armed) == 1 and armed[0]["mac"] == "aa:bb:cc:dd:ee:10" and isinstance(armed[0]["attempt"], int)


def test_a_bad_config_does_not_break_help(tmp_path):
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": "", "PROVISIONER_LOG_LEVEL": "LOUD"}
    assert CliRunner().invoke(main, ["hosts", "list", "--help"], env=env).exit_code == 0
    failed = CliRunner().invoke(main, ["hosts", "list"], env=env)
    assert failed.exit_code == 1 and "log_level" in failed.output


def test_a_demo_run_logs_json_naming_hosts_and_no_secret(tmp_path):
    out = io.StringIO()
    logs.setup_logging(_config(tmp_path, log_json=True, log_level="DEBUG"), stream=out)
    results = demo.run_demo(tmp_path / "demo", hosts=2, speed=600, say=lambda line: None)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]  # every line is one JSON object
    assert len(lines) > 20
    macs = {r.mac for r in results}
    store = Store(tmp_path / "demo" / "data" / "provisioner.db")
    attempt_ids = {a.id for a in store.list_attempts()}
    about_attempts = [line for line in lines if line["logger"] == "provisioner.boot.attempts"]
    assert len(about_attempts) >= 3 * len(macs)  # armed, installer started, reported 0: per host
    for line in about_attempts:
        assert line["mac"] in macs and line["attempt"] in attempt_ids, line
    for line in lines:  # any line that names a host's MAC carries it as a field too
        named = {m.group(0) for m in MAC_RE.finditer(line["message"])} & macs
        assert not named or line.get("mac") in named, line
    stored = store.get_pool(demo.DEMO_POOL).password  # as the store keeps it (maybe encrypted)
    text = out.getvalue()
    for secret in [API_TOKEN, stored, demo.BMC_PASSWORD] + [a.token for a in store.list_attempts()]:
        assert secret not in text
    # the demo's pool password is the word "demo" (in many names): no line may pair it with a password
    assert not re.search(r"password\W+" + re.escape(DEMO_PASSWORD), text, re.IGNORECASE)
    store.close()


def test_a_library_line_naming_one_mac_gets_it_as_its_field():
    """sushy's DEBUG dump of a Redfish system names the host's NIC MAC and passes no extra (demo with redfish)."""
    def formatted(formatter, message, **extra):
        record = logging.LogRecord("sushy.resources.base", logging.DEBUG, __file__, 1, message, None, None)
        record.__dict__.update(extra)
        return formatter.format(record)
    one = json.loads(formatted(logs.JsonFormatter(), "system {'mac': '52:54:00:AB:00:01'}"))
    assert one["mac"] == "52:54:00:ab:00:01"
    two = json.loads(formatted(logs.JsonFormatter(), "52:54:00:ab:00:01 and 52:54:00:ab:00:02"))
    assert "mac" not in two  # which host it is about is not clear: no field
    given = json.loads(formatted(logs.JsonFormatter(), "52:54:00:ab:00:01", mac="52:54:00:ab:00:09"))
    assert given["mac"] == "52:54:00:ab:00:09"  # a field the caller gave wins
    assert formatted(logs.TextFormatter(), "boot 52:54:00:ab:00:01").endswith("[mac=52:54:00:ab:00:01]")
