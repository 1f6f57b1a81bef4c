"""Issue 15 finding 7: anyone who read a host's boot config (TFTP pxelinux.cfg/01-<mac>, GRUB, or the iPXE script)
had its attempt token, fetched the answer file first (the real host then got 404), closed the window with the
start script and reported "success"; in the lab flow the same race handed out the root password hash.

Now the answer file, the scripts and the report are honoured only for the booting host: the first address that
fetched this attempt's boot config, or the host's registered IP (config key attempt_client_binding). The thief
is 127.0.0.9, the host 127.0.0.1 (every address in 127/8 is loopback on Linux; each socket binds its source).
"""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest
from hostile_http import ARMED, get, serving, tftp_get

from provisioner import states
from provisioner.boot import attempts

HOST, THIEF, INSTALLER = "127.0.0.1", "127.0.0.9", "127.0.0.5"
DASHED = ARMED.replace(":", "-")
FRESH_HASH = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"


def boot_config(srv, source: str, protocol: str) -> bytes:
    """The per-MAC boot config as `source` reads it: TFTP pxelinux or GRUB name, or the HTTP iPXE script."""
    if protocol == "ipxe":  # on BIOS it chains to pxelinux.0, which reads its per-MAC config (docs/firmware.md)
        status, body = get(srv.port, f"/boot/ipxe/{DASHED}", source)
        assert status == 200 and b"chain ${210:string}pxelinux.0" in body, body
        protocol = "pxelinux"
    name = f"pxelinux.cfg/01-{DASHED}" if protocol == "pxelinux" else f"grub/grub.cfg-01-{DASHED}"
    return tftp_get(srv.rt.tftp.address, name, source)


def settled(srv) -> None:
    """Let the TFTP thread's queued fetch records (the binding among them) land before reading the store."""
    assert srv.rt.events.drain()


def token_in(config_body: bytes) -> str:
    found = re.search(rb"/boot/answerfile/([A-Za-z0-9_-]{16,128})", config_body)
    assert found, config_body
    return found.group(1).decode()


def foreign(store) -> list[dict]:
    return [e["details"] for e in store.events(mac=ARMED, kind=attempts.FOREIGN)]


def installer(srv, token: str, source: str) -> dict[str, tuple[int, bytes]]:
    """What the installer does with its token: answer file, start script, complete script, report 0."""
    return {"answerfile": get(srv.port, f"/boot/answerfile/{token}", source),
            "start": get(srv.port, f"/boot/script/{token}/installation-start", source),
            "complete": get(srv.port, f"/boot/script/{token}/installation-complete", source),
            "report": get(srv.port, f"/boot/report/{token}/0", source)}


@pytest.mark.parametrize("protocol", ["pxelinux", "grub", "ipxe"])
def test_a_thief_after_the_host_gets_nothing_and_the_host_installs(config, store, tmp_path, protocol):
    with serving(config, store, tmp_path) as srv:
        token = token_in(boot_config(srv, HOST, protocol))  # the host PXE-boots first: the attempt is bound to it
        assert token_in(boot_config(srv, THIEF, protocol)) == token  # PXE has no secrets: the thief reads it too
        # The boot files carry no secret and are not bound: the thief may download them.
        assert get(srv.port, "/media/xs84/boot/vmlinuz", THIEF)[0] == 200

        settled(srv)
        stolen = installer(srv, token, THIEF)
        assert stolen["answerfile"][0] == 403 and b"<installation" not in stolen["answerfile"][1]
        for step in ("start", "complete"):  # 200 and a valid script (a failed GET aborts a real installer) ...
            status, body = stolen[step]
            assert status == 200 and body.startswith(b"#!/bin/sh\n") and b"exit 0" in body
            assert b"window is now closed" not in body and b"/boot/report/" not in body  # ... that does nothing
        attempt = store.get_attempt(srv.attempt.id)
        assert (attempt.state, attempt.runs, attempt.boot_client) == (states.ARMED, 0, HOST)  # nothing counted
        assert [(e["what"], e["client"], e["bound_to"]) for e in foreign(store)] == [
            ("answerfile", THIEF, HOST), ("start", THIEF, HOST), ("complete-script", THIEF, HOST),
            ("report", THIEF, HOST)]

        done = installer(srv, token, HOST)  # the real installer, from the address that booted
        assert done["answerfile"][0] == 200 and b'<installation mode="upgrade">' in done["answerfile"][1]
        assert b"window is now closed" in done["start"][1] and b"/boot/report/" in done["complete"][1]
        attempt = store.get_attempt(srv.attempt.id)
        assert (attempt.state, attempt.runs, attempt.exit_code) == (states.SUCCEEDED, 1, 0)


def test_an_installer_quicker_than_the_queued_binding_is_still_served(config, store, tmp_path):
    """The TFTP thread queues its fetch record (the binding with it) while another writer holds SQLite's lock;
    the host's answer-file GET arriving meanwhile waits for the queue (boot/answers.py _settle), not a 403."""
    with serving(config, store, tmp_path) as srv:
        other = sqlite3.connect(config.db_path, isolation_level=None)
        answer: list[tuple[int, bytes]] = []
        try:
            other.execute("BEGIN IMMEDIATE")  # e.g. a big CSV import
            token = token_in(boot_config(srv, HOST, "pxelinux"))
            assert store.get_attempt(srv.attempt.id).boot_client is None  # queued, not yet written
            fetch = threading.Thread(target=lambda: answer.append(get(srv.port, f"/boot/answerfile/{token}", HOST)))
            fetch.start()
            fetch.join(1.0)  # give it a moment to be waiting; if it had not even started, the outcome is the same
        finally:
            other.execute("ROLLBACK")
            other.close()
        fetch.join(60)
        assert answer and answer[0][0] == 200 and b'<installation mode="upgrade">' in answer[0][1]
        assert foreign(store) == [] and store.get_attempt(srv.attempt.id).boot_client == HOST


