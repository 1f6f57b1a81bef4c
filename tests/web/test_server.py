"""The WSGI server adapter: port 0, clean stop, clear startup errors, sendfile bodies, no pinned workers."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import struct
import subprocess
import sys
import threading

import pytest
import requests
from waitress.buffers import ReadOnlyFileBasedBuffer

from provisioner.web.server import HTTPServerError, _sendfile_fd, serve_http


def file_app(path, *, offset=0, length=None):
    """A plain WSGI app: /file streams `path` through wsgi.file_wrapper, anything else says hello."""

    def app(environ, start_response):
        if environ["PATH_INFO"] != "/file":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return [b"hello"]
        f = open(path, "rb")
        f.seek(offset)
        size = os.path.getsize(path) - offset if length is None else length
        start_response("200 OK", [("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 65536)

    return app


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(4 << 20) + b"tail")
    return path


@pytest.fixture
def big_sparse(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # above waitress's 16 MB default high watermark
    return path


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_port_zero_serves_and_stops(data_file):
    handle = serve_http(file_app(data_file), "127.0.0.1", 0)
    assert handle.port > 0 and handle.url == f"http://127.0.0.1:{handle.port}"
    assert requests.get(handle.url + "/", timeout=10).text == "hello"
    handle.stop()
    assert refused(handle.port)
    handle.stop()  # idempotent


def test_file_wrapper_body_is_exact(data_file):
    handle = serve_http(file_app(data_file), "127.0.0.1", 0)
    try:
        resp = requests.get(handle.url + "/file", timeout=30)
        assert resp.status_code == 200 and resp.content == data_file.read_bytes()
        assert resp.headers["Server"] == "provisioner"
    finally:
        handle.stop()


def test_file_wrapper_honours_position_and_content_length(data_file):
    # files.py relies on this for ranges that run to EOF: the file is positioned, the length is the rest.
    handle = serve_http(file_app(data_file, offset=1000, length=5000), "127.0.0.1", 0)
    try:
        resp = requests.get(handle.url + "/file", timeout=30)
        assert resp.content == data_file.read_bytes()[1000:6000]
    finally:
        handle.stop()


class NoReadFile(io.FileIO):
    """A real file whose read() fails: a body that arrives intact was sent by sendfile(), not Python."""

    def read(self, *_args):
        raise AssertionError("read() called: the body went through Python")

    readinto = readall = read


def test_file_bodies_go_through_sendfile_not_python(data_file):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(data_file.stat().st_size - 10))])
        f = NoReadFile(data_file)
        f.seek(10)
        return environ["wsgi.file_wrapper"](f, 65536)

    handle = serve_http(app, "127.0.0.1", 0)
    try:
        with requests.Session() as session:
            for _ in range(3):  # one kept-alive connection: each body ends exactly at Content-Length
                assert session.get(handle.url + "/", timeout=30).content == data_file.read_bytes()[10:]
    finally:
        handle.stop()


def test_sendfile_is_chosen_for_real_files_only(data_file):
    with open(data_file, "rb") as f:
        assert _sendfile_fd(ReadOnlyFileBasedBuffer(f)) == f.fileno()
    assert _sendfile_fd(ReadOnlyFileBasedBuffer(io.BytesIO(b"x"))) is None  # no fileno: read + send
    assert _sendfile_fd(object()) is None


def test_concurrent_downloads(data_file):
    handle = serve_http(file_app(data_file), "127.0.0.1", 0, threads=4)
    expected = hashlib.sha256(data_file.read_bytes()).hexdigest()
    results = []

    def fetch():
        results.append(hashlib.sha256(requests.get(handle.url + "/file", timeout=60).content).hexdigest())

    try:
        workers = [threading.Thread(target=fetch) for _ in range(12)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert results == [expected] * 12
    finally:
        handle.stop()


def test_stalled_download_does_not_pin_the_only_worker(big_sparse):
    # A host that stops reading install.img must not starve config/answer-file requests.
    handle = serve_http(file_app(big_sparse), "127.0.0.1", 0, threads=1, loops=1)
    stalled = socket.create_connection(("127.0.0.1", handle.port))
    try:
        stalled.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stalled.recv(100).startswith(b"HTTP/1.1 200")
        assert requests.get(handle.url + "/", timeout=20).text == "hello"
    finally:
        stalled.close()
        handle.stop()


def test_client_reset_mid_download_then_next_client_served(big_sparse):
    handle = serve_http(file_app(big_sparse), "127.0.0.1", 0, threads=2)
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", handle.port))
            sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(65536)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            sock.close()
        resp = requests.get(handle.url + "/file", timeout=60)
        assert len(resp.content) == 64 << 20
    finally:
        handle.stop()


def test_file_truncated_mid_download_closes_instead_of_spinning(big_sparse):
    handle = serve_http(file_app(big_sparse), "127.0.0.1", 0, loops=1)
    sock = socket.create_connection(("127.0.0.1", handle.port), timeout=20)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        received = len(sock.recv(65536))
        os.truncate(big_sparse, 1 << 20)  # e.g. an ISO re-extracted over the served tree
        while chunk := sock.recv(1 << 20):  # the server must close (a timeout here fails the test)
            received += len(chunk)
        assert received < 64 << 20
        assert requests.get(handle.url + "/", timeout=10).text == "hello"
    finally:
        sock.close()
        handle.stop()


def test_stop_during_a_download_frees_the_port(big_sparse):
    handle = serve_http(file_app(big_sparse), "127.0.0.1", 0)
    sock = socket.create_connection(("127.0.0.1", handle.port))
    try:
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(65536)
        handle.stop()
        assert not any(t.is_alive() for t in handle._threads)
        again = serve_http(file_app(big_sparse), "127.0.0.1", handle.port)
        again.stop()
    finally:
        sock.close()


def test_serves_with_file_descriptors_above_1024(data_file):
    # select() cannot watch fd >= 1024 (the tftpy trap); the server must use poll().
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        handle = serve_http(file_app(data_file), "127.0.0.1", 0)
        try:
            assert requests.get(handle.url + "/", timeout=10).text == "hello"
            assert requests.get(handle.url + "/file", timeout=30).content == data_file.read_bytes()
        finally:
            handle.stop()
    finally:
        for fd in fds:
            os.close(fd)


def test_port_in_use_is_a_clear_error(data_file):
    first = serve_http(file_app(data_file), "127.0.0.1", 0)
    try:
        with pytest.raises(HTTPServerError, match=rf"127\.0\.0\.1:{first.port}.*port {first.port} is already in use"):
            serve_http(file_app(data_file), "127.0.0.1", first.port)
    finally:
        first.stop()


def test_address_not_on_this_machine_is_a_clear_error(data_file):
    # 192.0.2.1 is TEST-NET-1: never configured here, and bind() sends nothing.
    with pytest.raises(HTTPServerError, match=r"192\.0\.2\.1:8080.*not configured") as info:
        serve_http(file_app(data_file), "192.0.2.1", 8080)
    assert info.value.__cause__.errno == errno.EADDRNOTAVAIL


def test_permission_denied_on_port_80_is_a_clear_error():
    # Root has CAP_NET_BIND_SERVICE: drop to nobody after the imports, as a non-root operator would be.
    script = (
        "import encodings.idna, os\n"  # (imports a nobody could not read under /root)
        "from provisioner.web.server import HTTPServerError, serve_http\n"
        "if os.geteuid() == 0:\n"
        "    os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    serve_http(lambda e, s: [], '127.0.0.1', 80).stop()\n"
        "    print('STARTED')\n"
        "except HTTPServerError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd="/")
    assert "cannot listen on 127.0.0.1:80: permission denied (port 80 < 1024" in out.stdout, out.stderr
