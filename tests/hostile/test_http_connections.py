"""Issue 15 finding 1: one client holding ~2,000 idle connections (2 loops x connection_limit 1000, headers
trickled once per 120 s) stopped HTTP for everyone. Now: a per-address cap at accept time shared by every loop
(http_max_connections_per_client) and a header timeout (http_header_timeout); downloads keep channel_timeout."""

from __future__ import annotations

import socket
import time

from hostile_http import (ARMED, BIG_FILE, BOOTED, boot, client_ip, closed_by_server, get, raw_connection,
                          serving, until)

ATTACKER = "127.0.1.1"


def test_one_address_holding_many_idle_connections_stops_nobody(config, store, tmp_path):
    """The attacker opens 3x its cap of idle connections: it keeps exactly its cap, fresh clients and an armed
    host's boot are served during the attack and after it; its slots come back when it lets go."""
    cap = 64
    with serving(config, store, tmp_path, http_max_connections_per_client=cap, http_header_timeout=60) as srv:
        held = [raw_connection(srv.port, ATTACKER) for _ in range(3 * cap)]
        try:
            assert until(lambda: sum(not closed_by_server(s) for s in held) == cap, 20)
            assert srv.rt.http.open_connections(ATTACKER) == cap
            assert srv.rt.http.counters()["refused_connections"] >= 2 * cap
            for n in range(10):  # ten other clients get their iPXE script while the attacker holds its cap
                # (each is answered at all: before, every request timed out; how fast is bench/boot_storm_bench.py's)
                status, body = get(srv.port, "/boot/ipxe/52-54-00-aa-00-01", client_ip(n), timeout=10)
                assert status == 200 and body.startswith(b"#!ipxe")
            assert boot(srv, ARMED, client_ip(20)) == BOOTED
        finally:
            for sock in held:
                sock.close()
        assert until(lambda: srv.rt.http.open_connections(ATTACKER) == 0, 20)
        # the attacker itself is an ordinary client again once it holds nothing
        assert get(srv.port, "/boot/ipxe/52-54-00-aa-00-02", ATTACKER)[0] == 200


def _trickle(sock, byte: bytes) -> None:
    """One byte per ~0.3 s until the server closes the connection (at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not closed_by_server(sock, wait=0.3):
        try:
            sock.sendall(byte)
        except OSError:
            break


def test_trickled_and_silent_connections_are_closed_after_the_header_timeout(config, store, tmp_path):
    """Headers sent a byte at a time (never finished), a login form's body sent a byte at a time, and a
    connection that sends nothing: all closed after http_header_timeout (2 s here), though each trickled byte
    is activity that waitress' channel_timeout (120 s between bytes) would accept forever."""
    with serving(config, store, tmp_path, http_header_timeout=2) as srv:
        silent = raw_connection(srv.port, ATTACKER)
        headers = raw_connection(srv.port, ATTACKER)
        headers.sendall(b"GET /boot/ipxe/52-54-00-aa-00-01 HTTP/1.1\r\n")
        _trickle(headers, b"X")
        form = raw_connection(srv.port, ATTACKER)
        form.sendall(b"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n\r\ntoken=")
        _trickle(form, b"a")
        for sock in (headers, form, silent):
            assert closed_by_server(sock, wait=5)
        assert srv.rt.http.counters()["header_timeouts"] >= 3
        assert until(lambda: srv.rt.http.open_connections(ATTACKER) == 0, 10)
        assert boot(srv, ARMED, client_ip(1)) == BOOTED
        for sock in (headers, form, silent):
            sock.close()


def test_a_slow_download_outlives_the_header_timeout(config, store, tmp_path):
    """A 32 MB media file read slowly for longer than the header timeout still arrives whole: the timeout is
    for connections waiting for headers, not for responses in flight."""
    with serving(config, store, tmp_path, http_header_timeout=1) as srv:
        sock = raw_connection(srv.port, client_ip(3), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /media/xs84/{BIG_FILE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received, started = 0, time.monotonic()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
            if time.monotonic() - started < 3:
                time.sleep(0.05)  # slow for 3 s (3x the header timeout), then as fast as it comes
            if received >= (32 << 20):
                break
        sock.close()
        assert time.monotonic() - started > 3
        assert received > 32 << 20  # headers + the whole body


def test_a_slow_authenticated_upload_outlives_the_header_timeout(config, store, tmp_path):
    """A 700 KB CSV (past the 512 KB kept in memory, so only an authenticated client may send it) sent over
    ~3 s with a 1 s header timeout is read to the end and judged by the API."""
    from helpers import API_TOKEN

    body = b"mac,name,pool\n" + b"not-a-mac,x,p\n" * 50_000
    with serving(config, store, tmp_path, http_header_timeout=1) as srv:
        sock = raw_connection(srv.port, client_ip(4), timeout=30)
        sock.sendall(b"POST /api/v1/hosts/import HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                     b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        started = time.monotonic()
        for i in range(0, len(body), 64 * 1024):
            sock.sendall(body[i:i + 64 * 1024])
            time.sleep(0.3)
        assert time.monotonic() - started > 2
        answer = sock.recv(65536)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 422 ")  # every row is bad: all or nothing, nothing imported
