"""Issue 15 finding 2: 512 read requests never acknowledged (32 source addresses x 16) filled the global session
cap and TFTP stopped for everyone for ~25 s; repeated every 5 s, fresh clients got their config 5 times in 28.
Now: a full table evicts the oldest unacknowledged session of a bigger holder (guard.SessionCaps.admit), DATA 1
never acknowledged gets one resend cycle (pump.FIRST_RETRIES), and a refusal over a cap is an ERROR packet."""

from __future__ import annotations

from hostile_http import ARMED, serving, until
from hostile_tftp import bound, download, error_of, many_fds, pxe_name, rrq  # noqa: F401 (many_fds: fixture)

ROUNDS = 3


def attacker(n: int) -> str:
    return f"127.0.9.{1 + n}"


def flood(server: tuple[str, int], addresses: int = 32, per_address: int = 16) -> list:
    """`addresses` x `per_address` RRQs for pxelinux.0, each from its own port, never acknowledged (kept open)."""
    socks = []
    for a in range(addresses):
        for _ in range(per_address):
            sock = bound(attacker(a))
            sock.sendto(rrq("pxelinux.0"), server)
            socks.append(sock)
    return socks


def refusal(server: tuple[str, int], source: str, keep: list) -> tuple[int, str]:
    """More RRQs from `source` (held open) until one is refused; that ERROR's (code, message)."""
    for _ in range(2 * 16):  # the previous round's sessions may still be ending: a few more may get in
        sock = bound(source)
        keep.append(sock)
        sock.sendto(rrq("pxelinux.0"), server)
        found = error_of(sock.recvfrom(2048)[0])
        if found is not None:
            return found
    raise AssertionError(f"{source} was never refused")


def test_unacknowledged_flood_from_32_addresses_stops_nobody(config, store, tmp_path, many_fds):
    with serving(config, store, tmp_path) as srv:
        tftp = srv.rt.tftp
        server = tftp.address
        served = 0
        for round_ in range(ROUNDS):
            socks = flood(server)
            try:
                handled = 512 * (round_ + 1)
                assert until(lambda: tftp.counters["sessions"] + tftp.counters["refused"] >= handled, 30)
                assert tftp._caps.count <= config.tftp_max_sessions
                # One address gets its per-client cap, and an ERROR packet (code 3) past it, not silence.
                code, message = refusal(server, attacker(0), socks)
                assert code == 3 and "too many sessions" in message
                # During the flood: fresh clients get pxelinux.0, and the armed host its installer config.
                assert download(server, "pxelinux.0", f"127.0.8.{1 + round_}") == b"PXE" * 1000
                config_text = download(server, pxe_name(ARMED), "127.0.0.1")
                assert srv.attempt.token.encode() in config_text
                served += 1
            finally:
                for sock in socks:
                    sock.close()
        assert served == ROUNDS  # was: 5 of 28 tries
        assert tftp.counters["evicted"] >= 1  # the fresh clients got in by taking the flood's places
        # Sessions whose client never acknowledges DATA 1 (sockets kept open, so no ICMP ends them early) end
        # after one resend cycle (1 s + 2 s); with the full retries they lived 1+2+4+8+8+8 = 31 s.
        assert until(lambda: tftp._caps.count == 0, 20)
        socks = flood(server, addresses=4)
        try:
            assert until(lambda: tftp._caps.count == 64, 10)
            assert until(lambda: tftp._caps.count == 0, 20)
        finally:
            for sock in socks:
                sock.close()
    # ... and after it: a normal boot still works (the store's view of it as well).
    ended = [e for e in store.events(kind="tftp.aborted", limit=100_000) if not e["details"].get("sampled")]
    assert ended and all(e["details"]["first_block"] for e in ended if e["details"]["reason"] == "timeout")


def test_normal_boot_after_the_flood(config, store, tmp_path, many_fds):
    with serving(config, store, tmp_path) as srv:
        server = srv.rt.tftp.address
        socks = flood(server, addresses=8)
        for sock in socks:
            sock.close()
        assert srv.attempt.token.encode() in download(server, pxe_name(ARMED), "127.0.0.1")
        assert download(server, "pxelinux.0", "127.0.0.1") == b"PXE" * 1000
        srv.rt.events.drain()
        fetches = store.events(mac=ARMED, kind="attempt.fetch")
        assert fetches and fetches[-1]["details"]["client"] == "127.0.0.1"
