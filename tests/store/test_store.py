"""Store: migrations from old files, uniqueness, events in the same transaction, concurrent writers."""

import threading

import pytest

from provisioner.model import Host, Media
from provisioner.store import MIGRATIONS, SCHEMA_VERSION, ConflictError, NotFoundError, Store, StoreError
from provisioner.store.errors import INTEGRITY_ERRORS


def host(mac="aa:bb:cc:dd:ee:01", name="h1", pool="p1", **kw):
    return Host.from_fields({"mac": mac, "name": name, "pool": pool, **kw})


def test_fresh_database_is_current_and_in_wal(open_store, backend):
    store = open_store()
    assert store.schema_version() == SCHEMA_VERSION
    if backend == "sqlite":
        mode = store._connect().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    else:  # PostgreSQL: every table the migrations create is there, identities included
        assert {"hosts", "events", "attempts", "runs", "schema_version"} <= set(store.tables())
        assert store._connect().identity_columns("events") == ["id"]
    assert [e["kind"] for e in store.events()] == ["schema.migrated"] * SCHEMA_VERSION


def test_migrates_an_old_database_file_keeping_data(open_store):
    old = open_store(migrate=False)
    old.migrate(target=1)  # a database written by the first release
    raw = old._connect()  # its host row, as the first release wrote it (today's add_host has more columns)
    raw.execute("INSERT INTO hosts (mac, name, pool, disk, firmware, ip, notes, created_at, updated_at) "
                "VALUES ('aa:bb:cc:dd:ee:01', 'h1', 'p1', NULL, 'bios', NULL, '', 'x', 'x')")
    assert raw.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    assert "media" not in old.tables()
    old.close()

    store = open_store()
    assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    assert store.get_host("aa:bb:cc:dd:ee:01") == host()
    assert store.list_media() == []  # the new table exists
    migrated = [e["details"]["version"] for e in store.events(kind="schema.migrated")]
    assert migrated == list(range(1, SCHEMA_VERSION + 1))
    # opening again is a no-op
    open_store().close()
    assert len(store.events(kind="schema.migrated")) == SCHEMA_VERSION


def test_refuses_a_newer_database(open_store):
    store = open_store()
    store._connect().execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 5,))
    store.close()
    with pytest.raises(StoreError, match="newer than this program"):
        open_store()


def test_host_crud_and_events(store):
    store.add_host(host())
    with pytest.raises(ConflictError, match="already registered"):
        store.add_host(host(name="other"))
    with pytest.raises(ConflictError, match="already has a host named 'h1'"):
        store.add_host(host(mac="aa:bb:cc:dd:ee:02"))
    store.add_host(host(mac="aa:bb:cc:dd:ee:02", pool="p2"))  # same name, other pool: fine
    assert [h.pool for h in store.list_hosts()] == ["p1", "p2"]
    assert [h.mac for h in store.list_hosts(pool="p2")] == ["aa:bb:cc:dd:ee:02"]

    updated = store.update_host("aa:bb:cc:dd:ee:01", {"disk": "/dev/sdb"})
    assert updated.disk == "/dev/sdb" and store.get_host("aa:bb:cc:dd:ee:01").disk == "/dev/sdb"
    with pytest.raises(ConflictError):
        store.update_host("aa:bb:cc:dd:ee:02", {"pool": "p1"})
    with pytest.raises(NotFoundError):
        store.update_host("aa:bb:cc:dd:ee:09", {"disk": "/dev/sdb"})
    store.remove_host("aa:bb:cc:dd:ee:01")
    assert store.get_host("aa:bb:cc:dd:ee:01") is None
    kinds = [e["kind"] for e in store.events(mac="aa:bb:cc:dd:ee:01")]
    assert kinds == ["host.added", "host.updated", "host.removed"]
    assert store.events(mac="aa:bb:cc:dd:ee:01", kind="host.updated")[0]["details"] == {"disk": [None, "/dev/sdb"]}


def test_add_hosts_is_all_or_nothing(store):
    store.add_host(host(mac="aa:bb:cc:dd:ee:05", name="taken"))
    batch = [host(mac="aa:bb:cc:dd:ee:01", name="a"), host(mac="aa:bb:cc:dd:ee:05", name="b")]
    with pytest.raises(ConflictError):
        store.add_hosts(batch)
    assert [h.name for h in store.list_hosts()] == ["taken"]
    assert store.events(kind="host.added")[-1]["mac"] == "aa:bb:cc:dd:ee:05"


