"""`provisioner db migrate` and `db copy`: a populated SQLite store moved to a real PostgreSQL, every row there."""

from __future__ import annotations

import json

import pytest

from provisioner import states
from provisioner.model import Host, Media, Pack
from provisioner.store import SCHEMA_VERSION, Store, UpdateRepo

HOSTS = 40


def populate(store: Store) -> None:
    """Rows in every table the store API writes: hosts, media, packs, attempts, pools, runs, run hosts,
    reinstalls, update repositories and events (with JSON details, NULLs, booleans and non-ASCII text)."""
    for i in range(HOSTS):
        store.add_host(Host.from_fields({"mac": f"52:54:00:00:01:{i:02x}", "name": f"host-{i}", "pool": "p1",
                                         "disk": "/dev/sda" if i % 2 else None, "notes": f"rack {i} — ß%?"}))
    store.add_media(Media(name="xs84", path="/srv/xs84", product_name="XenServer", product_version="8.4.0",
                          platform_version="3.4.0", build=None, boot_files=("boot/xen.gz", "install.img")))
    store.add_pack(Pack(media="xs84", name="drv", kind="driver", path="/srv/drv", label="drv-label", version="1.0",
                        hosts=("52:54:00:00:01:01",), details={"uuid": "u-1"}))
    for i in range(5):
        store.arm_attempt(f"52:54:00:00:01:{i:02x}", "xs84", f"token-{i}", max_runs=1)
    store.add_pool("p1", "https://10.0.0.1", "root", "fernet:v1:not-a-real-secret")
    hosts = [{"mac": f"52:54:00:00:01:{i:02x}", "name": f"host-{i}", "uuid": f"uuid-{i}",
              "role": "master" if i == 0 else "member"} for i in range(4)]
    store.create_run("run-1", "p1", "xs84", stop_on_failure=True, hosts=hosts)
    store.set_run_state("run-1", states.RUN_BLOCKED, reason="test")
    store.create_reinstall("52:54:00:00:01:20", "p1", "xs84", host_name="host-32", forget_first=True,
                           old_uuid="old", old_pool="p0", host_url="https://10.0.0.9", network={"ip": "10.0.0.9"},
                           root_password_hash="$6$salt$hash")
    store.add_update_repo(UpdateRepo(name="u1", kind="mirror", source="https://mirror/", url="https://mirror/",
                                     checked=False, details={"updates": [{"id": "XS8E001"}], "update_level": "x"}))
    for i in range(300):
        store.add_event("test.copy", mac="52:54:00:00:01:01", details={"n": i, "text": "ünïcode"})


def rows(store: Store) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, as plain tuples (what "every row there" compares)."""
    out = {}
    for table in store.tables():
        cols = ", ".join(store.columns(table))
        out[table] = sorted((tuple(r) for r in store._connect().execute(f"SELECT {cols} FROM {table}")), key=repr)
    return out


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "old" / "provisioner.db"
    store = Store(path)
    populate(store)
    store.close()
    return path


def test_copy_a_populated_sqlite_store_to_postgresql_every_row_there(run, source, pg_url, tmp_path):
    result = run("db", "copy", "--from", f"sqlite:{source}", "--to", pg_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and report["schema_version"] == SCHEMA_VERSION == report["migrated_to"]
    by_table = {t["table"]: t for t in report["tables"]}
    assert by_table["hosts"]["target_rows"] == HOSTS and by_table["events"]["target_rows"] > 300
    assert all(t["source_rows"] == t["target_rows"] and t["source_checksum"] == t["target_checksum"]
               for t in report["tables"])

    old, new = Store(source, migrate=False), Store(pg_url, data_dir=tmp_path)
    try:
        assert set(new.tables()) == set(old.tables())
        before, after = rows(old), rows(new)
        for table in before:  # every row, value for value (SQLite and PostgreSQL both give int / str / None)
            assert after[table] == before[table], table
        assert new.get_host("52:54:00:00:01:05") == old.get_host("52:54:00:00:01:05")
        assert new.get_run("run-1") == old.get_run("run-1")
        assert new.list_attempts() == old.list_attempts()
        assert new.get_update_repo("u1") == old.get_update_repo("u1")
        # the ids go on after the copied ones (identity sequences moved past them)
        last = new.last_event_id()
        new.add_event("test.after_copy")
        assert new.last_event_id() == last + 1
        armed = new.arm_attempt("52:54:00:00:01:10", "xs84", "token-new", max_runs=1)
        assert armed.id == max(a.id for a in old.list_attempts()) + 1
    finally:
        old.close()
        new.close()


def test_copy_refuses_a_target_that_is_not_empty_unless_replace(run, source, pg_url, tmp_path):
    assert run("db", "copy", "--from", f"sqlite:{source}", "--to", pg_url).exit_code == 0
    again = run("db", "copy", "--from", f"sqlite:{source}", "--to", pg_url)
    assert again.exit_code == 1 and "is not empty" in again.output and "--replace" in again.output
    replaced = run("db", "copy", "--from", f"sqlite:{source}", "--to", pg_url, "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert "every count and checksum matches" in replaced.output
    lines = {line.split()[0]: line.split() for line in replaced.output.splitlines()[1:-1]}
    assert lines["hosts"][1:3] == [str(HOSTS), str(HOSTS)]
    new = Store(pg_url, data_dir=tmp_path)
    try:
        assert len(new.list_hosts()) == HOSTS  # replaced, not doubled
    finally:
        new.close()


def test_copy_into_a_freshly_migrated_database_and_back_to_sqlite(run, source, pg_url, tmp_path):
    """A target made by `db migrate` (only its own schema rows) counts as empty; PostgreSQL -> SQLite works too."""
    fresh = Store(pg_url, data_dir=tmp_path)
    fresh.close()
    assert run("db", "copy", "--from", f"sqlite:{source}", "--to", pg_url).exit_code == 0
    back = tmp_path / "back" / "provisioner.db"
    result = run("db", "copy", "--from", pg_url, "--to", f"sqlite:{back}", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["ok"], result.output
    old, again = Store(source, migrate=False), Store(back)
    try:
        assert rows(again) == rows(old)
    finally:
        old.close()
        again.close()


def test_copy_names_a_wrong_database_argument(run, pg_url):
    result = run("db", "copy", "--from", "/var/lib/provisioner.db", "--to", pg_url)
    assert result.exit_code == 1 and "sqlite:PATH" in result.output


def test_migrate_applies_what_is_pending_and_says_so(run, tmp_path):
    old = Store(tmp_path / "data" / "provisioner.db", migrate=False)
    old.migrate(target=3)
    old.close()
    first = run("db", "migrate", "--json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["from"] == 3 and data["applied"] == list(range(4, SCHEMA_VERSION + 1)) and data["backend"] == "sqlite"
    second = run("db", "migrate")
    assert second.exit_code == 0 and "nothing to apply" in second.output


def test_migrate_a_postgresql_database_named_by_database_url(tmp_path, pg_url):
    from click.testing import CliRunner

    from provisioner.cli import main

    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": "",
           "PROVISIONER_DATABASE_URL": pg_url}
    result = CliRunner().invoke(main, ["db", "migrate", "--json"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["backend"], data["from"], data["applied"]) == ("postgresql", 0, list(range(1, SCHEMA_VERSION + 1)))
    assert not (tmp_path / "data" / "provisioner.db").exists()  # no SQLite file on the side
