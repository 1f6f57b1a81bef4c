"""`updates add NAME PATH|URL` (provisioner/updates): a real-format bundle (tests/support/bundles.py, signed with a
real gpg key, verified by gpgv) is imported, served over HTTP and described; every bad kind is refused with its
message and leaves nothing in the store or the data dir; mirrors are read over a real HTTP server."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
from pathlib import Path

import pytest

from bundles import Update, build_bundle, build_repo, signing_key
from provisioner import updates
from provisioner.model import Media


@pytest.fixture(scope="session")
def key(tmp_path_factory):
    return signing_key(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def other_key(tmp_path_factory):
    return signing_key(tmp_path_factory.getbasetemp(), name="stranger")


@pytest.fixture
def config(config, key):
    return config.replace(updates_keyring=key.armored)


def _nothing_kept(store, config):
    assert store.list_update_repos() == []
    root = Path(config.data_dir) / "updates"
    assert not root.exists() or list(root.iterdir()) == [], list(root.iterdir())
    assert [e for e in store.events() if e["kind"].startswith("updates.")] == []


def test_a_signed_bundle_is_imported_read_and_recorded(store, config, key, tmp_path):
    built = build_bundle(tmp_path / "xs84.xsbundle", key=key, updates=[
        Update("XS8E001", mandatory=("RestartToolstack",), issued="2024-05-01 00:00:00"),
        Update("XS8E002", mandatory=("RebootHost",), recommended=("EvacuateHost",), issued="2024-06-01 00:00:00",
               packages=(("kernel", "4.19.19", "8.0.33.xs8"),))])
    added = updates.add(store, config, "xs84", str(built.path), product_version="8.4.0")
    assert (added.kind, added.product_version, added.signed, added.unsigned) == ("bundle", "8.4.0", True, False)
    assert added.update_ids == ["XS8E001", "XS8E002"] and added.update_level == "2024-06-01 00:00:00"
    assert added.details["updates"][1]["guidance"] == {"mandatory": ["RebootHost"], "recommended": ["EvacuateHost"],
                                                       "full": [], "livepatch": []}
    assert added.details["signer"] == key.fingerprint and added.sha256 == built.sha256
    stored = updates.bundle_file(added)
    assert stored.read_bytes() == built.path.read_bytes() and stored.parent == Path(config.data_dir) / "updates/xs84"
    assert (updates.repo_dir(added) / "repodata/repomd.xml").is_file()
    assert [p.name for p in (Path(config.data_dir) / "updates").iterdir()] == ["xs84"]  # no temp dir left
    described = updates.describe(config, added)
    assert described["repo_url"].endswith("/updates/xs84/repo/")
    assert described["bundle_url"].endswith("/updates/xs84/bundle.xsbundle")
    assert [e["details"]["name"] for e in store.events() if e["kind"] == "updates.added"] == ["xs84"]


def _cut_before_last_member(path: Path) -> None:
    """Truncate the tar exactly at its last member's header (a download cut between two files)."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1].offset
    path.write_bytes(path.read_bytes()[:last])


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 10, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size if kind == tarfile.REGTYPE else 0, link
    return info


