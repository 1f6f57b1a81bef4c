"""Dashboard host registry through Flask's test client: add / edit / remove forms with inline errors, CSV import."""

from __future__ import annotations

import io
import re

import pytest
from ui_helpers import MAC, add_host, log_in

from provisioner.model import Host


@pytest.fixture
def ui(client):
    """A logged-in test client and its CSRF token."""
    return client, log_in(client)


def test_add_host_through_the_form(ui, store):
    client, csrf = ui
    response = client.post("/ui/hosts/new", data={
        "csrf_token": csrf, "mac": "AA-BB-CC-DD-EE-01", "name": "h1", "pool": "p1", "firmware": "uefi",
        "disk": "/dev/disk/by-id/scsi-1", "ip": "10.0.0.7", "notes": "rack 4"})
    assert response.status_code == 303 and response.headers["Location"] == f"/ui/hosts/{MAC}"
    assert store.get_host(MAC) == Host(MAC, "h1", "p1", "/dev/disk/by-id/scsi-1", "uefi", "10.0.0.7", "rack 4", site="default")
    page = client.get(response.headers["Location"]).text
    assert "Host h1 (aa:bb:cc:dd:ee:01) registered in pool p1." in page and "host.added" in page


@pytest.mark.parametrize("field, value, message", [
    ("mac", "zz:zz", "is not a MAC address"),
    ("name", "", "is required"),
    ("disk", "sda", "is not a device path"),
    ("ip", "10.0.0.300", "is not an IP address"),
])
def test_add_host_errors_inline_and_values_kept(ui, store, field, value, message):
    client, csrf = ui
    data = {"csrf_token": csrf, "mac": MAC, "name": "h1", "pool": "p1", "disk": "/dev/disk/by-id/x", "notes": "keep me",
            field: value}
    response = client.post("/ui/hosts/new", data=data)
    assert response.status_code == 400 and store.list_hosts() == []
    inline = re.search(rf'<p class="field-error" id="e-{field}">([^<]*)</p>', response.text)
    assert inline and message in inline.group(1)
    assert f'aria-describedby="e-{field}"' in response.text and ">keep me</textarea>" in response.text


def test_add_host_conflict_is_a_form_error(ui, store):
    client, csrf = ui
    add_host(store)
    response = client.post("/ui/hosts/new", data={"csrf_token": csrf, "mac": MAC, "name": "h2", "pool": "p1"})
    assert response.status_code == 409 and 'id="form-error"' in response.text
    assert "already registered" in response.text and len(store.list_hosts()) == 1


def test_kernel_disk_name_warned(ui, store):
    client, csrf = ui
    response = client.post("/ui/hosts/new", data={"csrf_token": csrf, "mac": MAC, "name": "h1", "pool": "p1",
                                                   "disk": "/dev/sda"}, follow_redirects=True)
    assert "kernel device name" in response.text and store.get_host(MAC).disk == "/dev/sda"


def test_edit_host(ui, store):
    client, csrf = ui
    add_host(store, notes="old")
    form = client.get(f"/ui/hosts/{MAC}/edit").text
    assert 'value="h1"' in form and "disabled" in form  # the MAC cannot change
    response = client.post("/ui/hosts/aabbccddee01/edit", data={
        "csrf_token": csrf, "mac": "aa:bb:cc:dd:ee:99", "name": "h1b", "pool": "p1", "firmware": "bios", "notes": ""})
    assert response.status_code == 303
    assert store.get_host(MAC).name == "h1b" and store.get_host(MAC).notes == ""
    bad = client.post(f"/ui/hosts/{MAC}/edit", data={"csrf_token": csrf, "name": "h1b", "pool": "bad pool"})
    assert bad.status_code == 400 and 'id="e-pool"' in bad.text and store.get_host(MAC).pool == "p1"


