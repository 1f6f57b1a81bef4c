"""The dashboard's view model (no Flask): step progress, run summaries, redaction, timeline rows."""

from __future__ import annotations

import pytest

from provisioner import states
from provisioner.model import Host
from provisioner.web import ui_view


@pytest.mark.parametrize("url, shown", [
    ("https://10.0.0.10", "https://10.0.0.10"),
    ("https://root:pw@10.0.0.10:8443/x", "https://10.0.0.10:8443/x"),
    ("http://only-user@[fe80::1]/", "http://[fe80::1]/"),
    ("", ""),
])
def test_safe_url(url, shown):
    assert ui_view.safe_url(url) == shown


@pytest.mark.parametrize("value, key, shown", [
    ("abcdefghijklmnopqrstuvwxyz", "token", "abcdef…"),
    ("hunter2hunter2", "pool_password", "hunter…"),
    (12345, "secret", "…"),
    ("GET /boot/answerfile/abcdefghijklmnopqrstu", "path", "GET /boot/answerfile/abcdef…"),
    ("/boot/script/abcdefghijklmnop/installation-start", "path", "/boot/script/abcdef…/installation-start"),
    ("/boot/report/abcdefghijklmnop/0", "path", "/boot/report/abcdef…/0"),
    ("could not reach https://root:pw@10.0.0.1/", "error", "could not reach https://10.0.0.1/"),
    ({"nested": {"token": "abcdefghijkl"}, "list": ["/boot/answerfile/abcdefghijkl"]}, "d",
     {"nested": {"token": "abcdef…"}, "list": ["/boot/answerfile/abcdef…"]}),
    ("/media/xs84/boot/vmlinuz", "path", "/media/xs84/boot/vmlinuz"),
    (7, "bytes", 7),
])
def test_redact(value, key, shown):
    assert ui_view.redact(value, key) == shown


@pytest.mark.parametrize("kind, details, summary, level", [
    ("attempt.fetch", {"what": "config", "client": "10.0.0.7", "attempt": 3}, "fetched config", "info"),
    ("attempt.fetch", {"what": "kernel", "file": "boot/vmlinuz", "bytes": 10}, "fetched kernel (boot/vmlinuz), 10 bytes",
     "info"),
    ("xapi.call", {"method": "host.reboot", "ok": True}, "XAPI host.reboot: ok", "ok"),
    ("xapi.call", {"method": "host.evacuate", "ok": False, "error": "NO_HOSTS_AVAILABLE"},
     "XAPI host.evacuate: failed: NO_HOSTS_AVAILABLE", "error"),
    ("step.failed", {"from": "wait_up", "to": "failed", "reason": "timed out"}, "step wait_up -> failed: timed out",
     "error"),
    ("step.done", {"from": "restore", "to": "done"}, "step restore -> done", "ok"),
    ("attempt.succeeded", {"attempt": 3, "from": "started", "to": "succeeded", "code": "0"},
     "attempt 3: started -> succeeded (exit code 0)", "ok"),
    ("attempt.unknown_token", {"what": "answerfile", "token": "abcdefghijkl", "client": "10.0.0.8"},
     "what=answerfile, token=abcdef…", "error"),
    ("run.progress", {"line": "h1: reboot sent"}, "h1: reboot sent", "info"),
    ("run.crashed", {"error": "KeyError: 'x'"}, "KeyError: 'x'", "error"),
])
def test_timeline_row(kind, details, summary, level):
    row = ui_view.timeline_row({"id": 1, "ts": "t", "kind": kind, "run_id": None, "details": details})
    assert (row["summary"], row["level"]) == (summary, level)
    assert row["client"] == details.get("client") and row["attempt"] == details.get("attempt")


def _report(steps, state=states.RUN_MEMBERS, run_id="p-1"):
    return {"id": run_id, "pool": "p", "media": "m", "state": state, "reason": None, "abort_requested": False,
            "stop_on_failure": False, "created_at": "c", "updated_at": "u",
            "hosts": [{"mac": f"aa:bb:cc:dd:ee:0{i}", "name": f"h{i}", "role": "master" if i == 0 else "member",
                       "step": step, "reason": None, "remedy": None, "attempt_id": None}
                      for i, step in enumerate(steps)]}


def test_run_view_progress_and_counts():
    view = ui_view.run_view(_report([states.STEP_DONE, states.STEP_FAILED, states.STEP_PENDING]), ["p-1"])
    assert (view["percent"], view["done_hosts"], view["failed_hosts"]) == (67, 1, 1)
    assert view["active"] and view["driven_here"]
    assert [h["percent"] for h in view["hosts"]] == [100, 100, 0]
    ended = ui_view.run_view(_report([states.STEP_DONE], state=states.RUN_DONE), [])
    assert not ended["active"] and not ended["driven_here"] and ended["percent"] == 100


def test_status_lists_registered_and_host_only_pools(store):
    store.add_pool("alpha", "https://root:pw@10.0.0.1", "root", "secret-pw")
    store.add_host(Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "beta"}))
    assert ui_view.pool_names(store) == ["alpha", "beta"]
    assert ui_view.status(store, []) == {"pools": [{"name": "alpha", "run": None}, {"name": "beta", "run": None}]}
    view = ui_view.pool_view(store, "alpha", [])
    assert (view["url"], view["registered"], view["hosts"]) == ("https://10.0.0.1", True, 0)
    assert "secret-pw" not in repr(view) and "pw@" not in repr(view)


def test_host_timeline_pages_with_since(store):
    mac = "aa:bb:cc:dd:ee:01"
    for i in range(5):
        store.add_event("attempt.fetch", mac=mac, details={"what": "config", "client": f"10.0.0.{i}"})
    rows, more = ui_view.host_timeline(store, mac, limit=3)
    assert [r["client"] for r in rows] == ["10.0.0.0", "10.0.0.1", "10.0.0.2"] and more
    rows, more = ui_view.host_timeline(store, mac, since=rows[-1]["id"], limit=3)
    assert [r["client"] for r in rows] == ["10.0.0.3", "10.0.0.4"] and not more


@pytest.mark.parametrize("ts, shown", [
    ("2026-01-31T12:34:56.789+00:00", "2026-01-31 12:34:56.789"),
    (None, ""),
    ("odd", "odd"),
])
def test_when(ts, shown):
    assert ui_view.when(ts) == shown


def test_run_view_keeps_a_failed_hosts_remedy_class_and_redacted_evidence():
    report = _report([states.STEP_FAILED])
    report["hosts"][0].update(remedy="retry", remedy_class="not_network_booted", evidence=[
        {"kind": "attempt.fetch", "when": "t", "what": "GET /boot/answerfile/abcdef0123456789 answered"}])
    host = ui_view.run_view(report, [])["hosts"][0]
    assert (host["remedy"], host["remedy_class"]) == ("retry", "not_network_booted")
    assert host["evidence"][0]["what"] == "GET /boot/answerfile/abcdef… answered"  # tokens cut as everywhere