BAD = {
    "unsigned": (dict(key=None), "is unsigned (no repodata/repomd.xml.asc)"),
    "wrong product": (dict(product_version="8.2.0"), "wrong product: it updates XenServer 8.2.0"),
    "truncated in a file": (dict(truncate=6000), "truncated"),
    "altered package": (dict(corrupt="package"), "fails its sha256 checksum"),
    "altered metadata after signing": (dict(corrupt="signature"), "BAD signature"),
    "metadata missing": (dict(corrupt="missing-metadata"), "is missing: incomplete repository"),
    "path escape": (dict(extra_members=[_member("../evil")]), "illegal path '../evil'"),
    "absolute path": (dict(extra_members=[_member("/etc/evil")]), "illegal path"),
    "symlink": (dict(extra_members=[_member("repodata/link", tarfile.SYMTYPE, link="/etc/passwd")]),
                "is a symbolic link"),
    "hard link": (dict(extra_members=[_member("x", tarfile.LNKTYPE, link="repodata/repomd.xml")]), "is a hard link"),
    "duplicate": (dict(extra_members=[_member("repodata/repomd.xml")]), "appears twice"),
    "no xenserver-release": (dict(product_version=None), "no xenserver-release package"),
    "./ names (tar -C dir -cf x .)": (dict(extra_members=[_member("./repodata/x")]), "illegal path './repodata/x'"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_bundles_are_refused_and_nothing_is_kept(store, config, key, tmp_path, kind):
    options, message = BAD[kind]
    options = {"key": key, **options}
    if options.get("product_version", "") is None:  # a repository without the release package at all
        options.pop("product_version")
        built = build_bundle(tmp_path / "b.xsbundle", **options)
        _drop_release_package(built.path, key)
    else:
        built = build_bundle(tmp_path / "b.xsbundle", **options)
    with pytest.raises(ValueError, match=re.escape(message)):
        updates.add(store, config, "bad", str(built.path), product_version="8.4.0")
    _nothing_kept(store, config)


def _drop_release_package(path: Path, key) -> None:
    """Rebuild the repository with a primary.xml that has no xenserver-release (re-signed, checksums right)."""
    import bundles
    original = bundles._primary_xml
    bundles._primary_xml = lambda rows: original([r for r in rows if r[0] != "xenserver-release"])
    try:
        build_bundle(path, key=key)
    finally:
        bundles._primary_xml = original


def test_a_download_cut_between_two_files_is_truncated(store, config, key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    _cut_before_last_member(built.path)
    with pytest.raises(ValueError, match="truncated .*without its end-of-archive blocks"):
        updates.add(store, config, "cut", str(built.path), product_version="8.4.0")
    _nothing_kept(store, config)


def test_the_unpacked_size_limit_is_xapis_accounting(store, config, key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    small = config.replace(updates_max_bytes=1 << 20, updates_keyring=key.armored)
    big = build_bundle(tmp_path / "big.xsbundle", key=key,
                       extra_members=[_member("Packages/filler.bin", size=(1 << 20) + 1)])
    with pytest.raises(ValueError, match="over updates_max_bytes|unpacks to more than 1048576 bytes"):
        updates.add(store, small, "big", str(big.path), product_version="8.4.0")
    _nothing_kept(store, small)
    assert updates.add(store, small, "ok", str(built.path), product_version="8.4.0").name == "ok"


def test_a_signature_by_an_unknown_key_is_refused(store, config, other_key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=other_key)
    with pytest.raises(ValueError, match="made by a key that is not in updates_keyring"):
        updates.add(store, config, "x", str(built.path), product_version="8.4.0")
    _nothing_kept(store, config)


def test_no_keyring_configured_refuses_a_signed_bundle(store, config, key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    unset = config.replace(updates_keyring=None)
    with pytest.raises(ValueError, match="updates_keyring is not set"):
        updates.add(store, unset, "x", str(built.path), product_version="8.4.0")
    _nothing_kept(store, unset)


def test_allow_unsigned_is_recorded_but_never_accepts_altered_metadata(store, config, key, tmp_path):
    plain = build_bundle(tmp_path / "plain.xsbundle", key=None)
    added = updates.add(store, config, "plain", str(plain.path), product_version="8.4.0", allow_unsigned=True)
    assert (added.signed, added.unsigned) == (False, True)
    assert [e["details"]["unsigned"] for e in store.events() if e["kind"] == "updates.added"] == [True]
    altered = build_bundle(tmp_path / "altered.xsbundle", key=key, corrupt="signature")
    with pytest.raises(ValueError, match="BAD signature"):
        updates.add(store, config, "altered", str(altered.path), product_version="8.4.0", allow_unsigned=True)
    assert [r.name for r in store.list_update_repos()] == ["plain"]


def test_the_product_is_checked_against_the_media_when_not_named(store, config, key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=key, product_version="8.4.0")
    with pytest.raises(ValueError, match="no imported media to check that against: pass --product-version"):
        updates.add(store, config, "x", str(built.path))
    store.add_media(Media(name="xs82", path=str(tmp_path), product_name="XenServer", product_version="8.2.1",
                          platform_version="3.2.1", build=None))
    with pytest.raises(ValueError, match="wrong product: it updates XenServer 8.4.0, but the imported media are 8.2.1"):
        updates.add(store, config, "x", str(built.path))
    _nothing_kept(store, config)
    store.add_media(Media(name="xs84", path=str(tmp_path), product_name="XenServer", product_version="8.4.0",
                          platform_version="3.4.0", build=None))
    assert updates.add(store, config, "x", str(built.path)).product_version == "8.4.0"


def test_a_name_taken_or_a_missing_file_is_refused_before_any_work(store, config, key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    updates.add(store, config, "x", str(built.path), product_version="8.4.0")
    with pytest.raises(ValueError, match="already exists"):
        updates.add(store, config, "x", str(built.path), product_version="8.4.0")
    with pytest.raises(ValueError, match="does not exist"):
        updates.add(store, config, "y", str(tmp_path / "nope.xsbundle"), product_version="8.4.0")
    with pytest.raises(ValueError, match="name"):
        updates.add(store, config, "../y", str(built.path), product_version="8.4.0")


def test_remove_deletes_the_record_and_the_files(store, config, key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    added = updates.add(store, config, "x", str(built.path), product_version="8.4.0")
    updates.remove(store, config, "x")
    assert store.get_update_repo("x") is None and not Path(added.path).exists()


# --- serving over HTTP (the real Flask app) ---


def test_the_bundle_file_and_its_repository_are_served_like_media(store, config, key, tmp_path, app):
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    updates.add(store, config, "xs84", str(built.path), product_version="8.4.0")
    client = app.test_client()
    whole = _get(client, "/updates/xs84/bundle.xsbundle")
    assert whole.status_code == 200 and hashlib.sha256(whole.data).hexdigest() == built.sha256
    part = _get(client, "/updates/xs84/bundle.xsbundle", headers={"Range": "bytes=0-511"})
    assert part.status_code == 206 and part.data == built.path.read_bytes()[:512]
    repomd = _get(client, "/updates/xs84/repo/repodata/repomd.xml")
    assert repomd.status_code == 200 and repomd.data.startswith(b"<?xml")
    assert _get(client, "/updates/xs84/repo/repodata/repomd.xml.asc").status_code == 200
    for path in ("/updates/xs84/repo/", "/updates/xs84/other", "/updates/xs84/repo/../bundle.xsbundle",
                 "/updates/nope/bundle.xsbundle", "/updates/xs84/repo/../../../provisioner.db"):
        assert _get(client, path).status_code == 404, path


def _get(client, path, **kwargs):
    """GET with the body read and the response closed (file bodies hold an open file until closed)."""
    with client.get(path, **kwargs) as answer:
        answer.get_data()
        return answer


def test_a_real_pool_side_client_can_use_the_served_repository(store, config, key, tmp_path, app):
    """The served tree is a yum repository: read back through HTTP, it passes the same checks."""
    from werkzeug.serving import make_server

    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    updates.add(store, config, "xs84", str(built.path), product_version="8.4.0")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/updates/xs84/repo/"
        mirrored = updates.add(store, config, "again", url, product_version="8.4.0")
        assert mirrored.kind == "mirror" and mirrored.update_ids == ["XS8E001", "XS8E002"] and mirrored.signed
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


# --- mirrors ---


@pytest.fixture
def mirror(tmp_path, key):
    """A real HTTP server on loopback serving a repository tree (a vendor mirror)."""
    root = tmp_path / "mirror"
    build_repo(root / "xs8", key=key)
    build_repo(root / "unsigned", key=None)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(10)
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_mirror_is_registered_after_its_metadata_is_read(store, config, mirror):
    added = updates.add(store, config, "cdn", f"{mirror}/xs8", product_version="8.4")
    assert (added.kind, added.url, added.path, added.checked, added.signed) == (
        "mirror", f"{mirror}/xs8/", None, True, True)
    assert added.update_ids == ["XS8E001", "XS8E002"] and added.product_version == "8.4.0"
    assert updates.describe(config, added)["repo_url"] == f"{mirror}/xs8/"
    assert updates.bundle_file(added) is None


def test_mirror_refusals(store, config, mirror, tmp_path):
    with pytest.raises(ValueError, match="is unsigned"):
        updates.add(store, config, "u", f"{mirror}/unsigned/", product_version="8.4.0")
    with pytest.raises(ValueError, match="wrong product"):
        updates.add(store, config, "w", f"{mirror}/xs8/", product_version="8.2.0")
    with pytest.raises(ValueError, match="answered 404"):
        updates.add(store, config, "n", f"{mirror}/nothing/", product_version="8.4.0")
    with pytest.raises(ValueError, match="put no credentials"):
        updates.add(store, config, "c", "http://user:pw@example.invalid/repo/", product_version="8.4.0")
    with pytest.raises(ValueError, match="--no-check is for mirror URLs only"):
        updates.add(store, config, "f", str(tmp_path / "x.xsbundle"), check=False)
    assert store.list_update_repos() == []


def test_no_check_registers_an_unreachable_mirror_as_unchecked(store, config):
    with pytest.raises(ValueError, match="cannot fetch .*pass --no-check"):
        updates.add(store, config, "far", "http://127.0.0.1:9/repo", product_version="8.4.0")
    added = updates.add(store, config, "far", "http://127.0.0.1:9/repo", product_version="8.4.0", check=False)
    assert (added.checked, added.product_version, added.details) == (False, "8.4.0", {})


# --- CLI and REST ---


def test_cli_add_list_show_remove(run, tmp_path, key, monkeypatch):
    monkeypatch.setenv("PROVISIONER_UPDATES_KEYRING", str(key.armored))
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    bad = build_bundle(tmp_path / "bad.xsbundle", key=None)
    refused = run("updates", "add", "bad", str(bad.path), "--product-version", "8.4.0")
    assert refused.exit_code == 1 and "is unsigned" in refused.output
    added = run("updates", "add", "xs84", str(built.path), "--product-version", "8.4.0", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["update_ids"] == ["XS8E001", "XS8E002"]
    listed = run("updates", "list", "--json")
    assert [d["name"] for d in json.loads(listed.output)] == ["xs84"]
    shown = run("updates", "show", "xs84")
    assert "XS8E002" in shown.output and "RebootHost" in shown.output and "verified" in shown.output
    assert run("updates", "remove", "xs84").output.strip() == "removed update repository xs84"
    assert "no update repositories" in run("updates", "list").output


def test_rest_add_show_list_remove(client, auth, store, config, key, tmp_path):
    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    body = {"name": "xs84", "source": str(built.path), "product_version": "8.4.0"}
    created = client.post("/api/v1/updates", json=body, headers=auth)
    assert created.status_code == 201, created.json
    assert created.json["updates"]["update_level"] == "2024-06-01 00:00:00"
    assert client.get("/api/v1/updates/xs84", headers=auth).json["updates"]["signed"] is True
    assert [u["name"] for u in client.get("/api/v1/updates", headers=auth).json["updates"]] == ["xs84"]
    assert client.post("/api/v1/updates", json=body, headers=auth).status_code == 409
    wrong = build_bundle(tmp_path / "w.xsbundle", key=key, product_version="8.2.0")
    refused = client.post("/api/v1/updates", json={**body, "name": "w", "source": str(wrong.path)}, headers=auth)
    assert refused.status_code == 422 and "wrong product" in refused.json["error"]
    assert client.post("/api/v1/updates", json={"name": "z"}, headers=auth).status_code == 400
    assert client.get("/api/v1/updates", headers={}).status_code == 401
    assert client.delete("/api/v1/updates/xs84", headers=auth).json["removed"]["name"] == "xs84"
    assert client.get("/api/v1/updates/xs84", headers=auth).status_code == 404


def test_a_compressed_tar_is_not_a_bundle(store, config, key, tmp_path):
    """XAPI reads the PUT body as a plain tar stream: a gzipped tar is refused here too."""
    import gzip

    built = build_bundle(tmp_path / "b.xsbundle", key=key)
    zipped = tmp_path / "b.xsbundle.gz"
    zipped.write_bytes(gzip.compress(built.path.read_bytes()))
    with pytest.raises(ValueError, match="it is gzip-compressed, and XAPI takes a plain tar"):
        updates.add(store, config, "gz", str(zipped), product_version="8.4.0")
    _nothing_kept(store, config)
