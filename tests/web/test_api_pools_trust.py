"""The REST side of a pool's certificate trust (docs/xapi.md "TLS"): POST /pools takes "fingerprint" or "ca_pem",
POST /pools/certificate shows what an https URL presents (trust-on-first-use: the client confirms, then sends the
fingerprint), POST /pools/NAME/trust changes it; against the HTTPS simulator."""

from __future__ import annotations

import pytest

from provisioner.coordinator import pools
from provisioner.simulator.builder import start_simulator
from provisioner.xapi_tls import colons

PASSWORD = "Tr0ub4dor-and-3"


@pytest.fixture
def sim():
    handle = start_simulator(2, speed=600.0, password=PASSWORD, pool_name="lab")
    yield handle
    handle.stop()


def test_first_use_over_rest_then_connect(client, auth, store, sim):
    untrusted = client.post("/api/v1/pools", json={"name": "lab", "url": sim.master_url(), "password": PASSWORD},
                            headers=auth)
    assert untrusted.status_code == 400 and untrusted.get_json()["field"] == "fingerprint"
    seen = client.post("/api/v1/pools/certificate", json={"url": sim.master_url()}, headers=auth)
    assert seen.status_code == 200
    cert = seen.get_json()["certificate"]
    assert cert["fingerprint"] == sim.master_fingerprint() and cert["subject"] == "CN=lab-host0"
    assert cert["fingerprint_colons"] == colons(sim.master_fingerprint()) and "127.0.0.1" in cert["alt_names"]
    added = client.post("/api/v1/pools", json={"name": "lab", "url": sim.master_url(), "password": PASSWORD,
                                               "fingerprint": cert["fingerprint_colons"]}, headers=auth)
    assert added.status_code == 201 and added.get_json()["pool"]["trust"] == "fingerprint"
    assert client.post("/api/v1/pools/lab/discover", headers=auth).status_code == 200
    assert len(store.list_hosts(pool="lab")) == 2


def test_trust_changes_and_bad_input(client, auth, store, sim):
    pools.add_pool(store, "lab", sim.master_url(), "root", PASSWORD, fingerprint="ab" * 32)
    wrong = client.post("/api/v1/pools/lab/discover", headers=auth)
    assert wrong.status_code == 502 and colons("ab" * 32) in wrong.get_json()["error"]
    assert "certificate was refused" in wrong.get_json()["error"]
    pem = sim.cert_pem(sim.world.pools["lab"].master.mac).decode()
    changed = client.post("/api/v1/pools/lab/trust", json={"ca_pem": pem}, headers=auth)
    assert changed.status_code == 200 and changed.get_json()["pool"]["trust"] == "ca"
    assert client.post("/api/v1/pools/lab/discover", headers=auth).status_code == 200
    assert client.post("/api/v1/pools/lab/trust", json={"ca_pem": "junk"}, headers=auth).status_code == 400
    assert client.post("/api/v1/pools/lab/trust", json={}, headers=auth).status_code == 400
    assert client.post("/api/v1/pools/nope/trust", json={"fingerprint": "ab" * 32}, headers=auth).status_code == 404
    assert client.post("/api/v1/pools/certificate", json={"url": "http://127.0.0.1:9"},
                       headers=auth).status_code == 400


def test_the_pool_page_says_how_its_certificate_is_trusted(store):
    from provisioner.web import ui_view
    pools.add_pool(store, "pinned", "https://10.0.0.1", "root", PASSWORD, fingerprint="ab" * 32)
    pools.add_pool(store, "clear", "http://10.0.0.2", "root", PASSWORD)
    store.add_pool("old", "https://10.0.0.3", "root", PASSWORD)  # stored before trust existed
    assert ui_view.pool_view(store, "pinned", [])["trust"] == f"certificate pinned, SHA-256 {colons('ab' * 32)}"
    assert "in clear" in ui_view.pool_view(store, "clear", [])["trust"]
    assert "pools trust" in ui_view.pool_view(store, "old", [])["trust"]


def test_rest_add_checks_the_certificate_and_warns_about_http(client, auth, sim):
    wrong = client.post("/api/v1/pools", json={"name": "lab", "url": sim.master_url(), "password": PASSWORD,
                                               "fingerprint": "ab" * 32}, headers=auth)
    assert wrong.status_code == 400 and colons(sim.master_fingerprint()) in wrong.get_json()["error"]
    clear = client.post("/api/v1/pools", json={"name": "lab", "url": "http://127.0.0.1:9", "password": PASSWORD},
                        headers=auth)
    assert clear.status_code == 201 and "in clear text" in clear.get_json()["warnings"][0]
