"""CSV import (all or nothing, every bad row with its line) and host service calls."""

import pytest

from provisioner import registry
from provisioner.model import ValidationError
from provisioner.store import NotFoundError

GOOD = """mac,name,pool,disk,firmware,ip,notes
AA-BB-CC-DD-EE-01,h1,p1,/dev/disk/by-id/scsi-1,bios,10.0.0.1,rack 3
aabb.ccdd.ee02,h2,p1,,uefi,,
AABBCCDDEE03,h3,p2,/dev/sdb,,,"quoted, with comma"
"""


def test_import_good_file(store):
    hosts = registry.import_csv(store, GOOD)
    assert [h.mac for h in hosts] == ["aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:03"]
    assert store.get_host("aa:bb:cc:dd:ee:02").disk is None
    assert store.get_host("aa:bb:cc:dd:ee:03").notes == "quoted, with comma"
    assert all(e["details"]["source"] == "csv" for e in store.events(kind="host.added"))


def test_partially_bad_file_imports_nothing_and_reports_every_bad_line(store):
    text = """mac,name,pool,disk
aa:bb:cc:dd:ee:01,h1,p1,/dev/sda
not-a-mac,h2,p1,/dev/sda
aa:bb:cc:dd:ee:03,h3,p1,sda

aa:bb:cc:dd:ee:01,h4,p1,/dev/sda
aa:bb:cc:dd:ee:05,h1,p1,/dev/sda
aa:bb:cc:dd:ee:06,h6
"""
    with pytest.raises(registry.ImportRejected) as err:
        registry.import_csv(store, text)
    problems = dict(err.value.problems)
    assert sorted(problems) == [3, 4, 6, 7, 8]
    assert "not a MAC address" in problems[3]
    assert "device path" in problems[4]
    assert "already appears on line 2" in problems[6] and "already appears on line 2" in problems[7]
    assert "expected 4 fields" in problems[8]
    assert "line 3:" in str(err.value) and "nothing imported" in str(err.value)
    assert store.list_hosts() == [] and store.events(kind="host.added") == []


def test_clash_with_registry_is_reported_by_line(store):
    registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:03", "name": "old", "pool": "p9"})
    with pytest.raises(registry.ImportRejected) as err:
        registry.import_csv(store, GOOD)
    assert [line for line, _ in err.value.problems] == [4]
    assert [h.name for h in store.list_hosts()] == ["old"]


@pytest.mark.parametrize("text, expect", [
    ("", "empty"),
    ("mac,name\naa:bb:cc:dd:ee:01,h\n", "missing required column(s) pool"),
    ("mac,name,pool,colour\n", "unknown column(s) colour"),
    ("mac,name,pool,pool\n", "repeated column(s) pool"),
    ("mac,name,pool\n\n", "no host rows"),
])
def test_bad_headers(store, text, expect):
    with pytest.raises(registry.ImportRejected, match=expect.replace("(", r"\(").replace(")", r"\)")):
        registry.import_csv(store, text)


def test_bom_and_header_case(store):
    assert len(registry.import_csv(store, "\ufeffMAC,Name,Pool\naabbccddee01,h,p\n")) == 1


def test_service_calls(store):
    registry.add_host(store, {"mac": "AABBCCDDEE01", "name": "h", "pool": "p"})
    assert registry.get_host(store, "aa-bb-cc-dd-ee-01").name == "h"
    assert registry.update_host(store, "aabbccddee01", {"ip": "10.0.0.2"}).ip == "10.0.0.2"
    with pytest.raises(ValidationError, match="unknown field"):
        registry.update_host(store, "aabbccddee01", {"colour": "red"})
    registry.remove_host(store, "AABB.CCDD.EE01")
    with pytest.raises(NotFoundError, match="no host with MAC aa:bb:cc:dd:ee:01"):
        registry.get_host(store, "aabbccddee01")
