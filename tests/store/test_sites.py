"""Sites (migration 15) on both backends: server rows and heartbeat, a host's site, media copies and manifests."""

from __future__ import annotations

import pytest

from provisioner import registry
from provisioner.model import Media

A, B = "http://10.0.1.5", "http://10.0.2.5:8080"


def test_a_server_registers_once_and_its_heartbeat_moves_last_seen(store):
    first = store.register_server(A, "dc1", A, "10.0.1.5:69")
    assert (first.site, first.public_url, first.tftp_address) == ("dc1", A, "10.0.1.5:69")
    assert first.age < 60
    again = store.register_server(A, "dc1", A, "10.0.1.5:69")  # a restart finds its own row
    assert again.last_seen >= first.last_seen
    assert store.server_seen(A) and not store.server_seen(B)  # B never registered: register first
    store.register_server(B, "dc2", B, "10.0.2.5:69")
    assert {s.server for s in store.list_servers()} == {A, B}
    assert [s.server for s in store.list_servers("dc2")] == [B]
    assert store.site_names() == ["dc1", "dc2"]
    registered = [e for e in store.events() if e["kind"] == "server.registered"]
    assert [e["details"]["server"] for e in registered] == [A, B]  # the restart changed nothing: no event


def test_a_host_keeps_its_site_and_an_unknown_site_is_accepted_with_a_warning(store):
    store.register_server(A, "dc1", A, "10.0.1.5:69")
    host = registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:01", "name": "h1", "pool": "p"}, site="dc1")
    assert host.site == "dc1" and registry.site_warning(store, "dc1") is None
    other = registry.add_host(store, {"mac": "aa:bb:cc:dd:ee:02", "name": "h2", "pool": "p", "site": "dc9"},
                              site="dc1")
    assert store.get_host(other.mac).site == "dc9"
    warning = registry.site_warning(store, "dc9")
    assert "no boot server has registered site 'dc9'" in warning and 'site = "dc9"' in warning
    assert registry.update_host(store, other.mac, {"site": "dc1"}).site == "dc1"
    assert registry.update_host(store, other.mac, {"site": None}).site is None  # any server, as before sites
    with pytest.raises(ValueError, match="site"):
        registry.update_host(store, other.mac, {"site": "no spaces"})
    imported = registry.import_csv(store, "mac,name,pool,site\naa:bb:cc:dd:ee:03,h3,p,dc2\naa:bb:cc:dd:ee:04,h4,p,\n",
                                   site="dc1")
    assert [(h.name, h.site) for h in imported] == [("h3", "dc2"), ("h4", "dc1")]
    assert [(h.name, h.site) for h in store.list_hosts()] == [("h1", "dc1"), ("h2", None), ("h3", "dc2"),
                                                              ("h4", "dc1")]


def test_media_copies_and_the_manifest_go_with_the_media(store):
    store.add_media(Media("xs8", "/srv/xs8", "XenServer", "8.4.0", "3.4.0", None, ("boot/xen.gz",)))
    assert store.set_media_manifest("xs8", [(".treeinfo", 10, "a" * 64), ("boot/xen.gz", 20, "b" * 64)]) == 2
    assert store.media_manifest("xs8") == [(".treeinfo", 10, "a" * 64), ("boot/xen.gz", 20, "b" * 64)]
    store.set_media_copy("xs8", A, "dc1", "ready", "/srv/xs8")
    store.set_media_copy("xs8", B, "dc2", "syncing", "/var/lib/p/media/xs8")
    store.set_media_copy("xs8", B, "dc2", "failed", "/var/lib/p/media/xs8", error="boot/xen.gz: sha256 differs")
    copies = store.media_copies("xs8")
    assert [(c.server, c.site, c.state, c.error) for c in copies] == [
        (A, "dc1", "ready", None), (B, "dc2", "failed", "boot/xen.gz: sha256 differs")]
    assert store.media_copy("xs8", B).path == "/var/lib/p/media/xs8"
    kinds = [e["kind"] for e in store.events() if e["kind"].startswith("media.site_")]
    assert kinds == ["media.site_ready", "media.site_syncing", "media.site_failed"]
    with pytest.raises(ValueError, match="not one of"):
        store.set_media_copy("xs8", B, "dc2", "half", "/x")
    store.remove_media("xs8")
    assert store.media_copies() == [] and store.media_manifest("xs8") == []
