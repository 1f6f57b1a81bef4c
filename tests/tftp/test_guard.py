"""Table tests of the pure TFTP rules: names, root confinement, options, caps, event budget, log fields."""

from __future__ import annotations

import os

import pytest

from provisioner.tftp import guard
from provisioner.tftp.guard import Refused


@pytest.mark.parametrize("raw, expected", [
    ("pxelinux.0", "pxelinux.0"),
    ("/pxelinux.0", "pxelinux.0"),
    ("//grub//grub.cfg-01-aa-bb-cc-dd-ee-ff", "grub/grub.cfg-01-aa-bb-cc-dd-ee-ff"),
    ("./EFI/./xenserver/grub.cfg", "EFI/xenserver/grub.cfg"),
    ("/etc/passwd", "etc/passwd"),  # absolute means "under the root", like tftp-hpa -s
    ("a..b/..c", "a..b/..c"),  # dots inside a name are not traversal
    ("..\\..\\etc\\passwd", "..\\..\\etc\\passwd"),  # one odd file name on Linux, not a path
])
def test_normalize_name_accepts(raw, expected):
    assert guard.normalize_name(raw) == expected


@pytest.mark.parametrize("raw, reason, code", [
    ("../../etc/passwd", guard.R_OUTSIDE, 2),
    ("/../etc/passwd", guard.R_OUTSIDE, 2),
    ("pxelinux.cfg/../../x", guard.R_OUTSIDE, 2),
    ("a/b/..", guard.R_OUTSIDE, 2),
    ("", guard.R_NOT_FOUND, 1),
    ("/", guard.R_NOT_FOUND, 1),
    ("/./", guard.R_NOT_FOUND, 1),
])
def test_normalize_name_refuses(raw, reason, code):
    with pytest.raises(Refused) as info:
        guard.normalize_name(raw)
    assert (info.value.reason, info.value.code) == (reason, code)


def test_confine_follows_symlinks_but_only_inside(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"s")
    (tmp_path / "root-sibling").mkdir()
    os.symlink("sub/real", root / "inside")
    os.symlink(tmp_path / "secret", root / "outside")
    os.symlink("../root-sibling", root / "sibling")  # prefix trap of tftpy#110: root-sibling starts with root
    assert guard.confine(root, "inside") == (root / "sub" / "real").resolve()
    assert guard.confine(root, "sub/real") == (root / "sub" / "real").resolve()
    for name in ("outside", "sibling/x", "sibling"):
        with pytest.raises(Refused) as info:
            guard.confine(root, name)
        assert info.value.reason == guard.R_OUTSIDE


@pytest.mark.parametrize("requested, expected", [
    ({}, {}),
    ({"blksize": "1468"}, {"blksize": "1468"}),
    ({"blksize": "65536"}, {"blksize": "1468"}),
    ({"BLKSIZE": "9000"}, {"blksize": "1468"}),  # option names are case-insensitive (RFC 2347)
    ({"blksize": "8"}, {"blksize": "8"}),
    ({"blksize": "7"}, {}),
    ({"blksize": "0"}, {}),
    ({"blksize": "-1"}, {}),
    ({"blksize": "abc"}, {}),
    ({"blksize": "1e3"}, {}),
    ({"blksize": "99999999999999999999"}, {"blksize": "1468"}),
    ({"blksize": " 512 "}, {"blksize": "512"}),
    ({"tsize": "0"}, {"tsize": "0"}),
    ({"tsize": "junk", "blksize": "0"}, {"tsize": "0"}),
    ({"timeout": "1", "windowsize": "16", "multicast": ""}, {}),
])
def test_negotiate(requested, expected):
    assert guard.negotiate(requested, 1468) == expected


def test_negotiate_never_exceeds_rfc_max():
    assert guard.negotiate({"blksize": "70000"}, 65535) == {"blksize": "65464"}


def test_session_caps_total_and_per_client():
    caps = guard.SessionCaps(total=3, per_client=2)
    assert caps.admit("10.0.0.1") is None
    caps.opened("10.0.0.1")
    caps.opened("10.0.0.1")
    with pytest.raises(Refused) as info:
        caps.admit("10.0.0.1")
    assert info.value.reason == guard.R_CLIENT_CAP
    caps.admit("10.0.0.2")
    caps.opened("10.0.0.2")
    with pytest.raises(Refused) as info:
        caps.admit("10.0.0.3")
    assert info.value.reason == guard.R_TOTAL_CAP
    caps.closed("10.0.0.1")
    caps.admit("10.0.0.3")
    caps.closed("10.0.0.1")
    caps.closed("10.0.0.2")
    assert caps.count == 0 and not caps.open


def test_a_full_table_evicts_the_oldest_unacknowledged_session_of_a_bigger_holder():
    caps = guard.SessionCaps(total=4, per_client=3)
    for sid, ip in enumerate(["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2"], start=1):
        caps.opened(ip, sid)
    caps.underway(1)  # acknowledged DATA 1: never evicted
    assert caps.admit("10.0.0.9") == 2  # holds 0 < 3 - 1: the oldest fresh session of the big holder goes
    caps.closed("10.0.0.1", 2)
    caps.opened("10.0.0.9", 5)
    with pytest.raises(Refused) as info:
        caps.admit("10.0.0.2")  # holds 1: taking one from a holder of 2 would leave 1 against 2, no better
    assert info.value.reason == guard.R_TOTAL_CAP and info.value.code == 0 and info.value.message
    caps.opened("10.0.0.1", 6)
    with pytest.raises(Refused) as info:
        caps.admit("10.0.0.1")
    assert info.value.reason == guard.R_CLIENT_CAP and info.value.code == 3
    caps.closed("10.0.0.1", 6)
    for sid in (3, 4, 5):
        caps.underway(sid)
    with pytest.raises(Refused):
        caps.admit("10.0.0.8")  # only sessions under way are left: nothing to evict
    caps.closed("10.0.0.1", 1)
    assert caps.admit("10.0.0.8") is None and not caps.fresh


