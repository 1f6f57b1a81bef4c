"""Static files over HTTP (media trees, tftp_root): GET, HEAD, Range, refusals, streaming, fetch callback."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket

import pytest
import requests

from provisioner.boot import urls
from provisioner.web.server import serve_http
from provisioner.model import Media
from provisioner.web.access import set_on_fetch
from provisioner.web.app import create_app
from provisioner.web.files import Unsatisfiable, parse_range

TREEINFO = b"[system-v1]\nproduct_version = 8.4.0\nplatform_version = 3.4.0\n"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "boot").mkdir(parents=True)
    (root / ".treeinfo").write_bytes(TREEINFO)
    (root / "boot" / "vmlinuz").write_bytes(b"K" * 1000)
    (root / "install.img").write_bytes(os.urandom(3 << 20))  # several sendfile/socket-buffer rounds
    (root / "empty").write_bytes(b"")
    os.symlink("install.img", root / "inside-link.img")
    os.symlink("/etc/passwd", root / "passwd")
    os.symlink("/etc", root / "etc")
    os.symlink("../secret", root / "up")
    (tmp_path / "secret").write_text("root:x:0:0 secret\n")
    return root


@pytest.fixture
def tftp_root(tmp_path):
    root = tmp_path / "tftp"
    (root / "grub").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(b"P" * 4242)
    (root / "grub" / "grubx64.efi").write_bytes(b"G" * 100)
    return root


@pytest.fixture
def fetches():
    return []


@pytest.fixture
def server(config, store, tree, tftp_root, fetches):
    store.add_media(Media(name="xs84", path=str(tree), product_name="XenServer", product_version="8.4.0",
                          platform_version="3.4.0", build="1"))
    app = create_app(config.replace(tftp_root=tftp_root), store=store)
    set_on_fetch(app, lambda **kw: fetches.append(kw))
    handle = serve_http(app, "127.0.0.1", 0, threads=4)
    yield handle
    handle.stop()


def url(server, path):
    return server.url + path


def raw_get(server, target: str) -> tuple[int, bytes]:
    """Send a request line exactly as given (clients normalise `..` away; attackers do not)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


# --- parse_range: the table ---

@pytest.mark.parametrize("header,size,expected", [
    (None, 100, None),
    ("", 100, None),
    ("bytes=0-9", 100, (0, 10)),
    ("bytes=10-", 100, (10, 100)),
    ("bytes=-10", 100, (90, 100)),
    ("bytes=-1000", 100, (0, 100)),          # suffix longer than the file: all of it
    ("bytes=90-1000", 100, (90, 100)),       # end clamped
    ("bytes=99-99", 100, (99, 100)),
    (" Bytes = 1 - 2 ", 100, (1, 3)),
    ("bytes=0-1,5-6", 100, None),            # multi-range: whole file (documented choice)
    ("items=0-1", 100, None),
    ("bytes=5-2", 100, None),                # invalid: ignored
    ("bytes=abc", 100, None),
    ("bytes=-", 100, None),
    ("bytes=1-2-3", 100, None),
    ("bytes=\u0661-2", 100, None),           # non-ASCII digits
    ("bytes0-1", 100, None),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header,size", [
    ("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0),
])
def test_parse_range_unsatisfiable(header, size):
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


# --- over a real server ---

def test_full_get_and_headers(server, tree, fetches):
    data = (tree / "install.img").read_bytes()
    resp = requests.get(url(server, "/media/xs84/install.img"), timeout=30)
    assert resp.status_code == 200
    assert resp.content == data
    assert resp.headers["Content-Length"] == str(len(data))
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["ETag"] and resp.headers["Last-Modified"]
    assert fetches == [{"kind": "media", "name": "xs84", "path": "install.img", "client_ip": "127.0.0.1",
                        "bytes": len(data)}]


def test_media_url_builder_matches_route(server, tree):
    resp = requests.get(urls.media_file(server.url, "xs84", "boot/vmlinuz"), timeout=10)
    assert resp.status_code == 200 and resp.content == b"K" * 1000


def test_dotfile_treeinfo_is_served(server):
    resp = requests.get(urls.media_tree(server.url, "xs84") + ".treeinfo", timeout=10)
    assert resp.status_code == 200 and resp.content == TREEINFO


def test_tftp_root_over_http(server, fetches):
    resp = requests.get(url(server, f"{urls.TFTP_FILES_PREFIX}/pxelinux.0"), timeout=10)
    assert resp.status_code == 200 and resp.content == b"P" * 4242
    resp = requests.get(url(server, f"{urls.TFTP_FILES_PREFIX}/grub/grubx64.efi"), timeout=10)
    assert resp.status_code == 200 and resp.content == b"G" * 100
    assert [(f["kind"], f["name"], f["path"]) for f in fetches] == [
        ("tftp_http", "", "pxelinux.0"), ("tftp_http", "", "grub/grubx64.efi")]


def test_symlink_inside_the_tree_is_followed(server, tree):
    resp = requests.get(url(server, "/media/xs84/inside-link.img"), timeout=30)
    assert resp.status_code == 200 and resp.content == (tree / "install.img").read_bytes()


def test_head_has_length_and_no_body(server, tree, fetches):
    size = (tree / "install.img").stat().st_size
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("HEAD", "/media/xs84/install.img")
        head = conn.getresponse()
        assert head.status == 200 and head.getheader("Content-Length") == str(size)
        assert head.read() == b""
        # Same connection: if HEAD had leaked a body, this response would be garbage.
        conn.request("GET", "/media/xs84/boot/vmlinuz")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"K" * 1000
    finally:
        conn.close()
    assert fetches[0]["bytes"] == 0


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-99", 0, 100),                 # start-end, mid-file window
    ("bytes=1000-2000", 1000, 2001),
    ("bytes=3000000-", 3000000, 3 << 20),   # open-ended: to EOF
    ("bytes=-5000", (3 << 20) - 5000, 3 << 20),  # suffix
    ("bytes=100-99999999", 100, 3 << 20),   # end past EOF: clamped
])
def test_range(server, tree, fetches, header, start, end):
    data = (tree / "install.img").read_bytes()
    resp = requests.get(url(server, "/media/xs84/install.img"), headers={"Range": header}, timeout=30)
    assert resp.status_code == 206
    assert resp.content == data[start:end]
    assert resp.headers["Content-Length"] == str(end - start)
    assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}"
    assert fetches[-1]["bytes"] == end - start


