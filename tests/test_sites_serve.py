"""Sites with the shipped program: two `provisioner serve` processes of sites a and b on one real PostgreSQL
(tests/support/pg_server.py). Media imported for a is fetched by b's serve; a host of site b whose TFTP request
reaches a's serve gets b's URLs; both stop cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import urllib.error
import urllib.request

from helpers import serve_process
from hostile_http import tftp_get
from sim_helpers import until

from provisioner import media, registry
from provisioner.boot import attempts
from provisioner.config import load_config
from provisioner.demo import synthetic_media_tree
from provisioner.store import Store

MEDIA = "xs84"
HOST_B = "aa:bb:cc:00:02:0b"


def _port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _until(what: str, check, seconds: float = 90.0):
    return until(what, check, seconds, interval=0.3)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_two_serve_processes_of_two_sites_on_one_postgresql(tmp_path, pg_url):
    env, configs = {}, {}
    for site in ("a", "b"):
        http, tftp = _port(socket.SOCK_STREAM), _port(socket.SOCK_DGRAM)
        env[site] = {"PROVISIONER_DATABASE_URL": pg_url, "PROVISIONER_SITE": site,
                     "PROVISIONER_HTTP_PORT": str(http), "PROVISIONER_TFTP_PORT": str(tftp),
                     "PROVISIONER_PUBLIC_URL": f"http://127.0.0.1:{http}", "PROVISIONER_PXELINUX_HTTP": "1"}
        # the same configuration in this process (what `provisioner media add` with a's config file would do)
        configs[site] = load_config(file=None, environ={**env[site], "PROVISIONER_DATA_DIR": str(tmp_path / site / "d"),
                                                        "PROVISIONER_BIND_ADDRESS": "127.0.0.1",
                                                        "PROVISIONER_TFTP_ROOT": str(tmp_path / site / "root")})
    store = Store.from_config(configs["a"])
    url_a, url_b = configs["a"].base_url, configs["b"].base_url
    try:
        media.import_media(store, configs["a"], MEDIA, synthetic_media_tree(tmp_path / "tree"))
        with contextlib.ExitStack() as stack:
            procs = {}
            for site in ("a", "b"):
                (tmp_path / site).mkdir(exist_ok=True)
                procs[site] = stack.enter_context(serve_process(tmp_path / site, **env[site]))
                _until(f"serve {site} answers", lambda s=site: procs[s].poll() is None and _answers(
                    f"{configs[s].base_url}/metrics") or procs[s].poll() is not None)
                assert procs[site].poll() is None, procs[site].communicate()
            copy = _until("b's serve fetched the media", lambda: (lambda c: c if c and c.state != "syncing" else None)(
                store.media_copy(MEDIA, url_b)))
            assert copy.state == "ready", copy.error
            assert copy.path == str((tmp_path / "b" / "d" / "media" / MEDIA).resolve())
            assert {s.server: s.site for s in store.list_servers()} == {url_a: "a", url_b: "b"}
            with urllib.request.urlopen(f"{url_b}/media/{MEDIA}/boot/xen.gz", timeout=20) as response:
                assert response.read() == (tmp_path / "tree" / "boot" / "xen.gz").read_bytes()

            registry.add_host(store, {"mac": HOST_B, "name": "hb", "pool": "p", "site": "b",
                                      "disk": "/dev/disk/by-id/scsi-b"}, site="a")
            attempts.arm(store, configs["a"], HOST_B, MEDIA)
            tftp_a = ("127.0.0.1", configs["a"].tftp_port)
            text = tftp_get(tftp_a, "pxelinux.cfg/01-" + HOST_B.replace(":", "-"), "127.0.0.1").decode()
            assert f"{url_b}/media/{MEDIA}/" in text and url_a not in text
            assert _until("a's event", lambda: store.events(kind="boot.other_site"))[0]["details"]["urls_of"] == url_b

            for site in ("a", "b"):
                procs[site].send_signal(signal.SIGTERM)
                out, err = procs[site].communicate(timeout=60)
                assert procs[site].returncode == 0, err
    finally:
        store.close()
