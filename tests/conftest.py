"""Shared fixtures: a fresh config, store and app per test (Flask tutorial pattern); the simulated labs the
coordinator, web and CLI tests run against (`lab`, `two_pools`: tests/support/labs.py)."""

from __future__ import annotations


import pytest

from provisioner.config import load_config
from provisioner.store import Store

from helpers import API_TOKEN
from pg_server import PgServer



@pytest.fixture
def config(tmp_path):
    """A Config isolated from the environment and the user's files, with its data dir under tmp_path."""
    return load_config(file=None, environ={}, overrides={
        "data_dir": tmp_path / "data", "api_token": API_TOKEN, "http_port": 0, "tftp_port": 0,
        "bind_address": "127.0.0.1",
    })


@pytest.fixture
def store(config):
    s = Store(config.db_path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL cluster for the session (tests/support/pg_server.py): initdb + pg_ctl in a temp dir."""
    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    """A fresh empty PostgreSQL database for this test; its postgresql:// URL."""
    return pg_server.create_database()


@pytest.fixture
def app(config, store):
    from provisioner import create_app

    return create_app(config, store=store)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth():
    return {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def lab_hosts():
    """How many hosts the `lab` pool has; a test module that needs another size overrides this fixture."""
    return 3


@pytest.fixture
def lab_speed():
    """How much faster than real time the `lab` world's clock runs; a module whose simulated windows must stay wide
    in real time (a loaded machine starves threads while simulated time runs on) overrides this fixture."""
    return 600.0


@pytest.fixture
def lab(tmp_path, lab_hosts, lab_speed):
    """One simulated pool, the boot service and PXE machines on loopback (labs.make_lab), stopped afterwards."""
    from labs import make_lab, stop_lab

    made = make_lab(tmp_path, hosts=lab_hosts, speed=lab_speed)
    yield made
    stop_lab(made)


@pytest.fixture
def two_pools(tmp_path):
    """Pools red and blue in one simulated world, the server's FlowService on its clock (labs.make_world)."""
    from labs import make_world, stop_world

    made = make_world(tmp_path, api_token=API_TOKEN)
    yield made
    stop_world(made)


@pytest.fixture
def run(tmp_path):
    """Invoke the `provisioner` CLI through click's runner with its own data dir (tests/test_cli*.py)."""
    from click.testing import CliRunner

    from provisioner.cli import main

    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": ""}

    def invoke(*args, input=None):
        return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)

    return invoke