def test_ranges_on_one_keepalive_connection(server, tree):
    data = (tree / "install.img").read_bytes()
    with requests.Session() as session:
        for start, end in ((0, 10), (5, 65536 * 3), (len(data) - 7, len(data) - 1)):
            resp = session.get(url(server, "/media/xs84/install.img"),
                               headers={"Range": f"bytes={start}-{end}"}, timeout=30)
            assert resp.status_code == 206 and resp.content == data[start:end + 1]
        assert session.get(url(server, "/media/xs84/install.img"), timeout=30).content == data


@pytest.mark.parametrize("header", ["bytes=3145728-", "bytes=9999999-10000000", "bytes=-0"])
def test_range_past_the_end_is_416(server, header):
    resp = requests.get(url(server, "/media/xs84/install.img"), headers={"Range": header}, timeout=10)
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{3 << 20}"
    assert resp.json()["error"] == "range not satisfiable"


def test_range_on_empty_file_is_416(server):
    resp = requests.get(url(server, "/media/xs84/empty"), headers={"Range": "bytes=0-"}, timeout=10)
    assert resp.status_code == 416 and resp.headers["Content-Range"] == "bytes */0"
    resp = requests.get(url(server, "/media/xs84/empty"), timeout=10)
    assert resp.status_code == 200 and resp.content == b"" and resp.headers["Content-Length"] == "0"


def test_multi_range_and_garbage_range_get_the_whole_file(server):
    for header in ("bytes=0-1,5-6", "bytes=garbage", "pages=1-2"):
        resp = requests.get(url(server, "/media/xs84/boot/vmlinuz"), headers={"Range": header}, timeout=10)
        assert resp.status_code == 200 and resp.content == b"K" * 1000, header


def test_if_range(server):
    first = requests.get(url(server, "/media/xs84/boot/vmlinuz"), timeout=10)
    etag = first.headers["ETag"]
    same = requests.get(url(server, "/media/xs84/boot/vmlinuz"),
                        headers={"Range": "bytes=0-9", "If-Range": etag}, timeout=10)
    assert same.status_code == 206 and same.content == b"K" * 10
    changed = requests.get(url(server, "/media/xs84/boot/vmlinuz"),
                           headers={"Range": "bytes=0-9", "If-Range": '"other"'}, timeout=10)
    assert changed.status_code == 200 and len(changed.content) == 1000
    by_date = requests.get(url(server, "/media/xs84/boot/vmlinuz"),
                           headers={"Range": "bytes=0-9", "If-Range": first.headers["Last-Modified"]}, timeout=10)
    assert by_date.status_code == 206


def test_if_none_match_gives_304(server):
    etag = requests.head(url(server, "/media/xs84/.treeinfo"), timeout=10).headers["ETag"]
    resp = requests.get(url(server, "/media/xs84/.treeinfo"), headers={"If-None-Match": etag}, timeout=10)
    assert resp.status_code == 304 and resp.content == b""


@pytest.mark.parametrize("target", [
    "/media/xs84/../../etc/passwd",
    "/media/xs84/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/media/xs84/boot/../../secret",
    "/media/xs84/..%2f..%2fsecret",
    "/media/xs84/%2E%2E/secret",
    "/tftp/../../../../../../etc/passwd",
    "/tftp/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/tftp/grub/..%5c..%5c..%5cetc/passwd",
    "/media/xs84/passwd",        # symlink to /etc/passwd
    "/media/xs84/etc/passwd",    # through a symlinked directory
    "/media/xs84/up",            # relative symlink to a sibling of the tree
])
def test_traversal_is_refused_with_404_and_an_event(server, store, target):
    status, body = raw_get(server, target)
    assert status == 404
    assert b"root:" not in body and b"secret" not in body
    assert body == b'{"error":"not found"}\n'
    refused = store.events(kind="http.refused")
    assert len(refused) == 1 and refused[0]["details"]["client_ip"] == "127.0.0.1"


