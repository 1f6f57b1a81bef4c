"""Pool credentials at rest: encrypted in the store, never in the DB file, a repr, a log line or an API answer."""

from __future__ import annotations

import logging
import shutil

import pytest

from provisioner import credentials
from provisioner.coordinator import pools
from provisioner.model import ValidationError
from provisioner.simulator.builder import start_simulator
from provisioner.store import NotFoundError, Store

PASSWORD = "Tr0ub4dor-and-3"
PIN = "ab" * 32  # a fingerprint for pools that are never connected to


@pytest.fixture
def sim():
    handle = start_simulator(hosts=2, speed=600, password=PASSWORD, pool_name="lab")
    yield handle
    handle.stop()


def db_bytes(store: Store) -> bytes:
    return b"".join(p.read_bytes() for p in store.path.parent.glob(store.path.name + "*"))


def test_password_encrypted_in_db_and_logs_in_with_it(store, sim, caplog):
    with caplog.at_level(logging.DEBUG):
        record = pools.add_pool(store, "lab", sim.master_url(), "root", PASSWORD,
                                fingerprint=sim.master_fingerprint())
        driver = pools.connect(store, "lab", timeout=5)
        found = pools.discover(store, "lab", driver)
        driver.close()
    assert sorted(found.added) == ["lab-host0", "lab-host1"]  # the real XenAPI login used the decrypted password
    assert credentials.is_encrypted(store.get_pool("lab").password)
    assert PASSWORD.encode() not in db_bytes(store)
    assert PASSWORD not in repr(record) and PASSWORD not in str(record.as_dict()) and PASSWORD not in repr(driver)
    assert not [e for e in store.events() if PASSWORD in str(e)]
    assert PASSWORD not in caplog.text
    key = credentials.key_path(store.path.parent)
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600


def test_db_copied_without_the_key_file_reveals_nothing(store, tmp_path):
    pools.add_pool(store, "lab", "https://10.0.0.10", "root", PASSWORD, fingerprint=PIN)
    store.close()
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    for f in store.path.parent.glob(store.path.name + "*"):
        shutil.copy(f, elsewhere / f.name)
    copy = Store(elsewhere / store.path.name)
    try:
        assert copy.get_pool("lab").url == "https://10.0.0.10"
        with pytest.raises(credentials.SecretError, match="key file .* is missing"):
            pools.connect(copy, "lab")
        assert PASSWORD.encode() not in db_bytes(copy)
    finally:
        copy.close()


def test_plain_text_row_of_an_older_version_is_read_then_encrypted(store, sim):
    store.add_pool("lab", sim.master_url(), "root", PASSWORD, tls_fingerprint=sim.master_fingerprint())  # what the store held before encryption at rest
    assert pools.pool_password(store, "lab") == PASSWORD
    stored = store.get_pool("lab").password
    assert credentials.is_encrypted(stored) and PASSWORD not in stored
    assert store.events(kind="pool.password_encrypted")[0]["details"] == {"pool": "lab"}
    driver = pools.connect(store, "lab", timeout=5)
    assert len(driver.hosts()) == 2
    driver.close()
    assert len(store.events(kind="pool.password_encrypted")) == 1  # migrated once


def test_api_answers_never_carry_the_password(client, auth, store):
    added = client.post("/api/v1/pools", json={"name": "lab", "url": "https://127.0.0.1:9", "username": "root",
                                               "password": PASSWORD, "fingerprint": PIN}, headers=auth)
    assert added.status_code == 201
    for answer in (added, client.get("/api/v1/pools", headers=auth), client.get("/api/v1/events", headers=auth)):
        assert PASSWORD not in answer.get_data(as_text=True)
    assert pools.pool_password(store, "lab") == PASSWORD


def test_add_pool_checks(store):
    with pytest.raises(ValidationError, match="http"):
        pools.add_pool(store, "lab", "10.0.0.10", "root", PASSWORD)
    with pytest.raises(ValidationError, match="required"):
        pools.add_pool(store, "lab", "https://10.0.0.10", "root", "", fingerprint=PIN)
    with pytest.raises(NotFoundError, match="pools add"):
        pools.connect(store, "nope")
