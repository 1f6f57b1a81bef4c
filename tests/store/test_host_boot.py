"""Store: schema 9 (boot MAC, multipath, boot method, BMC per host; a pool's default boot method), the BMC
password encrypted at rest, and the lookup by boot MAC."""

import pytest

from provisioner import registry
from provisioner.coordinator import pools
from provisioner.model import Host, ValidationError
from provisioner.store import SCHEMA_VERSION, ConflictError, Store

PASSWORD = "Bmc-Pa55word-xyzzy"


def _bmc(store, mac="aa:bb:cc:dd:ee:01", **kw):
    return registry.set_bmc(store, mac, kind=kw.pop("kind", "redfish"), address=kw.pop("address", "https://bmc1:443"),
                            username="admin", password=kw.pop("password", PASSWORD), **kw)


def test_schema_9_migrates_a_schema_8_database_keeping_hosts_and_pools(open_store):
    old = open_store(migrate=False)
    old.migrate(target=8)
    raw = old._connect()
    raw.execute("INSERT INTO hosts (mac, name, pool, disk, firmware, ip, notes, created_at, updated_at) "
                "VALUES ('aa:bb:cc:dd:ee:01', 'h1', 'p1', NULL, 'uefi', NULL, '', 'x', 'x')")
    raw.execute("INSERT INTO pools (name, url, username, password, created_at, updated_at) "
                "VALUES ('p1', 'https://m', 'root', 'fernet:v1:x', 'x', 'x')")
    old.close()

    store = open_store()
    assert SCHEMA_VERSION >= 9 and store.schema_version() == SCHEMA_VERSION
    found = store.get_host("aa:bb:cc:dd:ee:01")
    assert found == Host(mac="aa:bb:cc:dd:ee:01", name="h1", pool="p1", firmware="uefi")
    assert (found.boot_mac, found.multipath, found.boot_method, found.bmc_kind, found.bmc_password_set) == (
        None, False, None, None, False)
    assert store.get_pool("p1").boot_method == "network-first"


def test_round_trip_of_every_new_field(store):
    registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1", "boot_mac": "AA-BB-CC-DD-EE-99",
                              "multipath": "yes"})
    _bmc(store, system_id="System.Embedded.1")
    registry.set_boot_method(store, "aa:bb:cc:dd:ee:01", "redfish")
    store.close()
    again = store.get_host("aa:bb:cc:dd:ee:01")
    assert again.as_dict() == {
        "mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1", "disk": None, "firmware": "bios", "ip": None,
        "notes": "", "boot_mac": "aa:bb:cc:dd:ee:99", "multipath": True, "boot_method": "redfish",
        "bmc_kind": "redfish", "bmc_address": "https://bmc1:443", "bmc_username": "admin",
        "bmc_system_id": "System.Embedded.1", "bmc_password_set": True, "site": None}
    assert registry.bmc_password(store, "aa:bb:cc:dd:ee:01") == PASSWORD
    # an unrelated change keeps the password
    assert registry.update_host(store, "aa:bb:cc:dd:ee:01", {"notes": "rack 4"}).bmc_password_set
    assert registry.bmc_password(store, "aa:bb:cc:dd:ee:01") == PASSWORD