def test_the_lab_flow_hands_the_password_hash_only_to_the_booting_host(config, store, tmp_path):
    with serving(config, store, tmp_path) as srv:
        attempts.disarm(store, ARMED)
        reinstall = store.create_reinstall(ARMED, "p", "xs84", host_name="victim", forget_first=False,
                                           old_uuid=None, old_pool=None, host_url="http://10.0.0.11/",
                                           network={"mode": "dhcp"}, root_password_hash=FRESH_HASH)
        fresh = attempts.arm_fresh_install(store, reinstall.id)
        token = token_in(boot_config(srv, HOST, "pxelinux"))
        assert token == fresh.token and token_in(boot_config(srv, THIEF, "pxelinux")) == token
        status, body = get(srv.port, f"/boot/answerfile/{token}", THIEF)
        assert status == 403 and FRESH_HASH.encode() not in body
        assert store.get_reinstall(reinstall.id).root_password_hash == FRESH_HASH  # not served: still kept
        status, body = get(srv.port, f"/boot/answerfile/{token}", HOST)
        assert status == 200 and FRESH_HASH.encode() in body and b"<installation>" in body
        assert store.get_reinstall(reinstall.id).root_password_hash is None  # served once, then dropped


def test_a_thief_that_reads_the_boot_config_before_the_host_still_wins(config, store, tmp_path):
    """The residual risk README "Trust model" states: whoever fetches the boot config FIRST is the booting host.
    The thief gets the answer file; the real host is refused and the event shows whom the attempt went to."""
    with serving(config, store, tmp_path) as srv:
        token = token_in(boot_config(srv, THIEF, "pxelinux"))
        token_in(boot_config(srv, HOST, "pxelinux"))  # a later fetcher does not rebind the attempt
        settled(srv)
        assert store.get_attempt(srv.attempt.id).boot_client == THIEF
        assert get(srv.port, f"/boot/answerfile/{token}", THIEF)[0] == 200
        assert get(srv.port, f"/boot/answerfile/{token}", HOST)[0] == 403
        assert [(e["what"], e["client"], e["bound_to"]) for e in foreign(store)] == [("answerfile", HOST, THIEF)]


def test_the_installer_may_come_from_the_registered_ip(config, store, tmp_path):
    """The firmware booted from one address, the installer's new DHCP lease is another: the host's registered IP
    is admitted as well; any third address is not."""
    with serving(config, store, tmp_path) as srv:
        store.update_host(ARMED, {"ip": INSTALLER})
        token = token_in(boot_config(srv, HOST, "grub"))
        assert get(srv.port, f"/boot/answerfile/{token}", THIEF)[0] == 403
        done = installer(srv, token, INSTALLER)
        assert done["answerfile"][0] == 200 and b"window is now closed" in done["start"][1]
        assert store.get_attempt(srv.attempt.id).state == states.SUCCEEDED


def test_binding_off_serves_any_address_which_is_its_cost(config, store, tmp_path):
    """attempt_client_binding = false (a DHCP server that leases the installer another address): the installer
    gets its answer file from anywhere, and so does a thief: first come, first served, as before issue 15."""
    with serving(config, store, tmp_path, attempt_client_binding=False) as srv:
        token = token_in(boot_config(srv, HOST, "pxelinux"))
        assert get(srv.port, f"/boot/answerfile/{token}", THIEF)[0] == 200
        assert get(srv.port, f"/boot/answerfile/{token}", HOST)[0] == 404  # the one-shot is gone
        assert foreign(store) == []


def test_a_looping_thief_writes_a_bounded_number_of_events(config, store, tmp_path):
    with serving(config, store, tmp_path) as srv:
        token = token_in(boot_config(srv, HOST, "ipxe"))
        for _ in range(3 * attempts.FOREIGN_EVENTS_PER_ATTEMPT):
            assert get(srv.port, f"/boot/answerfile/{token}", THIEF)[0] == 403
        rows = foreign(store)
        assert len(rows) == attempts.FOREIGN_EVENTS_PER_ATTEMPT and "not logged" in rows[-1]["note"]
        assert get(srv.port, f"/boot/answerfile/{token}", HOST)[0] == 200  # the host still installs


@pytest.mark.parametrize("raw, shown", [
    ("127.0.0.1", "127.0.0.1"), ("::ffff:10.0.0.5", "10.0.0.5"), ("::1", "::1"), ("fe80::0001", "fe80::1"),
    (None, None), ("not an address", "not an address"),
])
def test_one_spelling_per_address(raw, shown):
    """A dual-stack HTTP socket reports '::ffff:a.b.c.d' for the host whose TFTP request came from a.b.c.d."""
    assert attempts.address(raw) == shown
