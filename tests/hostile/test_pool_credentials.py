"""Issue 15 finding 9: a pool URL with embedded credentials (https://root:PW@host) was stored and returned in
clear (pools table, `pool.added` event, GET /api/v1/pools, /api/v1/events, the CLI's echo). Now refused with the
field named, by the one check every way in goes through (coordinator.pools.check_url); the error never echoes it."""

from __future__ import annotations

import pytest

from provisioner.coordinator import pools
from provisioner.model import ValidationError
from provisioner.store import Store

PW = "S3cr3t-pw"
WITH_CREDENTIALS = [f"https://root:{PW}@10.0.0.10", f"http://root:{PW}@10.0.0.10:80/", f"https://:{PW}@master",
                    f"https://root:{PW}@[2001:db8::1]:443", f"https://{PW}@10.0.0.10", "https://root@10.0.0.10"]
VALID = ["https://10.0.0.10", "http://127.0.0.1:8080", "https://[2001:db8::1]", "https://master.example/"]


def dumped(store) -> str:
    """Everything the store holds that the API, the dashboard or a backup would show."""
    return repr([p.__dict__ for p in store.list_pools()]) + repr(store.events())


@pytest.mark.parametrize("url", WITH_CREDENTIALS)
def test_service_refuses_and_stores_nothing(store, url):
    with pytest.raises(ValidationError) as caught:
        pools.add_pool(store, "lab", url, "root", "pw")
    assert caught.value.field == "url" and "password file" in str(caught.value) and PW not in str(caught.value)
    assert store.list_pools() == [] and PW not in dumped(store)


@pytest.mark.parametrize("url", VALID)
def test_plain_urls_are_still_accepted(store, url):
    pin = {"fingerprint": "ab" * 32} if url.startswith("https") else {}
    assert pools.add_pool(store, "lab", url, "root", "pw", **pin).url == url


@pytest.mark.parametrize("url", ["ftp://10.0.0.10", "10.0.0.10", "https://", "https://[::1", 42])
def test_other_bad_urls_name_the_field(store, url):
    with pytest.raises(ValidationError) as caught:
        pools.add_pool(store, "lab", url, "root", "pw")
    assert caught.value.field == "url"


@pytest.mark.parametrize("url", WITH_CREDENTIALS)
def test_rest_answers_400_and_shows_it_nowhere(client, auth, store, url):
    r = client.post("/api/v1/pools", json={"name": "lab", "url": url, "password": "pw"}, headers=auth)
    assert r.status_code == 400 and r.get_json()["field"] == "url" and PW not in r.get_data(as_text=True)
    for path in ("/api/v1/pools", "/api/v1/events"):
        answer = client.get(path, headers=auth)
        assert answer.status_code == 200 and PW not in answer.get_data(as_text=True)
    assert store.list_pools() == []


@pytest.mark.parametrize("url", WITH_CREDENTIALS)
def test_cli_refuses_with_a_one_line_error_and_no_echo(run, tmp_path, url):
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    r = run("pools", "add", "lab", "--url", url, "--password-file", str(secret))
    assert r.exit_code == 1 and "url:" in r.output and "--password-file" in r.output
    assert PW not in r.output and "added pool" not in r.output
    store = Store(tmp_path / "data" / "provisioner.db")  # the `run` fixture's data dir
    try:
        assert store.list_pools() == [] and PW not in dumped(store)
    finally:
        store.close()
