"""REST API: bearer token (401 and nothing changed without it), host CRUD, CSV import, JSON errors."""

import threading

import pytest
import requests
from werkzeug.serving import make_server

H = {"mac": "AA-BB-CC-DD-EE-01", "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/scsi-1"}


@pytest.mark.parametrize("method, path, kwargs", [
    ("get", "/api/v1/hosts", {}),
    ("post", "/api/v1/hosts", {"json": H}),
    ("get", "/api/v1/hosts/aa:bb:cc:dd:ee:01", {}),
    ("patch", "/api/v1/hosts/aa:bb:cc:dd:ee:01", {"json": {"notes": "x"}}),
    ("delete", "/api/v1/hosts/aa:bb:cc:dd:ee:01", {}),
    ("post", "/api/v1/hosts/import", {"data": "mac,name,pool\naabbccddee09,h9,p1\n"}),
    ("get", "/api/v1/media", {}),
    ("get", "/api/v1/events", {}),
])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": "Basic dGVzdDp0ZXN0"}])
def test_without_token_401_and_nothing_written(client, store, method, path, kwargs, headers):
    store.add_host(__import__("provisioner.model", fromlist=["Host"]).Host.from_fields(
        {"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1"}))
    before = (store.list_hosts(), store.events())
    response = getattr(client, method)(path, headers=headers, **kwargs)
    assert response.status_code == 401
    assert response.get_json()["error"] == "missing or wrong bearer token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (store.list_hosts(), store.events()) == before


def test_api_disabled_without_configured_token(config, store):
    from provisioner import create_app

    app = create_app(config.replace(api_token=""), store=store)
    response = app.test_client().get("/api/v1/hosts", headers={"Authorization": "Bearer "})
    assert response.status_code == 401 and "disabled" in response.get_json()["error"]


def test_host_crud(client, auth, store):
    r = client.post("/api/v1/hosts", json=H, headers=auth)
    assert r.status_code == 201 and r.get_json()["host"]["mac"] == "aa:bb:cc:dd:ee:01"
    assert r.headers["Location"] == "/api/v1/hosts/aa:bb:cc:dd:ee:01"
    assert client.post("/api/v1/hosts", json=H, headers=auth).status_code == 409
    assert client.get("/api/v1/hosts", headers=auth).get_json()["hosts"][0]["name"] == "h1"
    assert client.get("/api/v1/hosts?pool=other", headers=auth).get_json()["hosts"] == []
    # any MAC spelling in the URL
    assert client.get("/api/v1/hosts/aabb.ccdd.ee01", headers=auth).get_json()["host"]["pool"] == "p1"
    r = client.patch("/api/v1/hosts/AABBCCDDEE01", json={"firmware": "uefi"}, headers=auth)
    assert r.status_code == 200 and r.get_json()["host"]["firmware"] == "uefi"
    assert client.delete("/api/v1/hosts/aa-bb-cc-dd-ee-01", headers=auth).status_code == 200
    assert client.get("/api/v1/hosts/aa:bb:cc:dd:ee:01", headers=auth).status_code == 404
    kinds = [e["kind"] for e in client.get("/api/v1/events?mac=aabbccddee01", headers=auth).get_json()["events"]]
    assert kinds == ["host.added", "host.updated", "host.removed"]


@pytest.mark.parametrize("method, path, kwargs, status, text", [
    ("post", "/api/v1/hosts", {"json": {**H, "mac": "zz"}}, 400, "not a MAC address"),
    ("post", "/api/v1/hosts", {"data": "not json"}, 400, "JSON object"),
    ("post", "/api/v1/hosts", {"json": ["a"]}, 400, "JSON object"),
    ("post", "/api/v1/hosts", {"json": {**H, "firmware": "x"}}, 400, "firmware"),
    ("get", "/api/v1/hosts/not-a-mac", {}, 400, "not a MAC address"),
    ("patch", "/api/v1/hosts/aa:bb:cc:dd:ee:77", {"json": {"notes": "x"}}, 404, "no host"),
    ("patch", "/api/v1/hosts/aa:bb:cc:dd:ee:77", {"json": {"bogus": 1}}, 400, "unknown field"),
    ("delete", "/api/v1/hosts/aa:bb:cc:dd:ee:77", {}, 404, "no host"),
    ("get", "/api/v1/nothing-here", {}, 404, "not found"),
    ("put", "/api/v1/hosts", {}, 405, "not allowed"),
    ("get", "/api/v1/events?since=x", {}, 400, "since"),
])
def test_json_errors(client, auth, method, path, kwargs, status, text):
    response = getattr(client, method)(path, headers=auth, **kwargs)
    assert response.status_code == status
    assert text in response.get_json()["error"]


