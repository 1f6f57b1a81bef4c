"""Dashboard helpers shared by the test_web_ui*.py modules: logging a Flask test client in (with its CSRF token),
and what the pages show: a host, a media, a run in progress, and the pool passwords that must never show."""

from __future__ import annotations

import re

from helpers import API_TOKEN
from provisioner import states
from provisioner.model import Host, Media

MAC = "aa:bb:cc:dd:ee:01"
POOL_PASSWORD = "pool-password-never-shown"
URL_PASSWORD = "url-password-never-shown"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def log_in(client) -> str:
    """Log in with the API token; the CSRF token of the new session."""
    response = client.post("/ui/login", data={"token": API_TOKEN, "csrf_token": csrf_of(client.get("/ui/login").text)})
    assert response.status_code == 303
    return csrf_of(client.get("/ui/hosts").text)


def add_host(store, mac=MAC, name="h1", pool="p1", **extra) -> Host:
    return store.add_host(Host.from_fields({"mac": mac, "name": name, "pool": pool, **extra}))


def add_media(store, tmp_path, name="xs84") -> Media:
    return store.add_media(Media(name=name, path=str(tmp_path / name), product_name="XenServer",
                                 product_version="8.4.0", platform_version="3.4.0", build="b1", boot_files=("bios",)))


def run_of(store, pool="p1", mac=MAC, name="h1"):
    run = store.create_run(f"{pool}-0001", pool, "xs84", stop_on_failure=False,
                           hosts=[{"mac": mac, "name": name, "uuid": "uuid-1", "role": "master"}])
    store.set_host_step(run.id, mac, states.STEP_CHECK)
    store.set_host_step(run.id, mac, states.STEP_DISABLE)
    return run