def test_bmc_password_is_encrypted_in_the_database_file_and_never_in_events(store):
    store.add_host(Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1"}))
    _bmc(store)
    _bmc(store, password=PASSWORD + "-2")  # replaced: an event says so, without either value
    if store.path is not None:  # SQLite: the file and its WAL
        store._connect().execute("PRAGMA wal_checkpoint(FULL)")
        for name in ("db.sqlite", "db.sqlite-wal"):
            path = store.path.with_name(store.path.name + name.removeprefix("db.sqlite"))
            if path.exists():
                assert PASSWORD.encode() not in path.read_bytes()
    for table in store.tables():  # either backend: no row of any table holds it
        rows = store._connect().execute(f"SELECT * FROM {table}").fetchall()
        assert PASSWORD not in repr([tuple(r) for r in rows])
    stored = store._connect().execute("SELECT bmc_password FROM hosts").fetchone()[0]
    assert stored.startswith("fernet:v1:")
    text = repr(store.events())
    assert PASSWORD not in text and "fernet:v1:" not in text
    assert {"bmc_password": "changed"}.items() <= store.events(kind="host.updated")[-1]["details"].items()


def test_clearing_the_bmc_drops_its_password_and_is_refused_while_the_boot_method_needs_it(store):
    store.add_host(Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1"}))
    _bmc(store, kind="ipmi", address="10.0.0.5:623")
    registry.set_boot_method(store, "aa:bb:cc:dd:ee:01", "ipmi")
    with pytest.raises(ValidationError, match="boot method is ipmi"):
        registry.clear_bmc(store, "aa:bb:cc:dd:ee:01")
    with pytest.raises(ValidationError, match="redfish needs a redfish BMC"):
        registry.set_boot_method(store, "aa:bb:cc:dd:ee:01", "redfish")
    registry.set_boot_method(store, "aa:bb:cc:dd:ee:01", None)
    cleared = registry.clear_bmc(store, "aa:bb:cc:dd:ee:01")
    assert (cleared.bmc_kind, cleared.bmc_address, cleared.bmc_password_set) == (None, None, False)
    assert store.bmc_password("aa:bb:cc:dd:ee:01") is None


def test_boot_mac_is_unique_across_both_columns_and_found_by_host_for_boot(store):
    registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1", "boot_mac": "aa:bb:cc:dd:ee:99"})
    with pytest.raises(ConflictError, match="already the boot MAC of host aa:bb:cc:dd:ee:01"):
        registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:99", "name": "h2", "pool": "p1"})
    with pytest.raises(ConflictError, match="already the boot MAC"):
        registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:02", "name": "h2", "pool": "p1",
                                  "boot_mac": "aa:bb:cc:dd:ee:99"})
    registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:02", "name": "h2", "pool": "p1"})
    with pytest.raises(ConflictError, match="already the MAC of host aa:bb:cc:dd:ee:01"):
        registry.update_host(store, "aa:bb:cc:dd:ee:02", {"boot_mac": "aa:bb:cc:dd:ee:01"})
    assert store.host_for_boot("aa:bb:cc:dd:ee:99").mac == "aa:bb:cc:dd:ee:01"
    assert store.host_for_boot("aa:bb:cc:dd:ee:01").mac == "aa:bb:cc:dd:ee:01"
    assert store.host_for_boot("aa:bb:cc:dd:ee:77") is None
    # a boot MAC equal to the host's own MAC is no separate boot NIC
    assert registry.update_host(store, "aa:bb:cc:dd:ee:02", {"boot_mac": "aa:bb:cc:dd:ee:02"}).boot_mac is None


def test_pool_default_boot_method(store):
    pools.add_pool(store, "p1", "https://master", "root", "pw", fingerprint="ab" * 32)
    assert store.get_pool("p1").boot_method == "network-first"
    assert pools.set_boot_method(store, "p1", "host-plugin").boot_method == "host-plugin"
    pools.add_pool(store, "p1", "https://master2", "root", "pw", fingerprint="ab" * 32)  # re-adding keeps it
    assert store.get_pool("p1").boot_method == "host-plugin"
    with pytest.raises(ValidationError, match="'pxe' is not one of network-first, redfish, ipmi, host-plugin"):
        pools.set_boot_method(store, "p1", "pxe")
    assert "boot_method" in store.get_pool("p1").as_dict() and "password" not in store.get_pool("p1").as_dict()


def test_the_boot_method_that_applies_is_the_hosts_else_its_pools(store):
    host = registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p1"})
    assert registry.boot_method_of(store, host) == "network-first"  # pool not registered
    pools.add_pool(store, "p1", "https://master", "root", "pw", fingerprint="ab" * 32)
    pools.set_boot_method(store, "p1", "host-plugin")
    assert registry.boot_method_of(store, host) == "host-plugin"
    assert registry.boot_method_of(store, registry.set_boot_method(store, host.mac, "network-first")) == "network-first"