def test_csv_import(client, auth, store):
    ok = "mac,name,pool\naabbccddee01,h1,p1\naabbccddee02,h2,p1\n"
    r = client.post("/api/v1/hosts/import", data=ok, headers={**auth, "Content-Type": "text/csv"})
    assert r.status_code == 201 and r.get_json()["imported"] == 2
    bad = "mac,name,pool\naabbccddee03,h3,p1\nbad,h4,p1\naabbccddee01,h5,p1\n"
    r = client.post("/api/v1/hosts/import", data=bad, headers={**auth, "Content-Type": "text/csv"})
    assert r.status_code == 422
    assert [p["line"] for p in r.get_json()["problems"]] == [3, 4]
    assert len(store.list_hosts()) == 2
    r = client.post("/api/v1/hosts/import", data=b"\xff\xfe", headers=auth)
    assert r.status_code == 400 and "UTF-8" in r.get_json()["error"]


def test_over_a_real_socket(app, auth, store):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}/api/v1"
    try:
        assert requests.post(f"{base}/hosts", json=H, timeout=5).status_code == 401
        assert store.list_hosts() == []
        assert requests.post(f"{base}/hosts", json=H, headers=auth, timeout=5).status_code == 201
        assert requests.get(f"{base}/hosts", headers=auth, timeout=5).json()["hosts"][0]["name"] == "h1"
    finally:
        server.shutdown()
        server.server_close()


def test_arm_disarm(client, auth, store, config, tmp_path):
    from helpers import make_media_tree
    from provisioner import media

    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "t"))
    client.post("/api/v1/hosts", json=H, headers=auth)
    assert client.post("/api/v1/hosts/aabbccddee01/arm", json={"media": "xs84"}).status_code == 401
    assert store.list_attempts() == []
    r = client.post("/api/v1/hosts/aabbccddee01/arm", json={"media": "nope"}, headers=auth)
    assert r.status_code == 404 and "no media" in r.get_json()["error"]
    r = client.post("/api/v1/hosts/aabbccddee01/arm", json={"media": "xs84", "colour": 1}, headers=auth)
    assert r.status_code == 400
    r = client.post("/api/v1/hosts/aabbccddee01/arm", json={"media": "xs84"}, headers=auth)
    assert r.status_code == 201 and r.get_json()["attempt"]["state"] == "armed"
    assert "token" not in r.get_json()["attempt"]  # the token is a capability: never in API answers
    r = client.get("/api/v1/hosts/aabbccddee01/attempts", headers=auth)
    assert [a["state"] for a in r.get_json()["attempts"]] == ["armed"]
    r = client.post("/api/v1/hosts/aabbccddee01/disarm", headers=auth)
    assert r.status_code == 200 and r.get_json()["disarmed"][0]["state"] == "disarmed"


def test_too_many_wrong_tokens_from_one_address_get_429_then_the_window_passes(app, client, auth, store):
    from provisioner.web.access import set_throttle
    from provisioner.web.throttle import Throttle

    now = [0.0]
    set_throttle(app, Throttle(limit=3, window=60, clock=lambda: now[0]))
    attacker, other = {"REMOTE_ADDR": "10.9.9.9"}, {"REMOTE_ADDR": "10.1.1.1"}
    wrong = {"Authorization": "Bearer wrong-token-0123456789"}
    assert [client.get("/api/v1/hosts", headers=wrong, environ_base=attacker).status_code
            for _ in range(3)] == [401, 401, 401]
    assert [e["details"] for e in store.events(kind="auth.throttled")] == [{"client": "10.9.9.9", "via": "api"}]
    refused = client.post("/api/v1/hosts", json=H, headers=auth, environ_base=attacker)  # even the right token
    assert refused.status_code == 429 and "10.9.9.9" in refused.get_json()["error"]
    assert refused.headers["Retry-After"] == "61" and store.list_hosts() == []
    assert client.get("/api/v1/hosts", headers=auth, environ_base=other).status_code == 200  # others go on
    now[0] += 61
    assert client.post("/api/v1/hosts", json=H, headers=auth, environ_base=attacker).status_code == 201
    assert client.get("/api/v1/hosts", headers=wrong, environ_base=attacker).status_code == 401  # budget reset
    assert len(store.events(kind="auth.throttled")) == 1  # one event per lock-out, not per refusal
