"""policy.decide(): the one per-MAC answer, as a table of (host, attempt, time) -> action."""

import dataclasses
import datetime as dt

import pytest

from provisioner import states
from provisioner.boot import policy
from provisioner.model import Attempt, Host

MAC = "52:54:00:12:34:56"
HOST = Host.from_fields({"mac": MAC, "name": "h1", "pool": "p", "disk": "/dev/sda"})
NOW = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def attempt(**changes):
    base = Attempt(id=7, mac=MAC, media="xs84", token="t" * 32, state=states.ARMED, max_runs=1, runs=0)
    return dataclasses.replace(base, **changes)


CASES = [
    # (case, host, attempt, expected action, words in the reason)
    ("unknown MAC", None, None, policy.DEFAULT, "unknown MAC"),
    ("unknown MAC with a stray attempt", None, attempt(), policy.DEFAULT, "never an installer"),
    ("known, never armed", HOST, None, policy.LOCAL_BOOT, "not armed"),
    ("armed", HOST, attempt(), policy.INSTALLER, "attempt 7 armed for media xs84"),
    ("armed, two runs allowed, one used", HOST, attempt(max_runs=2, runs=1), policy.INSTALLER, "armed"),
    ("armed, run used, no start script", HOST, attempt(runs=1), policy.LOCAL_BOOT, "used its 1 installer run"),
    ("armed, window still open", HOST, attempt(window_until="2025-01-01T12:00:01.000+00:00"),
     policy.INSTALLER, "armed"),
    ("armed, window closed", HOST, attempt(window_until="2025-01-01T11:59:59.999+00:00"),
     policy.LOCAL_BOOT, "window closed"),
    ("started (window closed by the start script)", HOST, attempt(state=states.STARTED), policy.LOCAL_BOOT,
     "is started"),
    ("succeeded", HOST, attempt(state=states.SUCCEEDED), policy.LOCAL_BOOT, "is succeeded"),
    ("failed", HOST, attempt(state=states.FAILED), policy.LOCAL_BOOT, "is failed"),
    ("disarmed", HOST, attempt(state=states.DISARMED), policy.LOCAL_BOOT, "is disarmed"),
    ("expired", HOST, attempt(state=states.EXPIRED), policy.LOCAL_BOOT, "is expired"),
    ("attempt of another MAC", HOST, attempt(mac="52:54:00:00:00:01"), policy.LOCAL_BOOT, "belongs to"),
]


@pytest.mark.parametrize("case,host,att,action,reason", CASES, ids=[c[0] for c in CASES])
def test_decide(case, host, att, action, reason):
    decision = policy.decide(MAC, host, att, now=NOW)
    assert decision.action == action
    assert reason in decision.reason
    assert decision.mac == MAC
    assert decision.installer is (action == policy.INSTALLER)
    if action == policy.INSTALLER:
        assert decision.attempt is att and decision.host is host
    if action == policy.DEFAULT:
        assert decision.attempt is None and decision.host is None


def test_only_armed_ever_gives_the_installer():
    for state in states.ATTEMPT_STATES:
        for runs in (0, 1, 2):
            decision = policy.decide(MAC, HOST, attempt(state=state, runs=runs, max_runs=2), now=NOW)
            assert decision.installer is (state == states.ARMED and runs < 2)


def test_window_open_accepts_naive_and_default_now():
    assert policy.window_open(attempt(window_until="2999-01-01T00:00:00"))[0] is True
    assert policy.window_open(attempt(window_until="2000-01-01T00:00:00"))[0] is False
    naive_now = dt.datetime(2025, 1, 1, 12, 0)
    assert policy.window_open(attempt(window_until="2025-01-01T12:00:00+00:00"), naive_now)[0] is False


def test_decision_as_dict_names_the_attempt_but_not_its_token():
    data = policy.decide(MAC, HOST, attempt(), now=NOW).as_dict()
    assert data == {"action": "installer", "mac": MAC, "reason": "attempt 7 armed for media xs84", "attempt": 7}
