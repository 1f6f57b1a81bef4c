"""Issue 15 finding 10: a disk path the answer-file validator refuses (é, U+FFFF, DEL, "/dev/") was accepted at
registration and arming; the host then booted the installer and got a 500 for its answer file. Now one rule
(model.disk_problem, which answerfile uses as is) is applied by every way in, and arming re-checks it."""

from __future__ import annotations

import pytest
from helpers import make_media_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner import media, model, registry
from provisioner.boot import answerfile, attempts
from provisioner.config import load_config
from provisioner.model import Host, ValidationError

MAC = "52:54:00:15:10:01"
BAD = ["/dev/disk/by-id/scsi-\u00e9", "/dev/disk/by-id/scsi-1\uffff", "/dev/disk/by-id/scsi-1\x7f", "/dev/",
       "/dev/disk/by-id/\ud800", "dev/sda", "/dev/../etc/passwd"]
GOOD = ["/dev/disk/by-id/scsi-3600508b1001c5e2e", "/dev/disk/by-id/nvme-eui.0025385b71b0e4a1",
        "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", "/dev/disk/by-id/ata-ST1000DM003-1CH162_Z1D5K3XX"]
STORABLE = [d for d in BAD if "\ud800" not in d]  # a lone surrogate cannot even be written as UTF-8
MEDIA = model.Media(name="xs84", path="/srv/xs84", product_name="XenServer", product_version="8.4.0",
                    platform_version="3.4.0", build="1")
RENDER_CONFIG = load_config(file=None, environ={}, overrides={"public_url": "http://192.0.2.1"})


def fields(disk: str) -> dict[str, str]:
    return {"mac": MAC, "name": "h1", "pool": "p", "disk": disk}


@pytest.mark.parametrize("disk", BAD)
def test_registration_refuses_what_the_answer_file_validator_refuses(store, disk):
    assert answerfile.disk_problem(disk) is not None
    with pytest.raises(ValidationError) as caught:
        registry.add_host(store, fields(disk))
    assert caught.value.field == "disk"
    registry.add_host(store, fields(GOOD[0]))
    with pytest.raises(ValidationError) as caught:
        registry.update_host(store, MAC, {"disk": disk})
    assert caught.value.field == "disk" and store.get_host(MAC).disk == GOOD[0]


@pytest.mark.parametrize("disk", GOOD)
def test_by_id_paths_are_registered_and_rendered(store, config, disk):
    host = registry.add_host(store, fields(disk))
    text = answerfile.render_upgrade(config, host, MEDIA, "t" * 32)
    assert answerfile.parse_upgrade(text, expected_disk=disk).disk == disk


@pytest.mark.parametrize("disk", STORABLE)
def test_csv_import_refuses_the_row_and_imports_nothing(store, disk):
    text = f"mac,name,pool,disk\n52:54:00:15:10:02,ok,p,{GOOD[0]}\n{MAC},h1,p,{disk}\n"
    with pytest.raises(registry.ImportRejected) as caught:
        registry.import_csv(store, text)
    assert [line for line, _ in caught.value.problems] == [3] and "disk" in caught.value.problems[0][1]
    assert store.list_hosts() == []


@pytest.mark.parametrize("disk", BAD)
def test_rest_refuses_with_400_naming_the_field(client, auth, store, disk):
    r = client.post("/api/v1/hosts", json=fields(disk), headers=auth)
    assert r.status_code == 400 and r.get_json()["field"] == "disk"
    assert client.post("/api/v1/hosts", json=fields(GOOD[0]), headers=auth).status_code == 201
    r = client.patch(f"/api/v1/hosts/{MAC}", json={"disk": disk}, headers=auth)
    assert r.status_code == 400 and r.get_json()["field"] == "disk"
    if disk in STORABLE:
        csv = f"mac,name,pool,disk\n52:54:00:15:10:03,h3,p,{disk}\n".encode()
        r = client.post("/api/v1/hosts/import", data=csv, headers={**auth, "Content-Type": "text/csv"})
        assert 400 <= r.status_code < 500 and "disk" in r.get_data(as_text=True)
    assert store.get_host(MAC).disk == GOOD[0] and len(store.list_hosts()) == 1


@pytest.mark.parametrize("disk", STORABLE)
def test_cli_refuses_with_a_one_line_error(run, disk):
    r = run("hosts", "add", MAC, "--name", "h1", "--pool", "p", "--disk", disk)
    assert r.exit_code == 1 and "disk:" in r.output and "Traceback" not in r.output
    assert run("hosts", "add", MAC, "--name", "h1", "--pool", "p", "--disk", GOOD[0]).exit_code == 0
    r = run("hosts", "update", MAC, "--disk", disk)
    assert r.exit_code == 1 and "disk:" in r.output


@pytest.mark.parametrize("disk", STORABLE)
def test_arming_rechecks_a_disk_stored_before_the_rule(store, config, client, auth, tmp_path, disk):
    """A row written by an older version (or by hand) is refused at arming, before any host reboots."""
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    store.add_host(Host.from_fields(fields(GOOD[0])))
    store._connect().execute("UPDATE hosts SET disk = ? WHERE mac = ?", (disk, MAC))  # bypass the rule
    with pytest.raises(ValidationError) as caught:
        attempts.arm(store, config, MAC, "xs84")
    assert caught.value.field == "disk" and "answer file would be refused" in str(caught.value)
    r = client.post(f"/api/v1/hosts/{MAC}/arm", json={"media": "xs84"}, headers=auth)
    assert r.status_code == 400 and r.get_json()["field"] == "disk"
    assert store.list_attempts() == []


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40).map(lambda s: "/dev/disk/by-id/" + s) | st.text(max_size=40))
def test_whatever_registration_accepts_renders(disk):
    """The one-rule property: a disk Host.from_fields accepts never makes the answer-file validator refuse."""
    try:
        host = Host.from_fields(fields(disk))
    except ValidationError:
        return
    if host.disk is not None:
        text = answerfile.render_upgrade(RENDER_CONFIG, host, MEDIA, "t" * 32)
        assert answerfile.parse_upgrade(text, expected_disk=host.disk).disk == host.disk
