"""REST and dashboard: a host's boot MAC, multipath flag, boot method and BMC; the BMC password is write-only
(bmc_password in, bmc_password_set out) and never in a response, a page or an event; a pool's default boot method."""

from __future__ import annotations

import re

import pytest
from ui_helpers import MAC, add_host, log_in

from provisioner import registry
from provisioner.coordinator import pools
from provisioner.web import openapi

PASSWORD = "Rest-Bmc-Secret-77"
H = {"mac": "AA-BB-CC-DD-EE-01", "name": "h1", "pool": "p1", "boot_mac": "aa:bb:cc:dd:ee:99", "multipath": True,
     "bmc_kind": "redfish", "bmc_address": "https://bmc1:443", "bmc_username": "admin", "bmc_password": PASSWORD,
     "boot_method": "redfish"}


def _never(client, auth, *responses):
    everything = [r.get_data(as_text=True) for r in responses]
    everything.append(client.get("/api/v1/events", headers=auth).get_data(as_text=True))
    for text in everything:
        assert PASSWORD not in text and "fernet:v1:" not in text


def test_rest_fields_and_a_write_only_password(client, auth, store):
    created = client.post("/api/v1/hosts", json=H, headers=auth)
    assert created.status_code == 201, created.get_json()
    host = created.get_json()["host"]
    assert {"mac": MAC, "boot_mac": "aa:bb:cc:dd:ee:99", "multipath": True, "boot_method": "redfish",
            "bmc_kind": "redfish", "bmc_address": "https://bmc1:443", "bmc_username": "admin",
            "bmc_system_id": None, "bmc_password_set": True}.items() <= host.items()
    assert "bmc_password" not in host
    assert registry.bmc_password(store, MAC) == PASSWORD
    listed = client.get("/api/v1/hosts", headers=auth)
    shown = client.get(f"/api/v1/hosts/{MAC}", headers=auth)
    assert shown.get_json()["host"] == host and listed.get_json()["hosts"] == [host]
    # PATCH without the password keeps it; with one replaces it; null / "" keep it too
    kept = client.patch(f"/api/v1/hosts/{MAC}", json={"notes": "x", "bmc_password": None}, headers=auth)
    assert kept.status_code == 200 and kept.get_json()["host"]["bmc_password_set"] is True
    changed = client.patch(f"/api/v1/hosts/{MAC}", json={"bmc_password": PASSWORD + "-new"}, headers=auth)
    assert changed.status_code == 200 and registry.bmc_password(store, MAC) == PASSWORD + "-new"
    # dropping the BMC (and the method that needs it) drops the password
    cleared = client.patch(f"/api/v1/hosts/{MAC}", json={"boot_method": None, "bmc_kind": None, "bmc_address": None,
                                                        "bmc_username": None}, headers=auth)
    assert cleared.status_code == 200 and cleared.get_json()["host"]["bmc_password_set"] is False
    _never(client, auth, created, listed, shown, kept, changed, cleared)


@pytest.mark.parametrize("body, field, text", [
    ({"boot_method": "redfish"}, "boot_method", "redfish needs a redfish BMC"),
    ({"bmc_kind": "ipmi", "bmc_address": "https://x", "bmc_username": "u"}, "bmc_address", "not an IPMI address"),
    ({"bmc_kind": "redfish", "bmc_address": "bmc:443", "bmc_username": "u"}, "bmc_address", "not a Redfish"),
    ({"bmc_password": PASSWORD}, "bmc_password", "needs a BMC"),
    ({"bmc_password": 5}, "bmc_password", "expected text"),
    ({"multipath": "maybe"}, "multipath", "expected true or false"),
    ({"boot_mac": "zz"}, "boot_mac", "not a MAC address"),
    ({"boot_method": "pxe"}, "boot_method", "not one of"),
])
def test_rest_refusals_name_the_field_and_never_echo_the_password(client, auth, store, body, field, text):
    add_host(store)
    r = client.patch(f"/api/v1/hosts/{MAC}", json=body, headers=auth)
    assert r.status_code == 400 and r.get_json()["field"] == field and text in r.get_json()["error"]
    assert PASSWORD not in r.get_data(as_text=True)


