"""Dashboard views through Flask's test client: login, CSRF, registry forms, CSV import, escaping, no secrets."""

from __future__ import annotations

import base64
import json
import zlib

import pytest
from helpers import API_TOKEN
from ui_helpers import MAC, POOL_PASSWORD, URL_PASSWORD, add_host, add_media, csrf_of, log_in, run_of

from provisioner import create_app
from provisioner.boot import attempts
from provisioner.web.ui_base import SECRET_FILE

HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'


@pytest.fixture
def ui(client):
    """A logged-in test client and its CSRF token."""
    return client, log_in(client)


def snapshot(store):
    return store.list_hosts(), [e for e in store.events() if not e["kind"].startswith("ui.")]


# --- authentication ---

PAGES = ["/ui/", "/ui/hosts", "/ui/hosts/new", "/ui/media", "/ui/pools/p1", f"/ui/hosts/{MAC}",
         f"/ui/hosts/{MAC}/edit", f"/ui/hosts/{MAC}/remove", "/ui/pools/p1/confirm?action=abort"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_needs_a_login(client, store, path):
    add_host(store)
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/ui/login?next=")


@pytest.mark.parametrize("path", ["/ui/status.json", f"/ui/hosts/{MAC}/timeline.json", "/ui/runs/p1-0001/events.json"])
def test_json_endpoints_answer_401_without_login(client, path):
    response = client.get(path)
    assert response.status_code == 401 and response.get_json() == {"error": "log in first"}


@pytest.mark.parametrize("path, data", [
    ("/ui/hosts/new", {"mac": "aa:bb:cc:dd:ee:09", "name": "h9", "pool": "p1"}),
    (f"/ui/hosts/{MAC}/edit", {"name": "renamed", "pool": "p1"}),
    (f"/ui/hosts/{MAC}/remove", {"confirmed": "yes"}),
    ("/ui/hosts/import", {"csv_text": "mac,name,pool\naabbccddee09,h9,p1\n"}),
    ("/ui/pools/p1/abort", {"confirmed": "yes"}),
])
def test_writes_without_login_change_nothing(client, store, path, data):
    add_host(store)
    before = snapshot(store)
    # even with a valid CSRF token of an anonymous session: the login is what is missing
    response = client.post(path, data={**data, "csrf_token": csrf_of(client.get("/ui/login").text)})
    assert response.status_code == 302 and response.headers["Location"].startswith("/ui/login")
    assert snapshot(store) == before


def test_root_redirects_to_dashboard(client):
    assert client.get("/").headers["Location"] == "/ui/"


def test_wrong_token_refused_and_recorded(client, store):
    page = client.get("/ui/login")
    response = client.post("/ui/login", data={"token": "not-the-token-0123456789", "csrf_token": csrf_of(page.text)})
    assert response.status_code == 401 and "not the API token" in response.text
    assert client.get("/ui/").status_code == 302
    assert [e["kind"] for e in store.events(kind="ui.login_failed")] == ["ui.login_failed"]


def test_too_many_wrong_logins_lock_the_address_out_even_for_the_right_token(app, client, store):
    from provisioner.web.access import set_throttle
    from provisioner.web.throttle import Throttle

    now = [0.0]
    set_throttle(app, Throttle(limit=2, window=60, clock=lambda: now[0]))
    csrf = csrf_of(client.get("/ui/login").text)
    for _ in range(2):
        wrong = client.post("/ui/login", data={"token": "not-the-token-0123456789", "csrf_token": csrf})
        assert wrong.status_code == 401
    locked = client.post("/ui/login", data={"token": API_TOKEN, "csrf_token": csrf})
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "61"
    assert "Too many failed logins from 127.0.0.1: try again in 60 s." in locked.text
    assert client.get("/ui/").status_code == 302  # still not logged in
    assert [e["details"] for e in store.events(kind="auth.throttled")] == [{"client": "127.0.0.1", "via": "ui"}]
    now[0] += 61
    log_in(client)  # the window has passed
    assert client.get("/ui/").status_code == 200


def test_login_then_pages_and_the_cookie_holds_no_token(client, store):
    add_host(store)
    log_in(client)
    for path in PAGES[:-1]:
        assert client.get(path).status_code == 200, path
    cookie = client.get_cookie("provisioner_ui", path="/ui")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    payload = cookie.value.split(".")[0 if not cookie.value.startswith(".") else 1]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    data = json.loads(zlib.decompress(raw) if cookie.value.startswith(".") else raw)
    assert API_TOKEN not in json.dumps(data) and set(data) >= {"auth", "csrf"}


def test_login_refused_without_csrf(client):
    response = client.post("/ui/login", data={"token": API_TOKEN})
    assert response.status_code == 400 and "security token" in response.text
    assert client.get("/ui/").status_code == 302


def test_login_next_stays_on_the_dashboard(client):
    csrf = csrf_of(client.get("/ui/login").text)
    response = client.post("/ui/login", data={"token": API_TOKEN, "csrf_token": csrf, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/ui/"
    client.post("/ui/logout", data={"csrf_token": csrf_of(client.get("/ui/").text)})
    csrf = csrf_of(client.get("/ui/login").text)
    response = client.post("/ui/login", data={"token": API_TOKEN, "csrf_token": csrf, "next": "/ui/media"})
    assert response.headers["Location"] == "/ui/media"


def test_dashboard_disabled_without_api_token(config, store):
    client = create_app(config.replace(api_token=""), store=store).test_client()
    page = client.get("/ui/login")
    assert page.status_code == 503 and "set <code>api_token</code>" in page.text
    assert client.get("/ui/").status_code == 302


def test_changing_the_api_token_ends_sessions(config, store):
    client = create_app(config, store=store).test_client()
    log_in(client)
    assert client.get("/ui/").status_code == 200
    other = create_app(config.replace(api_token="another-token-0123456789"), store=store)
    cookie = client.get_cookie("provisioner_ui", path="/ui")
    fresh = other.test_client()
    fresh.set_cookie("provisioner_ui", cookie.value, path="/ui")
    assert fresh.get("/ui/").status_code == 302  # same signing key (same data dir), token changed: logged out


def test_logout(ui):
    client, csrf = ui
    assert client.post("/ui/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/ui/").status_code == 302


def test_secret_key_generated_0600_on_first_use_and_kept(config, store):
    key_file = config.data_dir / SECRET_FILE
    app = create_app(config, store=store)
    client = app.test_client()
    client.get("/boot/ipxe")  # a boot request opens no session: no key needed yet
    assert not key_file.exists()
    log_in(client)
    assert key_file.stat().st_mode & 0o777 == 0o600
    # a restarted server (new app, same data dir) accepts the same cookie
    again = create_app(config, store=store).test_client()
    again.set_cookie("provisioner_ui", client.get_cookie("provisioner_ui", path="/ui").value, path="/ui")
    assert again.get("/ui/").status_code == 200


def test_configured_secret_key_writes_no_file(config, store):
    app = create_app(config, store=store)
    app.secret_key = "configured-secret-key-0123456789abcdef"
    log_in(app.test_client())
    assert not (config.data_dir / SECRET_FILE).exists()


def test_security_headers(ui):
    client, _ = ui
    response = client.get("/ui/hosts")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"


# --- CSRF ---

@pytest.mark.parametrize("path, data", [
    ("/ui/hosts/new", {"mac": "aa:bb:cc:dd:ee:09", "name": "h9", "pool": "p1"}),
    (f"/ui/hosts/{MAC}/edit", {"name": "renamed", "pool": "p1"}),
    (f"/ui/hosts/{MAC}/remove", {"confirmed": "yes"}),
    ("/ui/hosts/import", {"csv_text": "mac,name,pool\naabbccddee09,h9,p1\n"}),
    ("/ui/pools/p1/abort", {"confirmed": "yes"}),
    ("/ui/logout", {}),
])
@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_writes_without_the_csrf_token_refused(ui, store, path, data, token):
    client, _ = ui
    add_host(store)
    before = snapshot(store)
    response = client.post(path, data=data if token is None else {**data, "csrf_token": token})
    assert response.status_code == 400 and "security token" in response.text
    assert snapshot(store) == before
    assert client.get("/ui/").status_code == 200  # still logged in (logout refused too)


def test_csrf_token_of_another_session_refused(ui, app, store):
    client, _ = ui
    other_csrf = log_in(app.test_client())
    response = client.post("/ui/hosts/new", data={"csrf_token": other_csrf, "mac": "aa:bb:cc:dd:ee:09",
                                                  "name": "h9", "pool": "p1"})
    assert response.status_code == 400 and store.list_hosts() == []


# --- escaping and secrets ---

def _all_pages(client, mac=MAC, pool="p1"):
    paths = ["/ui/", "/ui/hosts", "/ui/media", f"/ui/pools/{pool}", f"/ui/hosts/{mac}", f"/ui/hosts/{mac}/edit",
             f"/ui/hosts/{mac}/remove", f"/ui/pools/{pool}/confirm?action=abort", "/ui/status.json",
             f"/ui/hosts/{mac}/timeline.json", f"/ui/runs/{pool}-0001/events.json"]
    pages = {}
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        pages[path] = response.get_data(as_text=True)
    return pages


def test_hostile_text_is_escaped_everywhere(ui, store, tmp_path):
    client, _ = ui
    add_host(store, notes=HOSTILE)
    add_media(store, tmp_path)
    store.add_pool("p1", "https://10.0.0.10", "root", POOL_PASSWORD)
    run_of(store)
    store.add_event("xapi.call", mac=MAC, run_id="p1-0001", details={"method": HOSTILE, "ok": False, "error": HOSTILE})
    store.add_event("run.progress", run_id="p1-0001", details={"line": HOSTILE})
    store.add_event("attempt.fetch", mac=MAC, details={"what": HOSTILE, "client": HOSTILE})
    for path, text in _all_pages(client).items():
        if path.endswith(".json"):  # data, not a page: ui.js inserts its strings with textContent
            continue
        assert "<script>alert" not in text and "<img src=x" not in text, path
    host_page = client.get(f"/ui/hosts/{MAC}").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in host_page  # shown, as text
    timeline = client.get(f"/ui/hosts/{MAC}/timeline.json").get_json()["events"]
    assert HOSTILE in timeline[-1]["summary"]
    assert client.get(f"/ui/hosts/{MAC}/timeline.json").headers["X-Content-Type-Options"] == "nosniff"


def test_hostile_form_input_is_escaped_when_shown_back(ui, store):
    client, csrf = ui
    response = client.post("/ui/hosts/new", data={"csrf_token": csrf, "mac": MAC, "name": HOSTILE, "pool": "p1"})
    assert response.status_code == 400 and "<script>alert" not in response.text
    assert 'value="&lt;script&gt;alert(&#34;x&#34;)' in response.text


def test_no_secret_in_any_page(ui, app, store, tmp_path, config):
    client, _ = ui
    add_host(store, disk="/dev/disk/by-id/scsi-1")
    add_media(store, tmp_path)
    store.add_pool("p1", f"https://root:{URL_PASSWORD}@10.0.0.10", "root", POOL_PASSWORD)
    attempt = attempts.arm(store, config, MAC, "xs84")
    attempts.record_fetch(store, attempt.token, "config", "10.0.0.7")
    attempts.record_fetch(store, attempt.token[:-1] + "x", "answerfile", "10.0.0.8")  # a near miss: logged short
    client.get(f"/boot/report/{attempt.token}")  # not a route: logged as http.not_found with its path
    store.add_event("answerfile.refused", mac=MAC, details={"token": attempt.token, "client": "10.0.0.9"})
    run_of(store)
    pages = _all_pages(client)
    key = (config.data_dir / SECRET_FILE).read_text().strip()
    for path, text in pages.items():
        for secret in (POOL_PASSWORD, URL_PASSWORD, attempt.token, attempt.token[:12], API_TOKEN, key):
            assert secret not in text, (path, secret)
    host_page = pages[f"/ui/hosts/{MAC}"]
    assert "fetched config" in host_page and "10.0.0.7" in host_page and attempt.token[:6] + "…" in host_page
    assert "https://10.0.0.10" in pages["/ui/pools/p1"]  # the URL, without its credentials
