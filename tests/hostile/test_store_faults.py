"""Issue 15 finding 11 (store part): a garbage, read-only or corrupt database gave tracebacks, a 0-byte database
was silently re-initialised empty, and two `serve` on one data dir both ran. Now: one line naming the file and
what to do, a 0-byte or foreign database is refused (and left as it was), and `serve` holds an flock on
data_dir/serve.lock, so a second one is refused naming the first one's PID."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.store import Store, StoreError


def _zero(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 400)


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.commit()
    conn.close()


def _corrupt(path: Path) -> None:
    store = Store(path)
    for n in range(300):
        store.add_event("schema.check", details={"n": n, "pad": "x" * 200})
    store.close()
    data = bytearray(path.read_bytes())
    data[100:8192] = bytes(range(256)) * 31 + bytes(range(156))  # the header's tail and the schema page
    path.write_bytes(bytes(data))


FAULTS = [  # (make the file, what the one line says)
    (_zero, "is empty (0 bytes)"),
    (_garbage, "is damaged or not a SQLite file"),
    (_foreign, "is not a provisioner database (tables: invoices)"),
    (_corrupt, "is damaged or not a SQLite file"),
]


@pytest.mark.parametrize("make, says", FAULTS, ids=[f[0].__name__.strip("_") for f in FAULTS])
def test_a_bad_database_is_refused_with_one_line_and_left_alone(tmp_path, make, says):
    data = tmp_path / "data"
    data.mkdir()
    db = data / "provisioner.db"
    make(db)
    before = db.read_bytes()
    with pytest.raises(StoreError) as info:
        Store(db)
    assert says in str(info.value) and str(db) in str(info.value) and "\n" not in str(info.value)
    result = CliRunner().invoke(main, ["hosts", "list"], env={"PROVISIONER_DATA_DIR": str(data),
                                                                "PROVISIONER_CONFIG": ""})
    assert result.exit_code == 1
    assert says in result.output and "Traceback" not in result.output
    assert db.read_bytes() == before  # never re-initialised, never "repaired"


def test_a_read_only_database_is_one_line(tmp_path):
    """Read-only for root too: the data dir is a tmpfs remounted read-only (file modes do not stop root);
    without root, file modes do it."""
    data = tmp_path / "data"
    data.mkdir()
    mounted = os.geteuid() == 0
    if mounted:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], check=True)
    try:
        Store(data / "provisioner.db").close()
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        else:
            for name in os.listdir(data):
                os.chmod(data / name, 0o444)
            os.chmod(data, 0o555)
        with pytest.raises(StoreError, match="cannot be written"):
            Store(data / "provisioner.db")
    finally:
        if mounted:
            subprocess.run(["umount", str(data)], check=True)
        else:
            os.chmod(data, 0o755)


def _serve(data: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PROVISIONER_DATA_DIR": str(data), "PROVISIONER_TFTP_ROOT": str(root),
           "PROVISIONER_BIND_ADDRESS": "127.0.0.1", "PROVISIONER_HTTP_PORT": "0", "PROVISIONER_TFTP_PORT": "0",
           "PROVISIONER_CONFIG": "", "PROVISIONER_ALLOW_ROOT": "1"}  # the tests run as root
    return subprocess.Popen([sys.executable, "-m", "provisioner", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_serve_on_one_data_dir_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    first = _serve(tmp_path / "data", root)
    try:
        assert "TFTP on udp" in first.stdout.readline()  # it is up, holding the lock
        second = _serve(tmp_path / "data", root)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1 and "Traceback" not in err
        assert f"PID {first.pid}" in err and str(tmp_path / "data") in err and len(err.strip().splitlines()) == 1
        elsewhere = _serve(tmp_path / "other", root)  # another data dir is another server: allowed
        try:
            assert "TFTP on udp" in elsewhere.stdout.readline()
        finally:
            elsewhere.terminate()
            elsewhere.communicate(timeout=30)
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert first.returncode == 0
    again = _serve(tmp_path / "data", root)  # the lock went with the process: the next serve starts
    try:
        assert "TFTP on udp" in again.stdout.readline()
    finally:
        again.terminate()
        again.communicate(timeout=30)
    shutil.rmtree(tmp_path / "other", ignore_errors=True)
