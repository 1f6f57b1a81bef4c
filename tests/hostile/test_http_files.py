"""Issue 15 findings 5 and 11 (files): a FIFO in tftp_root or a media tree blocked an HTTP worker thread forever
(40 requests took 15 of 16 threads); a path segment over 255 bytes or a symlink loop under /media/ or /tftp/
answered 500 with a traceback. Now every non-regular file is a 404 that never blocks, and so are both errors."""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from hostile_http import ARMED, BOOTED, boot, client_ip, get, serving


def _plant(srv) -> dict[str, str]:
    """Hostile files in both trees; name -> URL path."""
    tftp_root, tree = srv.rt.config.tftp_root, srv.tree
    os.mkfifo(tftp_root / "fifo")
    os.mkfifo(tree / "boot" / "fifo")
    os.symlink("loop", tftp_root / "loop")
    os.symlink("loop", tree / "loop")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tree / "sock"))  # a socket file: as unopenable as a FIFO is blocking
    unix.close()
    return {
        "tftp fifo": "/tftp/fifo", "media fifo": "/media/xs84/boot/fifo", "media socket": "/media/xs84/sock",
        "tftp symlink loop": "/tftp/loop", "media symlink loop": "/media/xs84/loop",
        "tftp loop inside a path": "/tftp/loop/x", "media loop inside a path": "/media/xs84/loop/x",
        "tftp segment > 255": "/tftp/" + "a" * 300, "media segment > 255": "/media/xs84/" + "a" * 300,
        "media path > PATH_MAX": "/media/xs84/" + "/".join(["b" * 250] * 20),
    }


def test_fifos_sockets_loops_and_long_names_are_404s_that_never_block(config, store, tmp_path):
    """40 concurrent GETs of FIFOs (more than the 16 worker threads), then every other hostile path, GET and
    HEAD: all 404, none waits; an armed host boots during and after."""
    with serving(config, store, tmp_path) as srv:
        paths = _plant(srv)
        fifos = [paths["tftp fifo"], paths["media fifo"]] * 20
        with ThreadPoolExecutor(max_workers=40) as pool:
            during = pool.submit(boot, srv, ARMED, client_ip(99))
            answers = list(pool.map(lambda i: get(srv.port, fifos[i], client_ip(i), timeout=15)[0],
                                    range(len(fifos))))
            assert during.result(timeout=60) == BOOTED
        assert answers == [404] * len(fifos)
        for name, path in paths.items():
            for method in ("GET", "HEAD"):
                assert get(srv.port, path, client_ip(50), timeout=15, method=method)[0] == 404, (name, method)
        assert get(srv.port, "/tftp/pxelinux.0", client_ip(51))[0] == 200  # regular files still served


@pytest.mark.parametrize("kind", ["fifo", "loop", "long"])
def test_serve_file_answers_404_directly(app, tmp_path, kind):
    """The same through serve_file() alone (no server): the 404 comes from the file handler itself."""
    from provisioner.web.files import serve_file

    root = tmp_path / "root"
    root.mkdir()
    name = {"fifo": "f", "loop": "l", "long": "c" * 256}[kind]
    if kind == "fifo":
        os.mkfifo(root / name)
    elif kind == "loop":
        os.symlink(name, root / name)
    with app.test_request_context(f"/tftp/{name}"):
        assert serve_file(root, name, kind="tftp_http").status_code == 404
