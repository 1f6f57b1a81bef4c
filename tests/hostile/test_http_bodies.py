"""Issue 15 finding 6: an unauthenticated 1,000 MB POST was spooled to the temporary directory (996 MB) before
the 401. Now the body gate answers from the headers alone: nothing of an unauthenticated body is read, an
authenticated one over http_max_body_bytes is a 413, boot and file URLs take no body at all."""

from __future__ import annotations

import os
import tempfile

import pytest
import requests

from helpers import API_TOKEN
from hostile_http import ARMED, BOOTED, boot, client_ip, raw_connection, serving
from ui_helpers import csrf_of

GIB = 1 << 30


def _spool_files() -> int:
    """Open files of this process in the temporary directory: where waitress spools bodies past 512 KB. The store's
    own files are not counted (its data dir is under the temporary directory too, and the audit trail opens a
    connection per serving thread: docs/audit.md)."""
    where = os.path.realpath(tempfile.gettempdir())
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += name.startswith(where + "/") and not name.endswith((".db", ".db-wal", ".db-shm", ".sqlite"))
    return count


def _answer(port: int, head: str, source: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send the request head (and `body`, never the rest it announces); the status line and what followed."""
    sock = raw_connection(port, source, timeout=20)
    try:
        sock.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]), data
    finally:
        sock.close()


def _post(path: str, length: int | None, *extra: str) -> str:
    size = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: x", size, *extra, "", ""])


BEARER = f"Authorization: Bearer {API_TOKEN}"
CASES = [
    # (what, path, announced length (None: chunked), extra headers, status)
    ("no token, 1 GB CSV import", "/api/v1/hosts/import", GIB, (), 401),
    ("wrong token, 1 GB", "/api/v1/hosts", GIB, ("Authorization: Bearer " + "x" * 32,), 401),
    ("no token, chunked", "/api/v1/hosts", None, (), 401),
    ("right token, over http_max_body_bytes", "/api/v1/hosts/import", GIB, (BEARER,), 413),
    ("a body to a boot URL", "/boot/ipxe/52-54-00-15-00-01", 5 << 20, (), 413),
    ("a body to a file URL", "/media/xs84/install.img", 5 << 20, (), 413),
    ("a chunked body to a boot URL", "/boot/report/x/0", None, (), 411),
    ("no session, 1 GB dashboard upload", "/ui/hosts/import", GIB, (), 302),  # the dashboard's login redirect
]


@pytest.mark.parametrize("what,path,length,extra,status", CASES, ids=[c[0] for c in CASES])
def test_bodies_are_judged_on_their_headers(config, store, tmp_path, what, path, length, extra, status):
    """Each request sends its head and 1 MB of the body it announces (past waitress' 512 KB in-memory buffer):
    the answer comes without the rest, and no temporary file was opened for it. An armed host boots after."""
    with serving(config, store, tmp_path, http_max_body_bytes=16 << 20) as srv:
        before = _spool_files()
        got, head = _answer(srv.port, _post(path, length, *extra), client_ip(1),
                            body=b"" if length is None else b"x" * min(length, 1 << 20))
        assert got == status, head
        assert b"Connection: close" in head  # the unread rest can never be taken for a next request
        assert _spool_files() == before
        assert boot(srv, ARMED, client_ip(2)) == BOOTED


def test_dropped_bodies_still_count_as_failed_authentications(config, store, tmp_path):
    """The gate drops an unauthenticated API body and lets the API answer, so guessing tokens with POSTs is
    throttled like any other failed authentication (10 in 5 minutes, then 429)."""
    with serving(config, store, tmp_path) as srv:
        statuses = [_answer(srv.port, _post("/api/v1/hosts", 100, f"Authorization: Bearer wrong-{i:026d}"),
                            client_ip(7), body=b"{}")[0] for i in range(12)]
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]


def test_authenticated_and_small_bodies_are_read(config, store, tmp_path):
    """What the gate admits works: an API call with the token, the dashboard login form without a session, and
    a 200 KB CSV upload (over the 64 KB a form may have without one) from a logged-in dashboard session."""
    body = b'{"mac": "52:54:00:15:00:09", "name": "ok", "pool": "p", "disk": "/dev/sda"}'
    with serving(config, store, tmp_path) as srv:
        head = _post("/api/v1/hosts", len(body), BEARER, "Content-Type: application/json")
        assert _answer(srv.port, head, client_ip(1), body)[0] == 201
        base, browser = f"http://127.0.0.1:{srv.port}", requests.Session()
        login = browser.post(f"{base}/ui/login", allow_redirects=False, timeout=20, data={
            "token": API_TOKEN, "csrf_token": csrf_of(browser.get(f"{base}/ui/login", timeout=20).text)})
        assert login.status_code == 303
        csv = "mac,name,pool,disk,notes\n" + "".join(
            f"52:54:00:16:{i // 256:02x}:{i % 256:02x},n{i},p,/dev/sda,{'x' * 150}\n" for i in range(1200))
        assert len(csv) > 200_000
        upload = browser.post(f"{base}/ui/hosts/import", allow_redirects=False, timeout=60, data={
            "csrf_token": csrf_of(browser.get(f"{base}/ui/hosts", timeout=20).text)},
            files={"csv": ("hosts.csv", csv.encode())})
        assert upload.status_code == 303 and upload.headers["Location"].endswith("/ui/hosts")
        assert len(store.list_hosts(pool="p")) == 1 + 1 + 1200  # the armed host, the API's, the CSV's


GATE = [
    # (path, headers, length (None: chunked), verdict)
    ("/api/v1/hosts", {}, 10, "drop"),
    ("/api/v1/hosts", {"AUTHORIZATION": f"Bearer {API_TOKEN}"}, 10, None),
    ("/api/v1/hosts", {"AUTHORIZATION": f"bearer  {API_TOKEN} "}, None, None),  # scheme case, spaces
    ("/api/v1/hosts", {"AUTHORIZATION": f"Basic {API_TOKEN}"}, 10, "drop"),
    ("/api/v1/hosts", {"AUTHORIZATION": f"Bearer {API_TOKEN}x"}, 10, "drop"),
    ("/ui/login", {}, 64 * 1024, None),
    ("/ui/login", {}, 64 * 1024 + 1, "drop"),
    ("/ui/hosts/import", {"COOKIE": "provisioner_ui=forged.value.sig"}, 1 << 20, "drop"),
    ("/ui/hosts/import", {}, None, "drop"),
    ("/boot/ipxe/x", {"AUTHORIZATION": f"Bearer {API_TOKEN}"}, 1, (413, "this URL takes no request body")),
    ("/media/xs84/install.img", {}, None, (411, "a chunked request body is not accepted here")),
    ("/ui", {}, 10, (413, "this URL takes no request body")),
]


@pytest.mark.parametrize("path,headers,length,verdict", GATE)
def test_gate_table(app, path, headers, length, verdict):
    from provisioner.web.gate import body_gate

    assert body_gate(app)("POST", path, headers, length) == verdict


def test_no_api_token_means_no_api_body(app, config):
    from provisioner import create_app
    from provisioner.web.access import get_store
    from provisioner.web.gate import body_gate

    gate = body_gate(create_app(config.replace(api_token=""), store=get_store(app)))
    assert gate("POST", "/api/v1/hosts", {"AUTHORIZATION": "Bearer "}, 10) == "drop"
