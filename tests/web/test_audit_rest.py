"""The audit trail and roles over HTTP (issue 23): every mutating REST call leaves exactly one audit row, a viewer
token is refused (403) on every mutating endpoint and each refusal is audited, operator/admin split, the dashboard
login per token name. The endpoints are taken from the app's own url_map, so a view added later is covered."""

from __future__ import annotations

import re

import pytest
from ui_helpers import csrf_of

from provisioner import tokens
from provisioner.web.audit_hook import audited

ARG = {"mac": "aa:bb:cc:dd:ee:01", "name": "p1", "action": "abort"}


def mutating_api_rules(app):
    """(method, concrete path) of every non-GET /api rule of the app."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"GET", "HEAD", "OPTIONS"}):
            if rule.rule.startswith("/api/"):
                path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: ARG.get(m.group(1), "x"), rule.rule)
                found.append((method, path))
    return found


def named(store, role):
    record, secret = tokens.add(store, f"t-{role}", role)
    return {"Authorization": f"Bearer {secret}"}


def test_the_app_has_mutating_endpoints_to_check(app):
    rules = mutating_api_rules(app)
    assert len(rules) >= 15 and ("POST", "/api/v1/hosts") in rules and ("DELETE", "/api/v1/hosts/aa:bb:cc:dd:ee:01") \
        in rules


def test_every_mutating_rest_call_leaves_exactly_one_audit_row(app, client, store, auth):
    for method, path in mutating_api_rules(app):
        before = store.last_audit_id()
        response = client.open(path, method=method, json={}, headers=auth)
        rows = store.audit_rows(since_id=before)
        assert len(rows) == 1, (method, path, response.status_code, rows)
        row = rows[0]
        assert row["actor"] == "config" and row["actor_kind"] == "token" and row["source"] == "127.0.0.1"
        assert row["details"]["method"] == method and row["details"]["path"] == path
        assert row["details"]["status"] == response.status_code
        assert row["outcome"] == ("ok" if response.status_code < 400 else "failed")
    assert store.audit_rows(limit=10**6)[-1]["id"] == store.last_audit_id()


def test_reads_leave_no_audit_row(client, store, auth):
    for path in ("/api/v1/hosts", "/api/v1/media", "/api/v1/events", "/api/v1/audit"):
        assert client.get(path, headers=auth).status_code == 200
    assert store.last_audit_id() == 0


def test_a_successful_call_records_who_what_and_the_redacted_body(client, store, auth):
    response = client.post("/api/v1/hosts", headers=auth, json={
        "mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1", "bmc_kind": "ipmi", "bmc_address": "10.0.0.9",
        "bmc_username": "admin", "bmc_password": "hunter2-secret"})
    assert response.status_code == 201
    (row,) = store.audit_rows()
    assert row["action"] == "api.add_host" and row["outcome"] == "ok"
    assert row["details"]["json"]["name"] == "h1" and row["details"]["json"]["bmc_password"] == "<redacted>"
    assert "hunter2" not in str(row)


def test_a_viewer_is_refused_every_mutating_endpoint_and_each_refusal_is_audited(app, client, store):
    viewer = named(store, tokens.VIEWER)
    rules = mutating_api_rules(app)
    for method, path in rules:
        hosts_before, events_before = store.list_hosts(), len(store.events(limit=10**6))
        before = store.last_audit_id()
        response = client.open(path, method=method, json={"mac": "aa:bb:cc:dd:ee:09", "name": "x", "pool": "p"},
                               headers=viewer)
        assert response.status_code == 403, (method, path, response.status_code)
        assert "viewer" in response.get_json()["error"]
        (row,) = store.audit_rows(since_id=before)
        assert (row["actor"], row["outcome"], row["details"]["status"], row["details"]["role"]) == (
            "t-viewer", "refused", 403, "viewer")
        assert store.list_hosts() == hosts_before  # nothing changed
        assert len(store.events(limit=10**6)) == events_before
    assert client.get("/api/v1/hosts", headers=viewer).status_code == 200  # but it may read


def test_a_wrong_token_is_refused_and_audited_as_anonymous(client, store):
    response = client.post("/api/v1/hosts", headers={"Authorization": "Bearer nope-nope-nope"}, json={})
    assert response.status_code == 401
    (row,) = store.audit_rows()
    assert (row["actor"], row["outcome"], row["details"]["status"]) == ("anonymous", "refused", 401)


def test_operator_acts_but_admin_paths_need_admin(client, store):
    operator = named(store, tokens.OPERATOR)
    response = client.post("/api/v1/hosts", headers=operator, json={"mac": "aa:bb:cc:dd:ee:01", "name": "h1",
                                                                     "pool": "p1"})
    assert response.status_code == 201
    assert tokens.refusal(tokens.Principal("o", tokens.OPERATOR), "POST", "/api/v1/tokens") is not None
    assert tokens.refusal(tokens.Principal("a", tokens.ADMIN), "POST", "/api/v1/tokens") is None
    assert store.audit_rows()[0]["actor"] == "t-operator"


def test_removed_token_stops_working(client, store):
    operator = named(store, tokens.OPERATOR)
    assert client.get("/api/v1/hosts", headers=operator).status_code == 200
    store.remove_api_token("t-operator")
    assert client.get("/api/v1/hosts", headers=operator).status_code == 401


def test_named_tokens_alone_enable_the_api(tmp_path):
    from provisioner import create_app
    from provisioner.config import load_config
    from provisioner.store import Store

    config = load_config(file=None, environ={}, overrides={"data_dir": tmp_path / "d", "api_token": ""})
    store = Store(config.db_path)
    app = create_app(config, store=store)
    assert app.test_client().get("/api/v1/hosts").status_code == 401
    record, secret = tokens.add(store, "ops", tokens.ADMIN)
    assert app.test_client().get("/api/v1/hosts", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    store.close()


def test_rest_audit_listing_and_verify(client, store, auth):
    client.post("/api/v1/hosts", headers=auth, json={"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1"})
    client.delete("/api/v1/hosts/aa:bb:cc:dd:ee:01", headers=auth)
    rows = client.get("/api/v1/audit", headers=auth).get_json()["audit"]
    assert [r["action"] for r in rows] == ["api.add_host", "api.remove_host"]
    assert rows[1]["prev_hash"] == rows[0]["hash"] and rows[1]["target"] == "aa:bb:cc:dd:ee:01"
    assert client.get("/api/v1/audit?since=1", headers=auth).get_json()["audit"][0]["id"] == 2
    assert client.get("/api/v1/audit?limit=x", headers=auth).status_code == 400
    verdict = client.get("/api/v1/audit/verify", headers=auth).get_json()
    assert verdict == {"ok": True, "rows": 2, "head": rows[1]["hash"], "broken_id": None, "why": ""}


# --- the dashboard ---


def ui_login(client, secret):
    return client.post("/ui/login", data={"token": secret, "csrf_token": csrf_of(client.get("/ui/login").text)})


def test_dashboard_login_is_per_token_name_and_a_viewer_cannot_post(client, store):
    record, secret = tokens.add(store, "vera", tokens.VIEWER)
    assert ui_login(client, secret).status_code == 303
    page = client.get("/ui/hosts")
    assert page.status_code == 200 and "vera (viewer)" in page.text
    login_row = store.audit_rows()[-1]
    assert (login_row["action"], login_row["actor"], login_row["actor_kind"]) == ("ui.login", "vera", "dashboard")
    assert login_row["details"]["form"]["token"] == "<redacted>" and secret not in str(login_row)
    before = store.last_audit_id()
    response = client.post("/ui/hosts/new", data={"csrf_token": csrf_of(page.text), "mac": "aa:bb:cc:dd:ee:01",
                                                  "name": "h1", "pool": "p1"})
    assert response.status_code == 403 and store.list_hosts() == []
    (row,) = store.audit_rows(since_id=before)
    assert (row["actor"], row["action"], row["outcome"]) == ("vera", "ui.host_new", "refused")
    store.remove_api_token("vera")  # removing the token ends its sessions
    assert client.get("/ui/hosts").status_code == 302


def test_dashboard_actions_are_audited_with_the_token_name(client, store):
    record, secret = tokens.add(store, "olga", tokens.OPERATOR)
    ui_login(client, secret)
    page = client.get("/ui/hosts/new")
    before = store.last_audit_id()
    response = client.post("/ui/hosts/new", data={"csrf_token": csrf_of(page.text), "mac": "aa:bb:cc:dd:ee:01",
                                                  "name": "h1", "pool": "p1", "firmware": "bios"})
    assert response.status_code in (302, 303) and store.get_host("aa:bb:cc:dd:ee:01") is not None
    (row,) = store.audit_rows(since_id=before)
    assert (row["actor"], row["action"], row["outcome"], row["source"]) == ("olga", "ui.host_new", "ok", "127.0.0.1")
    assert row["details"]["form"]["name"] == "h1" and row["details"]["form"]["csrf_token"] == "<redacted>"
    audit_page = client.get("/ui/audit")
    assert audit_page.status_code == 200 and "Hash chain intact" in audit_page.text and "ui.host_new" in audit_page.text


def test_only_writes_under_api_and_ui_are_audited():
    assert audited("POST", "/api/v1/hosts") and audited("DELETE", "/api/v1/hosts/x") and audited("POST", "/ui/login")
    assert not audited("GET", "/api/v1/hosts") and not audited("POST", "/boot/x") and not audited("HEAD", "/ui/")


def test_a_viewer_session_is_refused_every_dashboard_form_and_each_refusal_is_audited(app, client, store):
    record, secret = tokens.add(store, "vic", tokens.VIEWER)
    ui_login(client, secret)
    csrf = csrf_of(client.get("/ui/hosts").text)
    forms = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/ui/") and "POST" in rule.methods and rule.endpoint not in ("ui.login", "ui.logout"):
            forms.append(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", lambda m: ARG.get(m.group(1), "x"), rule.rule))
    assert len(forms) >= 5
    for path in forms:
        before = store.last_audit_id()
        response = client.post(path, data={"csrf_token": csrf, "mac": "aa:bb:cc:dd:ee:01", "name": "h", "pool": "p"})
        assert response.status_code == 403, path
        (row,) = store.audit_rows(since_id=before)
        assert (row["actor"], row["outcome"], row["details"]["path"]) == ("vic", "refused", path)
    assert store.list_hosts() == []
