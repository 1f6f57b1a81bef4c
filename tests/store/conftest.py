"""Every store test runs on both backends: `backend` is sqlite or postgresql (a real server: tests/conftest.py)."""

from __future__ import annotations

import pytest

from provisioner.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def db_target(backend, tmp_path, request):
    """Where a test's database lives: a SQLite file path, or a fresh PostgreSQL database's URL."""
    if backend == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "db.sqlite"


@pytest.fixture
def config(config, backend, request):
    """The shared config, pointed at a fresh PostgreSQL database when the backend is postgresql."""
    if backend == "postgresql":
        return config.replace(database_url=request.getfixturevalue("pg_url"))
    return config


@pytest.fixture
def store(config):
    s = Store.from_config(config)
    yield s
    s.close()


@pytest.fixture
def open_store(db_target, tmp_path):
    """Open (another handle on) the test's database: open_store(migrate=True)."""
    handles = []

    def opener(**kwargs):
        s = Store(db_target, data_dir=tmp_path, **kwargs)
        handles.append(s)
        return s

    yield opener
    for s in handles:
        s.close()
