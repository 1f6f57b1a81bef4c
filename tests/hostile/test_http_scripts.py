"""Issue 15 finding 8: with the disk full the installation-start script answered 500, and a failed script GET
aborts the real installer (docs/installer.md "Scripts: the installer's only callbacks"). Now every installer script
answers 200 with a valid script whatever the store does; the write failure is logged.

How the disk is "full": the real SQLite, capped with `PRAGMA max_page_count` at its current size on the
connection the request uses (the Flask test client runs the view in this thread, and the store keeps one
connection per thread), then filled with event rows until SQLite itself raises
sqlite3.OperationalError("database or disk is full"), SQLITE_FULL, the error a full file system gives. A tiny
tmpfs was not used: SQLite's WAL file keeps its size across checkpoints, so small writes can still succeed on a
full file system, which would make the test pass for the wrong reason.
"""

from __future__ import annotations

import sqlite3

import pytest

from hostile_http import ARMED
from provisioner import media, states
from provisioner.boot import attempts
from provisioner.model import Host
from helpers import make_media_tree


@pytest.fixture
def full(store, config, tmp_path):
    """An armed host, then a store whose every write fails with SQLITE_FULL; yields the attempt."""
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    store.add_host(Host.from_fields({"mac": ARMED, "name": "victim", "pool": "p", "disk": "/dev/disk/by-id/d-1"}))
    attempt = attempts.arm(store, config, ARMED, "xs84")
    conn = store._connect()  # this thread's connection: the one the test client's requests use
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    # SQLite rolls a transaction back itself on SQLITE_FULL; the store's ROLLBACK then raises "cannot rollback
    # - no transaction is active" instead of the full-disk error (store/base.py _tx, reported to its owner).
    full_disk = "database or disk is full|cannot rollback"
    with pytest.raises(sqlite3.OperationalError, match=full_disk):
        for n in range(100_000):
            store.add_event("test.filler", details={"n": n})
    with pytest.raises(sqlite3.OperationalError, match=full_disk):
        store.add_event("test.filler", details={"n": -1})
    return attempt


STAGES = [
    ("installation-start", "exit 0"),
    ("installation-complete", "urlopen"),  # a read still works: the result can still be reported
    ("filesystem-populated", "exit 0"),  # an unknown stage (it writes a boot.bad_script_stage event)
]


@pytest.mark.parametrize("stage,marker", STAGES)
def test_scripts_answer_200_with_a_valid_script_on_a_full_store(client, full, stage, marker):
    response = client.get(f"/boot/script/{full.token}/{stage}")
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and text.startswith("#!/bin/sh\n") and marker in text
    assert text.rstrip().endswith("exit 0")


def test_unknown_token_on_a_full_store_is_a_noop_script(client, full):
    response = client.get("/boot/script/" + "x" * 32 + "/installation-start")
    assert response.status_code == 200 and response.get_data(as_text=True).startswith("#!/bin/sh\n")


def test_the_same_fetch_records_the_start_once_the_store_has_room(client, store, full):
    """Nothing was half-written while the store was full; with room again the start closes the window."""
    assert client.get(f"/boot/script/{full.token}/installation-start").status_code == 200
    assert attempts.attempt_by_token(store, full.token).state == states.ARMED
    store._connect().execute("PRAGMA max_page_count = 1073741823")
    assert client.get(f"/boot/ipxe/{ARMED.replace(':', '-')}").status_code == 200  # the host boots (again)
    assert client.get(f"/boot/script/{full.token}/installation-start").status_code == 200
    assert attempts.attempt_by_token(store, full.token).state == states.STARTED