def test_rest_csv_import_refuses_password_files(client, auth, store, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    csv = f"mac,name,pool,bmc_kind,bmc_address,bmc_username,bmc_password_file\naabbccddee01,h1,p1,ipmi,h,u,{secret}\n"
    r = client.post("/api/v1/hosts/import", data=csv, headers={**auth, "Content-Type": "text/csv"})
    assert r.status_code == 422 and "read only by the command line" in r.get_data(as_text=True)
    assert store.list_hosts() == []
    ok = ("mac,name,pool,boot_mac,multipath,bmc_kind,bmc_address,bmc_username\n"
          "aabbccddee01,h1,p1,aabbccddee91,1,ipmi,h,u\n")
    r = client.post("/api/v1/hosts/import", data=ok, headers={**auth, "Content-Type": "text/csv"})
    assert r.status_code == 201 and r.get_json()["hosts"][0]["bmc_password_set"] is False


def test_rest_pool_default_boot_method(client, auth, store):
    pools.add_pool(store, "p1", "https://master", "root", "pw", fingerprint="ab" * 32)
    r = client.patch("/api/v1/pools/p1", json={"boot_method": "ipmi"}, headers=auth)
    assert r.status_code == 200 and r.get_json()["pool"]["boot_method"] == "ipmi"
    assert client.get("/api/v1/pools", headers=auth).get_json()["pools"][0]["boot_method"] == "ipmi"
    assert client.patch("/api/v1/pools/p1", json={"boot_method": "x"}, headers=auth).status_code == 400
    assert client.patch("/api/v1/pools/zz", json={"boot_method": "ipmi"}, headers=auth).status_code == 404


def test_openapi_describes_the_fields_and_the_write_only_password():
    schemas = openapi.spec()["components"]["schemas"]
    assert schemas["Host"]["properties"]["bmc_password_set"]["readOnly"] is True
    assert "bmc_password" not in schemas["Host"]["properties"]
    for name in ("HostInput", "HostPatch"):
        assert schemas[name]["properties"]["bmc_password"]["writeOnly"] is True
        assert {"boot_mac", "multipath", "boot_method", "bmc_kind", "bmc_address", "bmc_username",
                "bmc_system_id"} <= set(schemas[name]["properties"])
    assert schemas["Pool"]["properties"]["boot_method"]["enum"] == ["network-first", "redfish", "ipmi", "host-plugin"]


@pytest.fixture
def ui(client):
    return client, log_in(client)


def test_the_host_form_sets_the_bmc_and_keeps_a_blank_password(ui, store, client, auth):
    client, csrf = ui
    form = client.get("/ui/hosts/new").text
    assert 'name="bmc_password" type="password" value=""' in form
    assert 'name="boot_method"' in form and 'name="bmc_kind"' in form and 'name="multipath" type="checkbox"' in form
    created = client.post("/ui/hosts/new", data={
        "csrf_token": csrf, "mac": MAC, "name": "h1", "pool": "p1", "boot_mac": "aa:bb:cc:dd:ee:99",
        "multipath": "yes", "boot_method": "ipmi", "bmc_kind": "ipmi", "bmc_address": "10.0.0.5:623",
        "bmc_username": "admin", "bmc_password": PASSWORD})
    assert created.status_code == 303, created.text
    host = store.get_host(MAC)
    assert (host.boot_mac, host.multipath, host.boot_method, host.bmc_kind, host.bmc_password_set) == (
        "aa:bb:cc:dd:ee:99", True, "ipmi", "ipmi", True)
    page = client.get(f"/ui/hosts/{MAC}").text
    assert "password set" in page and "10.0.0.5:623" in page
    edit = client.get(f"/ui/hosts/{MAC}/edit").text
    assert "A password is stored: leave blank to keep it." in edit
    assert re.search(r'name="multipath" type="checkbox" value="yes" checked', edit)
    assert '<option value="ipmi" selected>' in edit
    saved = client.post(f"/ui/hosts/{MAC}/edit", data={
        "csrf_token": csrf, "name": "h1", "pool": "p1", "boot_mac": "aa:bb:cc:dd:ee:99", "boot_method": "ipmi",
        "bmc_kind": "ipmi", "bmc_address": "10.0.0.6", "bmc_username": "admin", "bmc_password": ""})
    assert saved.status_code == 303
    host = store.get_host(MAC)
    assert host.bmc_address == "10.0.0.6" and host.multipath is False
    assert registry.bmc_password(store, MAC) == PASSWORD  # blank kept it
    bad = client.post(f"/ui/hosts/{MAC}/edit", data={
        "csrf_token": csrf, "name": "h1", "pool": "p1", "boot_method": "redfish", "bmc_kind": "ipmi",
        "bmc_address": "10.0.0.6", "bmc_username": "admin", "bmc_password": PASSWORD + "-typo"})
    assert bad.status_code == 400 and 'id="e-boot_method"' in bad.text
    for text in (form, page, edit, saved.text, bad.text):
        assert PASSWORD not in text
    assert registry.bmc_password(store, MAC) == PASSWORD
    _never(client, auth)