@pytest.mark.parametrize("target", ["/tftp//etc/passwd", "/tftp/%2fetc/passwd", "/media/xs84//etc/passwd",
                                    "/tftp/%00", "/media/../etc/passwd", "/tftp/pxelinux.0%00.txt"])
def test_odd_paths_never_leak(server, target):
    status, body = raw_get(server, target)
    assert status in (308, 404)  # werkzeug redirects "//" to "/" (then 404); the rest are 404
    assert b"root:" not in body


def test_unknown_media_and_missing_files_are_404_json(server, store):
    for path in ("/media/nope/install.img", "/media/xs84/nope.img", "/tftp/nope.0", "/media/nope/"):
        resp = requests.get(url(server, path), timeout=10)
        assert resp.status_code == 404 and resp.json() == {"error": "not found"}, path
    assert store.events(kind="http.refused") == []  # a missing file is not an attack


def test_directories_are_404(server):
    for path in ("/media/xs84/", "/media/xs84/boot/", "/media/xs84/boot", "/tftp/grub/", "/tftp/pxelinux.0/"):
        resp = requests.get(url(server, path), timeout=10, allow_redirects=False)
        assert resp.status_code == 404, path


def test_post_is_not_allowed(server):
    assert requests.post(url(server, "/media/xs84/.treeinfo"), timeout=10).status_code == 405


def test_on_fetch_failure_does_not_break_the_download(config, store, tree, tftp_root):
    store.add_media(Media(name="xs84", path=str(tree), product_name="XenServer", product_version="8.4.0",
                          platform_version="3.4.0", build="1"))
    app = create_app(config.replace(tftp_root=tftp_root), store=store)

    def broken(**_kw):
        raise RuntimeError("timeline down")

    set_on_fetch(app, broken)
    handle = serve_http(app, "127.0.0.1", 0, threads=2)
    try:
        resp = requests.get(handle.url + "/media/xs84/boot/vmlinuz", timeout=10)
        assert resp.status_code == 200 and resp.content == b"K" * 1000
    finally:
        handle.stop()


# --- streaming ---

class RecordingWrapper:
    """A wsgi.file_wrapper that records what the app handed to the server."""

    def __init__(self, file, block_size=8192):
        self.file, self.block_size = file, block_size

    def __iter__(self):
        while chunk := self.file.read(self.block_size):
            yield chunk

    def close(self):
        self.file.close()


def test_large_file_is_handed_to_the_file_wrapper_not_read(config, store, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "install.img", "wb") as f:  # 50 MB sparse: costs no disk
        f.truncate(50 << 20)
    store.add_media(Media(name="big", path=str(big), product_name="XenServer", product_version="8.4.0",
                          platform_version="3.4.0", build="1"))
    app = create_app(config, store=store)
    from werkzeug.test import EnvironBuilder

    for headers, offset in (({}, 0), ({"Range": "bytes=1000-"}, 1000)):
        environ = EnvironBuilder(path="/media/big/install.img", headers=headers).get_environ()
        environ["wsgi.file_wrapper"] = RecordingWrapper
        started = []
        body = app(environ, lambda status, hdrs, exc=None: started.append((status, dict(hdrs))))
        try:
            # The app returned the server's file wrapper around the open file (so the server can
            # sendfile() it), positioned at the range start: no byte was read into memory.
            assert isinstance(body, RecordingWrapper)
            assert body.file.fileno() >= 0 and body.file.tell() == offset
            assert started[0][1]["Content-Length"] == str((50 << 20) - offset)
        finally:
            body.close()


def test_large_file_over_the_socket(config, store, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "install.img", "wb") as f:
        f.truncate(50 << 20)
        f.seek(25 << 20)
        f.write(b"middle")
    store.add_media(Media(name="big", path=str(big), product_name="XenServer", product_version="8.4.0",
                          platform_version="3.4.0", build="1"))
    handle = serve_http(create_app(config, store=store), "127.0.0.1", 0, threads=2)
    try:
        resp = requests.get(handle.url + "/media/big/install.img", stream=True, timeout=30)
        assert resp.headers["Content-Length"] == str(50 << 20)
        digest, total = hashlib.sha256(), 0
        for chunk in resp.iter_content(1 << 20):
            digest.update(chunk)
            total += len(chunk)
        expected = hashlib.sha256()
        with open(big / "install.img", "rb") as f:
            while chunk := f.read(1 << 20):
                expected.update(chunk)
        assert total == 50 << 20 and digest.hexdigest() == expected.hexdigest()
    finally:
        handle.stop()
