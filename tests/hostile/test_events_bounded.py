"""Issue 15 finding 4: every 404, unknown token or bad script stage wrote an events row (~1.3 GB per hour from one
client), and a full disk then broke boots. Now unauthenticated noise is sampled per kind and address (counts in
/metrics), retention (events_max_age_days, events_max_rows) is pruned by the event writer without touching an
active run's journal, and a write that fails on a full disk is dropped and counted, never a 500."""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import sqlite3

import pytest

from helpers import make_media_tree, parse, total
from hostile_http import ARMED, until
from provisioner import media
from provisioner.boot import attempts
from provisioner.eventwriter import EventWriter
from provisioner.model import Host

PER_KIND = 300  # requests of each noise kind, from 3 addresses


@pytest.fixture
def armed(config, store, tmp_path):
    media.import_media(store, config, "xs84", make_media_tree(tmp_path / "tree"))
    store.add_host(Host.from_fields({"mac": ARMED, "name": "victim", "pool": "p", "disk": "/dev/disk/by-id/d-1"}))
    return attempts.arm(store, config, ARMED, "xs84")


def _noise_urls(n: int) -> list[str]:
    token = secrets.token_urlsafe(24)
    return [f"/no/such/page/{n}", f"/boot/answerfile/{secrets.token_urlsafe(24)}",
            f"/boot/script/{token}/stage-{n}"]


def _rows(store, kind: str) -> list[dict]:
    return store.events(kind=kind, limit=1_000_000)


def test_unauthenticated_noise_is_counted_and_sampled(client, store, armed):
    for n in range(PER_KIND):
        for url in _noise_urls(n):
            assert client.get(url, environ_base={"REMOTE_ADDR": f"127.0.4.{1 + n % 3}"}).status_code < 500
    # A normal boot is unaffected: the armed host's iPXE script, with its token.
    ipxe = client.get(f"/boot/ipxe/{ARMED.replace(':', '-')}", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert ipxe.status_code == 200 and b"chain ${210:string}pxelinux.0" in ipxe.data  # BIOS: chains to pxelinux
    store.flush_sampled()
    for kind in ("http.not_found", "attempt.unknown_token", "boot.bad_script_stage"):
        rows = _rows(store, kind)
        assert len(rows) <= 3 * 25, kind  # was: one row per request
        stood_for = sum(r["details"]["count"] if r["details"].get("sampled") else 1 for r in rows)
        assert stood_for == PER_KIND, kind  # nothing is lost from the counts
        summaries = [r for r in rows if r["details"].get("sampled")]
        assert summaries and set(summaries[0]["details"]["clients"]) <= {"127.0.4.1", "127.0.4.2", "127.0.4.3"}
    samples = parse(client.get("/metrics").get_data(as_text=True))
    assert total(samples, "provisioner_events_sampled_total", event="http.not_found") >= PER_KIND - 3 * 20
    assert store.events(mac=ARMED, kind="attempt.fetch")  # the boot's own record is never sampled


def _seed(db_path, rows: list[tuple]) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events (ts, mac, run_id, kind, details) VALUES (?, ?, ?, ?, '{}')", rows)
    for run_id, state in (("run-active", "members"), ("run-done", "done")):
        conn.execute("INSERT INTO runs (id, pool, media, state, stop_on_failure, abort_requested, created_at, "
                     "updated_at) VALUES (?, 'p', 'xs84', ?, 0, 0, '2020-01-01', '2020-01-01')", (run_id, state))
    conn.execute("COMMIT")
    conn.close()


def _days_ago(days: float) -> str:
    return (_dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=days)).isoformat(timespec="milliseconds")


def _count(store, where: str = "1") -> int:
    return store._connect().execute(f"SELECT COUNT(*) FROM events WHERE {where}").fetchone()[0]


def test_retention_by_age_keeps_audit_longer_and_active_runs_always(config, store):
    old, ancient, recent = _days_ago(100), _days_ago(400), _days_ago(1)
    _seed(config.db_path,
          [(old, None, None, "http.not_found")] * 2000 + [(recent, None, None, "tftp.refused")] * 300
          + [(old, "52:54:00:00:00:09", None, "xapi.call")] * 50 + [(ancient, None, "run-done", "step.done")] * 40
          + [(ancient, None, "run-active", "prepare.intent")] * 30)
    deleted = store.prune_events(max_age_days=config.events_max_age_days, max_rows=config.events_max_rows)
    assert deleted == 2000 + 40
    assert _count(store, "kind = 'http.not_found'") == 0 and _count(store, "kind = 'tftp.refused'") == 300
    assert _count(store, "kind = 'xapi.call'") == 50  # audit: kept 4 x events_max_age_days
    assert _count(store, "run_id = 'run-active'") == 30  # the journal of a run that is not finished: never


def test_the_event_writer_prunes_to_events_max_rows_noise_first(config, store):
    recent = _days_ago(0.5)
    _seed(config.db_path, [(recent, None, None, "http.not_found")] * 3000 + [(recent, ARMED, None, "attempt.fetch")]
          * 200 + [(recent, None, "run-active", "vm.resident")] * 100)
    writer = EventWriter(store, max_age_days=90, max_rows=1_000, prune_seconds=0.05)
    try:
        assert until(lambda: _count(store) <= 1_000, 30)
    finally:
        writer.close()
    assert _count(store, "kind = 'attempt.fetch'") == 200 and _count(store, "run_id = 'run-active'") == 100
    assert 0 < _count(store, "kind = 'http.not_found'") <= 1_000 - 300


def test_a_full_disk_serves_what_it_can(client, store, armed):
    """SQLite's max_page_count makes this connection's database full, exactly as a full file system does
    (SQLITE_FULL, "database or disk is full"); the Flask test client runs in this thread, on this connection."""
    conn = store._connect()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}").fetchone()
    for n in range(200):  # noise that used to fill the disk: answered, its rows dropped and counted
        for url in _noise_urls(n):
            assert client.get(url, environ_base={"REMOTE_ADDR": f"127.0.3.{1 + n % 50}"}).status_code < 500
    ipxe = client.get(f"/boot/ipxe/{ARMED.replace(':', '-')}", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert ipxe.status_code == 200 and b"chain ${210:string}pxelinux.0" in ipxe.data  # BIOS: chains to pxelinux
    start = client.get(f"/boot/script/{armed.token}/installation-start", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert start.status_code == 200  # 15-A: the installer scripts always answer 200
    dropped = store.event_counters()["dropped"]
    assert dropped.get("http.not_found", 0) >= 1 and dropped.get("attempt.fetch", 0) >= 1
    conn.execute("PRAGMA max_page_count = 1073741823").fetchone()  # space again: writes work again
    client.get("/no/such/page/after", environ_base={"REMOTE_ADDR": "127.0.3.200"})
    assert json.dumps(_rows(store, "http.not_found")[-1]["details"]).count("/no/such/page/after") == 1
