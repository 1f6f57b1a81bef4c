"""Supplemental packs and driver disks of a media: reading and checking (the installer's rules, docs/packs.md),
import with temp+rename, scope (hosts, pools, all), removal; served under the media's URL space."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import make_media_tree
from pack_trees import build_pack_iso, make_pack_tree
from provisioner.boot import urls
from provisioner.media import import_media
from provisioner.model import Host
from provisioner.packs import PackError, import_pack, packs_for, read_pack_tree, remove_pack
from provisioner.store import ConflictError


MAC1, MAC2, MAC3 = "aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02", "aa:bb:cc:dd:ee:03"


@pytest.fixture
def media(store, config, tmp_path):
    store.add_host(Host(mac=MAC1, name="h1", pool="alpha", disk="/dev/disk/by-id/scsi-1"))
    store.add_host(Host(mac=MAC2, name="h2", pool="alpha", disk="/dev/disk/by-id/scsi-2"))
    store.add_host(Host(mac=MAC3, name="h3", pool="beta", disk="/dev/disk/by-id/scsi-3"))
    return import_media(store, config, "xs84", make_media_tree(tmp_path / "xs84", version="8.4.0"))


def packs_dir_entries(config) -> list[str]:
    root = Path(config.data_dir) / "packs" / "xs84"
    return sorted(os.listdir(root)) if root.exists() else []


def test_supplemental_pack_tree_is_read_checked_and_copied(store, config, tmp_path, media):
    tree = make_pack_tree(tmp_path / "acme", "acme-tools", version="1.2.0")
    pack = import_pack(store, config, "xs84", tree)
    assert (pack.name, pack.kind, pack.label, pack.version) == ("acme", "pack", "acme-tools", "1.2.0")
    assert pack.details["control"] == "acme-tools-control"
    assert pack.details["requires"] == {"name": "xenserver-release", "op": ">=", "version": "8.4.0"}
    assert pack.details["description"] == "test pack" and pack.details["drivers"] == []
    assert Path(pack.path) == Path(config.data_dir).resolve() / "packs" / "xs84" / "acme"
    assert (Path(pack.path) / "update.xml").read_bytes() == (tree / "update.xml").read_bytes()
    assert packs_dir_entries(config) == ["acme"]  # no temp directory left
    assert store.list_packs("xs84") == [pack]
    assert [e["kind"] for e in store.events(kind="pack.added")] == ["pack.added"]


def test_driver_disk_is_told_by_its_comps_drivers_group(store, config, tmp_path, media):
    tree = make_pack_tree(tmp_path / "megaraid", "megaraid-sas", drivers=["megaraid_sas-module"])
    pack = import_pack(store, config, "xs84", tree, name="raid", driver=True, hosts=[MAC1.replace(":", "-")])
    assert (pack.name, pack.kind, pack.hosts) == ("raid", "driver", (MAC1,))
    assert pack.details["drivers"] == ["megaraid_sas-module"]


def test_pack_iso_is_extracted(store, config, tmp_path, media):
    tree = make_pack_tree(tmp_path / "tree", "nic-driver", drivers=["ixgbe-module"])
    iso = build_pack_iso(tree, tmp_path / "nic-driver.iso")
    pack = import_pack(store, config, "xs84", iso)
    assert (pack.name, pack.kind, pack.label) == ("nic-driver", "driver", "nic-driver")
    assert (Path(pack.path) / "repodata" / "primary.xml.gz").read_bytes() == \
        (tree / "repodata" / "primary.xml.gz").read_bytes()


def test_truncated_pack_iso_is_refused_and_nothing_left(store, config, tmp_path, media):
    iso = build_pack_iso(make_pack_tree(tmp_path / "tree"), tmp_path / "p.iso")
    iso.write_bytes(iso.read_bytes()[:-2048])  # an interrupted download
    with pytest.raises(PackError, match="truncated"):
        import_pack(store, config, "xs84", iso)
    assert packs_dir_entries(config) == [] and store.list_packs() == []


@pytest.mark.parametrize("damage, problem", [
    (lambda t: (t / "update.xml").unlink(), "has no update.xml"),
    (lambda t: (t / "repodata" / "repomd.xml").unlink(), "has no repodata/repomd.xml"),
    (lambda t: (t / "update.xml").write_text("<update control='c'/>"), "no name-label"),
    (lambda t: (t / "update.xml").write_text("<pack name-label='x' control='c'/>"), "is not <update>"),
    (lambda t: (t / "update.xml").write_text("<update"), "not well-formed"),
    (lambda t: (t / "update.xml").write_text(
        "<update name-label='acme-tools' control='other-control'/>"), "does not list"),
    (lambda t: (t / "repodata" / "primary.xml.gz").write_bytes(b"not gzip"), "not a readable gzip"),
    (lambda t: (t / "repodata" / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"/>'), "names no primary"),
], ids=["no-update-xml", "no-repomd", "no-label", "wrong-root", "bad-xml", "control-missing", "bad-primary",
        "no-primary"])
def test_not_a_pack_repository_is_refused(store, config, tmp_path, media, damage, problem):
    tree = make_pack_tree(tmp_path / "acme", "acme-tools")
    damage(tree)
    with pytest.raises(PackError, match=problem):
        import_pack(store, config, "xs84", tree)
    assert packs_dir_entries(config) == [] and store.list_packs() == []


def test_wrong_product_version_is_refused(store, config, tmp_path, media):
    tree = make_pack_tree(tmp_path / "old", requires=("xenserver-release", "EQ", "8.2.1"))
    with pytest.raises(PackError, match=r"requires xenserver-release = 8.2.1, but media 'xs84' is XenServer 8.4.0"):
        import_pack(store, config, "xs84", tree)
    assert packs_dir_entries(config) == []
    # '>= 8.2' is met by 8.4.0, and a pack that names no product requirement cannot be checked: accepted
    assert import_pack(store, config, "xs84", make_pack_tree(tmp_path / "ge", requires=(
        "xcp-ng-release", "GE", "8.2"))).kind == "pack"
    assert import_pack(store, config, "xs84", make_pack_tree(tmp_path / "none", requires=None)).details[
        "requires"] is None


def test_driver_flag_on_a_plain_pack_is_refused(store, config, tmp_path, media):
    with pytest.raises(PackError, match="--driver given, but its repodata has no comps group 'drivers'"):
        import_pack(store, config, "xs84", make_pack_tree(tmp_path / "acme"), driver=True)
    assert packs_dir_entries(config) == []


@pytest.mark.parametrize("kwargs, problem", [
    ({"hosts": ["aa:bb:cc:dd:ee:99"]}, "no such host is registered"),
    ({"hosts": ["nonsense"]}, "--host 'nonsense'"),
    ({"pools": ["gamma"]}, "no such pool"),
])
def test_unknown_scope_is_refused(store, config, tmp_path, media, kwargs, problem):
    with pytest.raises(PackError, match=problem):
        import_pack(store, config, "xs84", make_pack_tree(tmp_path / "acme"), **kwargs)
    assert packs_dir_entries(config) == []


def test_unknown_media_and_duplicate_name(store, config, tmp_path, media):
    tree = make_pack_tree(tmp_path / "acme")
    with pytest.raises(PackError, match="no media named 'nope'"):
        import_pack(store, config, "nope", tree)
    import_pack(store, config, "xs84", tree)
    with pytest.raises(ConflictError, match="already has a pack named 'acme'"):
        import_pack(store, config, "xs84", tree)
    assert packs_dir_entries(config) == ["acme"]


def test_scope_decides_which_hosts_get_a_pack(store, config, tmp_path, media):
    every = import_pack(store, config, "xs84", make_pack_tree(tmp_path / "every"))
    one = import_pack(store, config, "xs84", make_pack_tree(tmp_path / "one", drivers=["x"]), hosts=[MAC3])
    pool = import_pack(store, config, "xs84", make_pack_tree(tmp_path / "pool"), pools=["alpha"])
    got = {mac: [p.name for p in packs_for(store, "xs84", store.get_host(mac))] for mac in (MAC1, MAC2, MAC3)}
    assert got == {MAC1: ["every", "pool"], MAC2: ["every", "pool"], MAC3: ["every", "one"]}
    extra, drivers = urls.pack_sources("http://10.0.0.5", [every, one, pool])
    assert extra == ("http://10.0.0.5/media/xs84/packs/every/", "http://10.0.0.5/media/xs84/packs/pool/")
    assert drivers == ("http://10.0.0.5/media/xs84/packs/one/",)


def test_remove_pack_forgets_it_and_deletes_its_files(store, config, tmp_path, media):
    pack = import_pack(store, config, "xs84", make_pack_tree(tmp_path / "acme"))
    assert remove_pack(store, config, "xs84", "acme").name == "acme"
    assert store.list_packs() == [] and not Path(pack.path).exists()
    assert (tmp_path / "acme" / "update.xml").exists()  # the operator's source is left alone


def test_pack_files_are_served_under_the_media_url(store, config, tmp_path, media, client):
    pack = import_pack(store, config, "xs84", make_pack_tree(tmp_path / "acme"))

    def get(path: str) -> tuple[int, bytes]:
        response = client.get(path)
        try:
            return response.status_code, response.get_data()
        finally:
            response.close()

    assert get("/media/xs84/packs/acme/update.xml") == (200, (Path(pack.path) / "update.xml").read_bytes())
    assert get("/media/xs84/packs/acme/repodata/repomd.xml")[0] == 200
    assert get("/media/xs84/packs/acme/../../.treeinfo")[0] in (400, 403, 404)
    assert get("/media/xs84/packs/other/update.xml")[0] == 404
    assert get("/media/xs84/.treeinfo")[0] == 200


def test_read_pack_tree_reports_what_the_installer_reads(tmp_path):
    info = read_pack_tree(make_pack_tree(tmp_path / "d", "hba", version="2.0", drivers=["qla2xxx-module", "qla-fw"]))
    assert info["kind"] == "driver" and info["label"] == "hba" and info["version"] == "2.0"
    assert info["details"]["drivers"] == ["qla2xxx-module", "qla-fw"]


def test_a_file_name_that_cannot_be_a_pack_name_asks_for_name(store, config, tmp_path, media):
    tree = make_pack_tree(tmp_path / "megaraid sas 7.7")
    with pytest.raises(PackError, match="pass --name"):
        import_pack(store, config, "xs84", tree)
    assert import_pack(store, config, "xs84", tree, name="megaraid").name == "megaraid"
