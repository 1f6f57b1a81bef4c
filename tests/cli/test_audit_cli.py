"""The audit trail, tokens and webhooks from the command line (issue 23): every operator command leaves one row
naming the OS user; reads leave none; editing a row in the database makes `audit verify` exit 1 and name it."""

from __future__ import annotations

import getpass
import json
import sqlite3

import click

from provisioner import audit
from provisioner.cli import main
from provisioner.cli.audited import NOT_AUDITED, command_path, redact_args


def leaf_commands(group: click.Group, prefix: str = "") -> list[str]:
    out = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}".strip()
        out += leaf_commands(command, path) if isinstance(command, click.Group) else [path]
    return out


def audit_rows(run):
    return json.loads(run("audit", "list", "--json", "--limit", "1000").output)


def db(tmp_path):
    return tmp_path / "data" / "provisioner.db"


def test_every_read_only_name_is_a_real_command():
    leaves = set(leaf_commands(main))
    # a stale name here would silently audit nothing; a command missing here is audited (the safe default)
    assert NOT_AUDITED - {"dhcp-config", "doctor"} <= leaves
    assert {"hosts add", "hosts remove", "upgrade start", "upgrade abort", "tokens add", "webhooks add"} <= (
        leaves - NOT_AUDITED)


def test_each_operator_command_leaves_one_row_and_reads_none(run, tmp_path):
    steps = [
        (("hosts", "add", "aabbccddee01", "--name", "h1", "--pool", "p1"), "hosts add", "ok"),
        (("hosts", "update", "aabbccddee01", "--name", "h2"), "hosts update", "ok"),
        (("hosts", "add", "aabbccddee01", "--name", "h3", "--pool", "p1"), "hosts add", "failed"),
        (("hosts", "remove", "aabbccddee01"), "hosts remove", "ok"),
        (("tokens", "add", "ci", "--role", "operator"), "tokens add", "ok"),
        (("tokens", "remove", "ci"), "tokens remove", "ok"),
    ]
    for argv, action, outcome in steps:
        before = audit_rows(run)
        run(*argv)
        for read in (("hosts", "list"), ("tokens", "list", "--json"), ("audit", "verify")):
            run(*read)
        after = audit_rows(run)
        assert len(after) == len(before) + 1, argv
        row = after[-1]
        assert (row["action"], row["outcome"], row["actor_kind"]) == (action, outcome, "cli"), argv
        assert row["actor"].startswith(getpass.getuser()) and row["source"].startswith("cli@")
        assert row["details"]["args"] == list(argv[len(action.split()):])
        assert row["details"]["started_at"] <= row["ts"]
    assert "already registered" in audit_rows(run)[2]["details"]["error"]  # the failure says why


def test_help_and_usage_errors_leave_no_row(run):
    run("hosts", "add", "--help")
    assert run("hosts", "add", "aabbccddee01", "--firmware", "nope").exit_code == 2
    assert audit_rows(run) == []


def test_secret_options_are_redacted():
    assert redact_args(["p1", "--password", "s3cret", "--token=abc", "--secret-file", "/f", "--name", "x"]) == [
        "p1", "--password", "<redacted>", "--token=<redacted>", "--secret-file", "/f", "--name", "x"]


def test_a_password_inside_a_url_is_redacted():
    """`db copy --to postgresql://user:PASSWORD@host/db` must not put the database password in the audit trail."""
    assert redact_args(["--from", "sqlite:/d/x.db", "--to", "postgresql://prov:s3cret@db:5432/p", "http://h/x"]) == [
        "--from", "sqlite:/d/x.db", "--to", "postgresql://prov:<redacted>@db:5432/p", "http://h/x"]
    assert audit.redact({"url": "https://u:pw@mirror/x/", "n": "postgresql://a@b/c"}) == {
        "url": "https://u:<redacted>@mirror/x/", "n": "postgresql://a@b/c"}
    ctx = click.Context(main)
    assert command_path(main, ctx, ["hosts", "add", "aa", "--name", "x"]) == ("hosts add", ["aa", "--name", "x"])


def test_editing_a_row_makes_verify_fail_and_name_it(run, tmp_path):
    for i in range(4):
        run("hosts", "add", f"aabbccddee0{i}", "--name", f"h{i}", "--pool", "p1")
    assert run("audit", "verify").exit_code == 0
    with sqlite3.connect(db(tmp_path)) as conn:  # the tamperer: straight into the database
        conn.execute("UPDATE audit SET actor = 'someone-else' WHERE id = 3")
    result = run("audit", "verify")
    assert result.exit_code == 1 and "BROKEN at row 3" in result.output and "edited" in result.output
    verdict = json.loads(run("audit", "verify", "--json").output)
    assert (verdict["ok"], verdict["broken_id"], verdict["rows"]) == (False, 3, 2)


def test_deleting_a_row_makes_verify_name_the_next_one(run, tmp_path):
    for i in range(3):
        run("hosts", "add", f"aabbccddee0{i}", "--name", f"h{i}", "--pool", "p1")
    with sqlite3.connect(db(tmp_path)) as conn:
        conn.execute("DELETE FROM audit WHERE id = 2")
    result = run("audit", "verify")
    assert result.exit_code == 1 and "BROKEN at row 3" in result.output and "deleted" in result.output


def test_tokens_add_prints_the_secret_once_and_stores_only_its_digest(run, tmp_path):
    out = json.loads(run("tokens", "add", "ci", "--role", "viewer", "--json").output)
    assert out["role"] == "viewer" and out["secret"].startswith("prov_")
    listed = json.loads(run("tokens", "list", "--json").output)
    assert [t["name"] for t in listed] == ["ci"] and "secret" not in listed[0]
    with sqlite3.connect(db(tmp_path)) as conn:
        dump = "\n".join(conn.iterdump())
    assert out["secret"] not in dump
    assert run("tokens", "add", "ci", "--role", "viewer").exit_code == 1
    assert run("tokens", "add", "config", "--role", "admin").exit_code == 1  # the configured token's name
    assert run("tokens", "add", "x", "--role", "root").exit_code == 2


def test_webhooks_add_list_remove(run, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s" * 32 + "\n")
    added = json.loads(run("webhooks", "add", "http://127.0.0.1:9/hook", "--secret-file", str(secret),
                           "--events", "run.finished", "--json").output)
    assert added["events"] == ["run.finished"] and "secret" not in added
    with sqlite3.connect(db(tmp_path)) as conn:  # stored encrypted: the database alone cannot sign
        stored = conn.execute("SELECT secret FROM webhooks").fetchone()[0]
    assert "s" * 32 not in stored and stored.startswith("fernet:")
    assert run("webhooks", "add", "ftp://x/", "--secret-file", str(secret)).exit_code == 1
    (tmp_path / "short").write_text("abc")
    assert "shorter than 16" in run("webhooks", "add", "http://x/", "--secret-file", str(tmp_path / "short")).output
    assert run("webhooks", "add", "http://x/", "--secret-file", str(secret), "--pool", "nope").exit_code == 1
    assert json.loads(run("webhooks", "list", "--json").output)[0]["deliveries"] == {
        "pending": 0, "delivered": 0, "failed": 0}
    run("webhooks", "remove", str(added["id"]))
    assert json.loads(run("webhooks", "list", "--json").output) == []
    assert [r["action"] for r in audit_rows(run)] == ["webhooks add", "webhooks add", "webhooks add",
                                                     "webhooks add", "webhooks remove"]
