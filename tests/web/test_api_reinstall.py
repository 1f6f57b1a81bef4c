"""REST /api/v1/hosts/<mac>/reinstall: token, input errors, refusals (409, every problem, nothing changed), and
the whole flow driven by the server's background thread while GET follows it; the hash never comes back."""

from __future__ import annotations

import pytest
from labs import MEDIA, PASSWORD, POOL, macs, power_on_when_armed, shut_down, upgrade

from provisioner import cryptpw, states
from provisioner.simulator.builder import add_local_vm
from provisioner.coordinator.service import FlowService
from provisioner.web.access import set_flows

HASH = cryptpw.hash_password(PASSWORD, rounds=1000)
MAC = "52:54:00:aa:00:01"


@pytest.fixture
def host(store):
    from provisioner.model import Host
    store.add_host(Host.from_fields({"mac": MAC, "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/scsi-1"}))


def test_token_required(client, host):
    r = client.post(f"/api/v1/hosts/{MAC}/reinstall", json={"pool": "p1", "media": "m", "confirm": "h1"})
    assert r.status_code == 401
    assert client.get(f"/api/v1/hosts/{MAC}/reinstall").status_code == 401


@pytest.mark.parametrize("body, status, words", [
    ({"pool": "p1", "media": "m", "confirm": "h1", "password": "x"}, 400, "unknown field(s): password"),
    ({"media": "m", "confirm": "h1"}, 400, "pool: is required"),
    ({"pool": "p1", "media": "m", "confirm": "h1", "forget": "yes"}, 400, "forget: must be a bool"),
    ({"pool": "p1", "media": "m", "confirm": "h1", "accept_data_loss": 1}, 400, "accept_data_loss: must be a bool"),
    ({"pool": "p1", "media": "m"}, 400, "confirm it by name"),
    ({"pool": "p1", "media": "m", "confirm": "h2"}, 400, "is not the name of host"),
])
def test_input_errors(client, auth, host, store, body, status, words):
    r = client.post(f"/api/v1/hosts/{MAC}/reinstall", json=body, headers=auth)
    assert r.status_code == status and words in r.get_json()["error"]
    assert store.list_reinstalls() == []


def test_refusal_lists_every_problem_and_never_echoes_the_value(client, auth, host, store):
    r = client.post(f"/api/v1/hosts/{MAC}/reinstall", headers=auth, json={
        "pool": "p1", "media": "m", "confirm": "h1", "root_password_hash": "plain-secret"})
    body = r.get_json()
    assert r.status_code == 409 and body["error"] == "reinstall refused, nothing changed"
    assert any("not a SHA-512" in p for p in body["problems"]) and "plain-secret" not in r.get_data(as_text=True)
    assert any("no pool named 'p1'" in p for p in body["problems"])
    assert store.list_reinstalls() == [] and client.get("/api/v1/hosts/00:11:22:33:44:55/reinstall",
                                                        headers=auth).status_code == 404


def test_whole_flow_in_the_background_and_followed_with_get(lab, auth):
    from provisioner import create_app

    config = lab.config.replace(api_token=auth["Authorization"].split()[1], upgrade_poll_ms=50)
    app = create_app(config, store=lab.store)
    flows = FlowService(lab.store, config)  # what `serve` gives its app
    set_flows(app, flows)
    client = app.test_client()
    master, mac, _ = macs(lab)
    refused = client.post(f"/api/v1/hosts/{master}/reinstall", headers=auth, json={
        "pool": POOL, "media": MEDIA, "confirm": lab.store.get_host(master).name, "root_password_hash": HASH})
    assert refused.status_code == 409 and any("MASTER" in p for p in refused.get_json()["problems"])

    assert upgrade(lab).state == states.RUN_DONE
    add_local_vm(lab.world.pools[POOL], "db-suspended", lab.world.host(mac).ref, power_state="Suspended")
    shut_down(lab, mac)
    body = {"pool": POOL, "media": MEDIA, "confirm": lab.store.get_host(mac).name, "forget": True,
            "root_password_hash": HASH, "host_url": lab.sim.url(mac)}
    refused = client.post(f"/api/v1/hosts/{mac}/reinstall", headers=auth, json=body)
    assert refused.status_code == 409 and any("accept_data_loss" in p for p in refused.get_json()["problems"])
    assert {(d["role"], d["vm"]) for d in refused.get_json()["data_loss"]} == {
        ("disk", "db-suspended"), ("suspend image", "db-suspended")}
    assert lab.store.list_reinstalls(mac) == []
    body["accept_data_loss"] = True
    watcher = power_on_when_armed(lab, mac)
    r = client.post(f"/api/v1/hosts/{mac}/reinstall", headers=auth, json=body)
    assert r.status_code == 202 and r.headers["Location"] == f"/api/v1/hosts/{mac}/reinstall"
    started = r.get_json()["reinstall"]
    assert started["step"] == states.RI_FORGET and "root_password_hash" not in started
    again = client.post(f"/api/v1/hosts/{mac}/reinstall", headers=auth, json=body)  # resume: the same flow,
    assert again.status_code == 202 and again.get_json()["reinstall"]["id"] == started["id"]  # one driver
    flows.wait_reinstall(started["id"], 120)
    watcher.join(5)
    shown = client.get(f"/api/v1/hosts/{mac}/reinstall", headers=auth)
    data = shown.get_json()
    assert data["reinstalls"][0]["step"] == states.RI_DONE, data
    assert data["reinstalls"][0]["new_uuid"] and any("fresh install armed" in line for line in data["progress"])
    assert sorted(d["vdi"] for d in data["data_lost"]) == ["Suspend image for db-suspended", "db-suspended disk"]
    assert len(r.get_json()["data_lost"]) == 2
    assert HASH not in shown.get_data(as_text=True) and HASH not in r.get_data(as_text=True)
    assert {h.product_version for h in lab.driver.hosts()} == {"8.4.0"} and len(lab.driver.hosts()) == 3
    assert len([c for c in lab.world.call_log if c[1] == "pool.join"]) == 1
    assert lab.store.events(kind="reinstall.crashed") == []
    assert started["id"] not in flows.reinstalling()  # the flow's thread has ended
    flows.stop()