def test_mac_cannot_change(store):
    store.add_host(host())
    assert store.update_host("aa:bb:cc:dd:ee:01", {"mac": "AA-BB-CC-DD-EE-01", "notes": "x"}).notes == "x"
    with pytest.raises(ValueError, match="cannot be changed"):
        store.update_host("aa:bb:cc:dd:ee:01", {"mac": "aa:bb:cc:dd:ee:02"})


def test_media_rows(store):
    media = Media("xs84", "/srv/xs84", "XenServer", "8.4.0", "3.4.0", "123", ("boot/xen.gz",))
    store.add_media(media)
    got = store.get_media("xs84")
    assert got.boot_files == ("boot/xen.gz",) and got.added_at
    with pytest.raises(ConflictError):
        store.add_media(media)
    assert [m.name for m in store.list_media()] == ["xs84"]
    store.remove_media("xs84")
    assert store.get_media("xs84") is None


def test_concurrent_writers_lose_no_update(open_store):
    """Threads (and separate Store handles, as separate processes would be) doing read-modify-write."""
    open_store().add_host(host())
    threads_n, rounds = 8, 40
    errors = []

    def worker(i):
        local = open_store() if i % 2 else shared
        try:
            for _ in range(rounds):
                local.update_host("aa:bb:cc:dd:ee:01", lambda h: {"notes": h.notes + str(i)})
                local.add_event("test.tick", details={"thread": i})
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    shared = open_store()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    notes = open_store().get_host("aa:bb:cc:dd:ee:01").notes
    assert len(notes) == threads_n * rounds
    for i in range(threads_n):  # threads_n < 10: each thread's digit is its own
        assert notes.count(str(i)) == rounds
    assert len(open_store().events(kind="test.tick", limit=10_000)) == threads_n * rounds
    assert len(open_store().events(kind="host.updated", limit=10_000)) == threads_n * rounds


def test_one_active_run_per_pool_is_enforced_by_the_database_in_every_active_state(store):
    """The code checks too, but two processes racing past that check must still meet the unique index."""
    from provisioner import states

    host = {"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "uuid": "u1", "role": "master"}
    store.create_run("r1", "p", "xs84", stop_on_failure=False, hosts=[host])
    active = [s for s in states.RUN_STATES if s not in states.RUN_TERMINAL]
    other = Store(store.url or store.path, migrate=False)
    raw = other._connect()  # another connection, past the store's code and its checks
    for state in active:
        raw.execute("UPDATE runs SET state = ? WHERE id = 'r1'", (state,))
        with pytest.raises(INTEGRITY_ERRORS):
            raw.execute("INSERT INTO runs (id, pool, media, state, stop_on_failure, abort_requested, created_at, "
                        "updated_at) VALUES ('r2', 'p', 'xs84', 'precheck', 0, 0, 'now', 'now')")
    raw.execute("UPDATE runs SET state = 'done' WHERE id = 'r1'")
    raw.execute("INSERT INTO runs (id, pool, media, state, stop_on_failure, abort_requested, created_at, "
                "updated_at) VALUES ('r2', 'p', 'xs84', 'precheck', 0, 0, 'now', 'now')")
    other.close()


def test_host_steps_stored_as_installing_resume_as_wait_down(open_store):
    """Schema 8 renamed the step that waits for the reboot ("installing" -> "wait_down"): a run in progress and a
    failed host's "<step>: <why>" reason written before it read back with the new name, and the run goes on."""
    from provisioner import states

    old = open_store(migrate=False)
    old.migrate(target=7)
    hosts = [{"mac": f"aa:bb:cc:dd:ee:0{i}", "name": f"h{i}", "uuid": f"u{i}", "role": "member"} for i in (1, 2)]
    old.create_run("r1", "p", "xs84", stop_on_failure=False, hosts=hosts)
    raw = old._connect()
    raw.execute("UPDATE run_hosts SET step = 'installing' WHERE mac = 'aa:bb:cc:dd:ee:01'")
    raw.execute("UPDATE run_hosts SET step = 'failed', reason = 'installing: not done after 15 min' "
                "WHERE mac = 'aa:bb:cc:dd:ee:02'")
    old.close()

    store = open_store()
    waiting, failed = store.run_hosts("r1")
    assert waiting.step == states.STEP_WAIT_DOWN
    assert (failed.step, failed.reason) == (states.STEP_FAILED, "wait_down: not done after 15 min")
    assert store.set_host_step("r1", waiting.mac, states.STEP_WAIT_UP).step == states.STEP_WAIT_UP
