"""The dashboard shows each host's wave for a --parallel run (docs/waves.md), and no wave column otherwise."""

from __future__ import annotations

import pytest
from ui_helpers import MAC, POOL_PASSWORD, add_host, add_media, log_in, run_of

from provisioner.coordinator import journal


@pytest.fixture
def ui(client):
    return client, log_in(client)


def test_the_run_table_shows_the_wave_of_each_host(ui, store, tmp_path):
    client, _ = ui
    add_host(store)
    add_media(store, tmp_path)
    store.add_pool("p1", "https://10.0.0.10", "root", POOL_PASSWORD)
    run = run_of(store)
    page = client.get("/ui/").text
    assert 'data-field="wave"' not in page and "<th>Wave</th>" not in page  # one host at a time: no column
    journal.write(store, run.id, journal.WAVES, parallel="auto", max_failures=None, notes=[],
                  waves=[{"number": 0, "hosts": ["h1"], "macs": [MAC], "why": "the master always goes alone, first"}])
    page = client.get("/ui/").text
    assert "<th>Wave</th>" in page and '<td data-field="wave"' in page and ">0</td>" in page
    status = client.get("/ui/status.json").get_json()
    hosts = next(p for p in status["pools"] if p["name"] == "p1")["run"]["hosts"]
    assert [h["wave"] for h in hosts] == [0]