def test_remove_needs_the_confirmation(ui, store):
    client, csrf = ui
    add_host(store)
    page = client.get(f"/ui/hosts/{MAC}/remove")
    assert "Remove host h1?" in page.text and store.get_host(MAC) is not None
    unconfirmed = client.post(f"/ui/hosts/{MAC}/remove", data={"csrf_token": csrf})
    assert unconfirmed.status_code == 200 and store.get_host(MAC) is not None
    done = client.post(f"/ui/hosts/{MAC}/remove", data={"csrf_token": csrf, "confirmed": "yes"})
    assert done.status_code == 303 and store.get_host(MAC) is None


def test_unknown_host_page_is_404(ui):
    client, _ = ui
    assert client.get("/ui/hosts/aa:bb:cc:dd:ee:77").status_code == 404
    assert client.get("/ui/hosts/not-a-mac").status_code == 404
    assert client.get("/ui/hosts/not-a-mac/timeline.json").status_code == 404


# --- CSV import ---

def test_csv_with_bad_rows_shows_every_error_inline_and_imports_nothing(ui, store):
    client, csrf = ui
    add_host(store, mac="aa:bb:cc:dd:ee:05", name="existing")
    events_before = store.events()
    text = ("mac,name,pool,disk\n"
            "aabbccddee01,h1,p1,/dev/disk/by-id/a\n"
            "nonsense,h2,p1,\n"
            "aabbccddee03,h3,p1,sda\n"
            "aabbccddee05,h5,p1,\n")
    response = client.post("/ui/hosts/import", data={"csrf_token": csrf, "csv": (io.BytesIO(text.encode()), "h.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 422
    problems = re.findall(r"<li>line (\d+): ([^<]*)</li>", response.text)
    assert [line for line, _ in problems] == ["3", "4", "5"]
    assert "is not a MAC address" in problems[0][1] and "not a device path" in problems[1][1]
    assert "already registered" in problems[2][1]
    assert "Nothing imported: 3 problem(s)." in response.text
    assert [h.name for h in store.list_hosts()] == ["existing"] and store.events() == events_before


def test_csv_bad_header_and_encoding(ui, store):
    client, csrf = ui
    bad_header = client.post("/ui/hosts/import", data={"csrf_token": csrf, "csv_text": "mac,hostname\n1,2\n"})
    assert bad_header.status_code == 422 and "line 1: unknown column(s) hostname" in bad_header.text
    latin1 = client.post("/ui/hosts/import", data={"csrf_token": csrf, "csv": (io.BytesIO(b"mac,name,pool\n\xe9\n"),
                                                                                "h.csv")},
                         content_type="multipart/form-data")
    assert latin1.status_code == 400 and "not UTF-8" in latin1.text
    empty = client.post("/ui/hosts/import", data={"csrf_token": csrf, "csv_text": "  "})
    assert empty.status_code == 400 and "choose a CSV file" in empty.text
    assert store.list_hosts() == []


def test_csv_import_all_good(ui, store):
    client, csrf = ui
    text = "mac,name,pool,firmware\naabbccddee01,h1,p1,uefi\naabbccddee02,h2,p1,bios\n"
    response = client.post("/ui/hosts/import", data={"csrf_token": csrf, "csv_text": text}, follow_redirects=True)
    assert "Imported 2 host(s)." in response.text
    assert [(h.name, h.firmware) for h in store.list_hosts()] == [("h1", "uefi"), ("h2", "bios")]
    assert {e["details"]["source"] for e in store.events(kind="host.added")} == {"dashboard"}


def test_timeline_json_since(ui, store):
    client, _ = ui
    add_host(store)
    first = client.get(f"/ui/hosts/{MAC}/timeline.json").get_json()["events"]
    store.add_event("attempt.fetch", mac=MAC, details={"what": "config", "client": "10.1.2.3", "attempt": 4})
    new = client.get(f"/ui/hosts/{MAC}/timeline.json?since={first[-1]['id']}").get_json()["events"]
    assert [(e["kind"], e["client"], e["attempt"], e["summary"]) for e in new] == [
        ("attempt.fetch", "10.1.2.3", 4, "fetched config")]
    assert client.get(f"/ui/hosts/{MAC}/timeline.json?since=x").status_code == 400
