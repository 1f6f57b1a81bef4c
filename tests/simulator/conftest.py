"""Fixtures the simulated-machine tests share."""

import pytest
from sim_helpers import sim_server


@pytest.fixture
def server(tmp_path):
    config, store, runtime = sim_server(tmp_path)
    yield config, store, runtime
    runtime.stop()
    store.close()