def test_event_budget_counts_what_it_suppresses():
    clock = [0.0]
    budget = guard.EventBudget(rate=2.0, burst=3, clock=lambda: clock[0])
    results = [budget.take("a") for _ in range(10)] + [budget.take("b") for _ in range(2)]
    assert results[:3] == [1, 1, 1] and results[3:] == [None] * 9
    assert budget.flush() == {}  # no token left for a summary
    clock[0] += 0.5  # one token back
    assert budget.take("a") == 8  # itself and the 7 suppressed before it
    assert budget.take("a") is None
    clock[0] += 1.0
    assert budget.flush() == {"b": 2, "a": 1}
    assert budget.flush() == {}
    clock[0] += 100.0
    assert [budget.take("c") for _ in range(4)] == [1, 1, 1, None]


def test_log_extra_names_the_mac_the_callers_function_finds():
    def mac_of(name):
        if name == "boom":
            raise ValueError(name)
        return "aa:bb:cc:dd:ee:0f" if name.startswith("pxelinux.cfg/") else None

    assert guard.log_extra("pxelinux.cfg/01-aa-bb-cc-dd-ee-0f", mac_of) == {"mac": "aa:bb:cc:dd:ee:0f"}
    assert guard.log_extra("pxelinux.0", mac_of) == {"mac": None}
    assert guard.log_extra(None, mac_of) == {"mac": None}
    assert guard.log_extra("boom", mac_of) == {"mac": None}  # a log line never fails on a hostile name
    assert guard.log_extra("pxelinux.cfg/01-aa-bb-cc-dd-ee-0f", None) == {"mac": None}


def test_sessions_with_all_their_data_out_are_places_about_to_free():
    caps = guard.SessionCaps(total=3, per_client=2)
    for sid, ip in ((1, "10.0.0.1"), (2, "10.0.0.1"), (3, "10.0.0.2")):
        caps.opened(ip, sid)
    assert caps.ending(guard.R_CLIENT_CAP, "10.0.0.1") == 0 and caps.ending(guard.R_TOTAL_CAP, "10.0.0.9") == 0
    caps.all_out("10.0.0.1", 1)
    caps.all_out("10.0.0.1", 1)  # told twice, counted once
    caps.all_out("10.0.0.2", 3)
    assert caps.ending(guard.R_CLIENT_CAP, "10.0.0.1") == 1 and caps.ending(guard.R_CLIENT_CAP, "10.0.0.3") == 0
    assert caps.ending(guard.R_TOTAL_CAP, "10.0.0.9") == 2
    assert 1 not in caps.fresh  # all its data out: no longer evictable
    caps.closed("10.0.0.1", 1)
    caps.closed("10.0.0.2", 3)
    assert not caps.last and not caps.last_of and caps.count == 1


def test_parked_requests_wait_for_a_place_at_most_park_seconds():
    now = [100.0]
    parked = guard.Parked(clock=lambda: now[0])
    client_cap = Refused(guard.R_CLIENT_CAP, 3, "too many sessions from this client, retry later")
    total_cap = Refused(guard.R_TOTAL_CAP, 0, "server busy, retry later")
    assert not parked.park("10.0.0.1", 1000, b"rrq-a", "10.0.0.5", client_cap, room=0)  # nothing about to free
    assert parked.park("10.0.0.1", 1001, b"rrq-b", "10.0.0.5", client_cap, room=1, name="b")
    assert parked.park("10.0.0.1", 1001, b"rrq-b", "10.0.0.5", client_cap, room=1)  # its retransmission
    assert not parked.park("10.0.0.1", 1002, b"rrq-c", "10.0.0.5", client_cap, room=1)  # the one place is spoken for
    assert parked.park("10.0.0.2", 1003, b"rrq-d", "10.0.0.5", client_cap, room=1)  # another client's own place
    assert parked.park("10.0.0.3", 1004, b"rrq-e", "10.0.0.5", total_cap, room=1, name="e")
    assert parked.next_deadline() == 100.0 + guard.Parked.PARK_SECONDS
    taken = parked.take()  # a place freed: all are decided again, keeping their deadlines
    assert [(ip, port, data) for ip, port, _, data, _ in taken] == [
        ("10.0.0.1", 1001, b"rrq-b"), ("10.0.0.2", 1003, b"rrq-d"), ("10.0.0.3", 1004, b"rrq-e")]
    assert not parked.waiting and parked.next_deadline() is None
    deadline = taken[0][2]
    assert parked.park("10.0.0.1", 1001, b"rrq-b", "10.0.0.5", client_cap, room=1, deadline=deadline, name="b")
    now[0] += guard.Parked.PARK_SECONDS / 2
    assert parked.expired() == []
    now[0] += guard.Parked.PARK_SECONDS
    assert parked.expired() == [("10.0.0.1", 1001, "10.0.0.5", client_cap, "b")]
    assert not parked.waiting
