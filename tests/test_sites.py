"""Sites (issue 22) with real components: two servers (each a Runtime: its TFTP server, its HTTP server on its own
Flask app, its own store handle, as two `serve` processes) of different sites on one real PostgreSQL.

A host of site b whose TFTP and answer-file requests reach server a gets b's URLs; media imported on a is fetched by
b over HTTP into b's own data dir, checked, recorded and served from there; what one server records shows on the
other's dashboard and /metrics; a plan refuses a host whose site has no ready copy of the media.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from pathlib import Path

import pytest
from helpers import API_TOKEN
from hostile_http import tftp_get
from pack_trees import make_pack_tree
from sim_helpers import until
from ui_helpers import log_in

from provisioner import create_app, media, mediasync, packs, registry, sites
from provisioner.boot import attempts
from provisioner.coordinator import prechecks_media
from provisioner.coordinator.plan import Plan, PlannedHost
from provisioner.demo import demo_config, synthetic_media_tree
from provisioner.runtime import Runtime
from provisioner.store import Store

MEDIA = "xs84"
HOST_A, HOST_B = "aa:bb:cc:00:00:0a", "aa:bb:cc:00:00:0b"
DISK = "/dev/disk/by-id/scsi-sites"


def _until(what: str, check, seconds: float = 60.0):
    return until(what, check, seconds, interval=0.2)


@pytest.fixture
def two_sites(tmp_path, pg_url):
    """Server a (site "a") with media imported, then server b (site "b"), both on one PostgreSQL database."""
    configs, stores, runtimes = {}, {}, {}
    for name in ("a", "b"):
        configs[name] = demo_config(tmp_path / name).replace(site=name, database_url=pg_url, api_token=API_TOKEN)
        stores[name] = Store.from_config(configs[name])
    media.import_media(stores["a"], configs["a"], MEDIA, synthetic_media_tree(tmp_path / "tree"))
    try:
        for name in ("a", "b"):  # a registers before b looks for media it lacks
            runtimes[name] = Runtime(configs[name], stores[name]).start()
        yield configs, stores, runtimes
    finally:
        for runtime in runtimes.values():
            runtime.stop()
        for store in stores.values():
            store.close()


def _http(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.read()


def test_a_host_of_site_b_asking_server_a_gets_the_urls_of_b(two_sites):
    configs, stores, runtimes = two_sites
    store_a, url_a, url_b = stores["a"], configs["a"].base_url, configs["b"].base_url
    assert url_a != url_b
    registry.add_host(store_a, {"mac": HOST_B, "name": "hb", "pool": "p", "site": "b", "disk": DISK}, site="a")
    registry.add_host(store_a, {"mac": HOST_A, "name": "ha", "pool": "p", "disk": DISK}, site="a")
    _until("b has the media", lambda: (stores["b"].media_copy(MEDIA, url_b) or None) and
           stores["b"].media_copy(MEDIA, url_b).state == "ready")
    found = {}
    for mac in (HOST_B, HOST_A):
        attempt = attempts.arm(store_a, configs["a"], mac, MEDIA)
        dashed = "01-" + mac.replace(":", "-")
        found[mac] = (tftp_get(runtimes["a"].tftp.address, f"pxelinux.cfg/{dashed}", "127.0.0.1").decode(),
                      _http(f"{url_a}/boot/answerfile/{attempt.token}").decode())
    config_b, answer_b = found[HOST_B]
    assert f"{url_b}/media/{MEDIA}/" in config_b and f"{url_b}/boot/answerfile/" in config_b
    assert url_a not in config_b
    assert f'<source type="url">{url_b}/media/{MEDIA}/</source>' in answer_b and url_a not in answer_b
    assert f"{url_b}/boot/script/" in answer_b
    config_a, answer_a = found[HOST_A]  # the host of a's own site: a's URLs, as before sites
    assert f"{url_a}/media/{MEDIA}/" in config_a and url_b not in config_a and url_b not in answer_a
    other = store_a.events(kind="boot.other_site")
    assert other and {e["mac"] for e in other} == {HOST_B}
    assert {"site": "b", "served_site": "a", "urls_of": url_b, "server": url_a}.items() <= other[0]["details"].items()


def test_media_imported_on_a_is_fetched_by_b_checked_and_served_from_bs_own_copy(two_sites, tmp_path):
    configs, stores, runtimes = two_sites
    url_a, url_b = configs["a"].base_url, configs["b"].base_url
    copy = _until("b's copy is ready", lambda: (lambda c: c if c and c.state == "ready" else None)(
        stores["b"].media_copy(MEDIA, url_b)))
    where = Path(copy.path)
    assert where == (tmp_path / "b" / "data" / "media" / MEDIA).resolve() and where.is_dir()
    original = Path(stores["a"].get_media(MEDIA).path)
    manifest = stores["a"].media_manifest(MEDIA)
    assert {rel for rel, _, _ in manifest} == {".treeinfo", "repodata/repomd.xml", "boot/xen.gz", "boot/vmlinuz",
                                               "install.img"}
    for rel, size, digest in manifest:
        assert (where / rel).read_bytes() == (original / rel).read_bytes()
        assert hashlib.sha256((where / rel).read_bytes()).hexdigest() == digest and (where / rel).stat().st_size == size
    assert _http(f"{url_b}/media/{MEDIA}/install.img") == (original / "install.img").read_bytes()
    assert sites.local_media(stores["b"], configs["b"], stores["b"].get_media(MEDIA)).path == str(where)
    states = [e["details"] for e in stores["a"].events() if e["kind"].startswith("media.site_")]
    assert [(d["server"], d["site"]) for d in states] == [(url_a, "a"), (url_b, "b"), (url_b, "b")]
    assert [e["kind"] for e in stores["a"].events() if e["kind"].startswith("media.site_")] == [
        "media.site_ready", "media.site_syncing", "media.site_ready"]
    availability = sites.media_availability(stores["a"], MEDIA)
    assert {site: info["state"] for site, info in availability.items()} == {"a": "ready", "b": "ready"}
    assert sites.availability_text(availability) == "a ready, b ready"


def test_a_tree_that_does_not_match_the_manifest_is_a_failed_copy_and_leaves_nothing(two_sites, tmp_path):
    configs, stores, runtimes = two_sites
    _until("b's copy is ready", lambda: (stores["b"].media_copy(MEDIA, configs["b"].base_url) or None) and
           stores["b"].media_copy(MEDIA, configs["b"].base_url).state == "ready")
    # a third server of site c; a's tree changed on disk after the import: the manifest no longer matches it
    config_c = demo_config(tmp_path / "c").replace(site="c", database_url=configs["a"].database_url)
    store_c = Store.from_config(config_c)
    try:
        store_c.register_server(sites.server_id(config_c), "c", config_c.base_url, sites.tftp_address(config_c))
        source = stores["a"].get_server(configs["a"].base_url)
        tree = Path(stores["a"].get_media(MEDIA).path)
        (tree / "boot" / "xen.gz").write_bytes(b"changed behind our back\n")
        copy = mediasync.sync(store_c, config_c, stores["a"].get_media(MEDIA), source)
        assert copy.state == "failed" and "boot/xen.gz" in copy.error and "manifest says" in copy.error
        media_root = tmp_path / "c" / "data" / "media"
        assert list(media_root.iterdir()) == []  # no half-written tree, not even its temporary directory
        assert store_c.media_copy(MEDIA, config_c.base_url).state == "failed"
    finally:
        store_c.close()


def test_a_plan_refuses_a_host_whose_site_has_no_ready_copy(two_sites, tmp_path):
    configs, stores, _ = two_sites
    store = stores["a"]
    _until("b's copy is ready", lambda: (store.media_copy(MEDIA, configs["b"].base_url) or None) and
           store.media_copy(MEDIA, configs["b"].base_url).state == "ready")
    hosts = {mac: registry.add_host(store, {"mac": mac, "name": name, "pool": "p", "site": site})
             for mac, name, site in (("aa:bb:cc:00:01:01", "in-b", "b"), ("aa:bb:cc:00:01:02", "in-c", "c"),
                                     ("aa:bb:cc:00:01:03", "no-site", None))}
    plan = Plan(pool="p", media=MEDIA, target="8.4.0", hosts=[
        PlannedHost(mac, host.name, f"uuid-{i}", f"ref-{i}", "member", "8.2.1", "upgrade")
        for i, (mac, host) in enumerate(hosts.items())])
    prechecks_media.at_sites(plan, store, store.get_media(MEDIA), hosts)
    refused = [c for c in plan.checks if c.code == "MEDIA_NOT_AT_SITE"]
    assert [c.host for c in refused] == ["in-c"] and not plan.ok
    assert "site 'c'" in refused[0].message and "ready at: a, b" in refused[0].message
    assert 'site = "c"' in refused[0].fix
    assert not [c for c in plan.checks if c.code == "PACKS_NOT_SYNCED"]  # no pack: nothing to say

    packs.import_pack(store, configs["a"], MEDIA, make_pack_tree(tmp_path / "acme"))
    again = Plan(pool="p", media=MEDIA, target="8.4.0", hosts=plan.hosts)
    prechecks_media.at_sites(again, store, store.get_media(MEDIA), hosts)
    warned = [c for c in again.checks if c.code == "PACKS_NOT_SYNCED"]
    assert [(c.host, c.level) for c in warned] == [("in-b", "warning"), ("in-c", "warning")]  # not the site-less one
    assert "acme" in warned[0].message and "site 'b'" in warned[0].message


def test_what_server_b_records_shows_on_server_as_dashboard_and_metrics(two_sites):
    configs, stores, runtimes = two_sites
    registry.add_host(stores["a"], {"mac": HOST_A, "name": "ha", "pool": "p", "disk": DISK}, site="a")
    attempts.arm(stores["a"], configs["a"], HOST_A, MEDIA)
    # the host of site a asks server b: b serves it (with a's URLs) and records that through its own store handle
    tftp_get(runtimes["b"].tftp.address, "pxelinux.cfg/01-" + HOST_A.replace(":", "-"), "127.0.0.1")
    _until("b's events written", lambda: stores["b"].events(kind="boot.other_site"))
    page = _http(f"{configs['a'].base_url}/metrics").decode()
    assert re.search(r'provisioner_events_total\{event="boot.other_site"\} 1\.0', page), page[:2000]
    assert re.search(r'provisioner_events_total\{event="server.registered"\} 2\.0', page)
    client = create_app(configs["a"], store=stores["a"]).test_client()
    log_in(client)
    host_page = client.get(f"/ui/hosts/{HOST_A}").text
    assert "boot.other_site" in host_page and configs["b"].base_url in host_page
    assert "<dt>Site</dt><dd>a</dd>" in host_page


def test_media_list_shows_each_sites_copy(two_sites, tmp_path):
    from click.testing import CliRunner

    from provisioner.cli import main

    configs, stores, _ = two_sites
    _until("b's copy is ready", lambda: (stores["a"].media_copy(MEDIA, configs["b"].base_url) or None) and
           stores["a"].media_copy(MEDIA, configs["b"].base_url).state == "ready")
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "cli"), "PROVISIONER_CONFIG": "",
           "PROVISIONER_DATABASE_URL": configs["a"].database_url}
    listed = CliRunner().invoke(main, ["media", "list", "--json"], env=env, catch_exceptions=False)
    found = json.loads(listed.output)[0]["sites"]
    assert {site: info["state"] for site, info in found.items()} == {"a": "ready", "b": "ready"}
    assert [s["server"] for s in found["b"]["servers"]] == [configs["b"].base_url]
    table = CliRunner().invoke(main, ["media", "list"], env=env, catch_exceptions=False).output
    assert "SITES" in table.splitlines()[0] and "a ready, b ready" in table


def test_the_pre_reboot_self_check_asks_the_server_of_the_hosts_site(two_sites):
    """The coordinator on a checks, before rebooting a host of site b, b's TFTP and HTTP (where the host will fetch
    its installer), not its own: with b stopped the check fails naming b although a answers."""
    from provisioner.coordinator import selfcheck

    configs, stores, runtimes = two_sites
    store_a, config_a, url_b = stores["a"], configs["a"], configs["b"].base_url
    host = registry.add_host(store_a, {"mac": HOST_B, "name": "hb", "pool": "p", "site": "b", "disk": DISK},
                             site="a")
    _until("b has the media", lambda: (store_a.media_copy(MEDIA, url_b) or None) and
           store_a.media_copy(MEDIA, url_b).state == "ready")
    attempt = attempts.arm(store_a, config_a, HOST_B, MEDIA)
    checked = sites.site_config(store_a, config_a, host)
    assert checked.base_url == url_b and checked.tftp_port == runtimes["b"].tftp.address[1]
    assert not store_a.events(kind="boot.other_site")  # the coordinator's look-up is not a boot: nothing recorded
    assert config_a.boot_self_check
    selfcheck.check_boot_server(checked, host, store_a.get_media(MEDIA), attempt)  # b answers with this attempt
    runtimes.pop("b").stop()
    with pytest.raises(selfcheck.SelfCheckFailed) as failed:
        selfcheck.check_boot_server(sites.site_config(store_a, config_a, host), host, store_a.get_media(MEDIA),
                                    attempt)
    assert f":{checked.tftp_port}" in str(failed.value) and "did not answer" in str(failed.value)
    selfcheck.check_boot_server(config_a, host, store_a.get_media(MEDIA), attempt)  # a itself still answers
