"""attempts: arming, the installer's signals, one window per arming, races, stale and unknown tokens."""

import sqlite3
import threading

import pytest
from helpers import make_media_tree

from provisioner import states
from provisioner.boot import attempts, policy
from provisioner.media import import_media
from provisioner.model import Host, ValidationError
from provisioner.store import AttemptChange, ConflictError, NotFoundError

MAC = "52:54:00:12:34:56"
CLIENT = "10.0.0.50"


@pytest.fixture
def world(store, config, tmp_path):
    """A registered UEFI host with a boot disk, a BIOS host, and 8.4 and 9.0 media."""
    # The installer calls from the host's registered IP: the attempt binding admits it (test_steal_install.py)
    store.add_host(Host.from_fields({"mac": MAC, "name": "h1", "pool": "p", "disk": "/dev/disk/by-id/scsi-1",
                                     "firmware": "uefi", "ip": CLIENT}))
    store.add_host(Host.from_fields({"mac": "52:54:00:00:00:02", "name": "bios", "pool": "p",
                                     "disk": "/dev/sda"}))
    store.add_host(Host.from_fields({"mac": "52:54:00:00:00:03", "name": "nodisk", "pool": "p"}))
    import_media(store, config, "xs84", make_media_tree(tmp_path / "xs84"))
    import_media(store, config, "xs90", make_media_tree(tmp_path / "xs90", version="9.0.0"))
    return store


def kinds(store, mac=MAC):
    return [e["kind"] for e in store.events(mac=mac) if e["kind"].startswith("attempt.")]


def test_arm_creates_an_armed_attempt_with_an_unguessable_token(world, config):
    attempt = attempts.arm(world, config, "52-54-00-12-34-56", "xs84", run_id="run-1")
    assert (attempt.mac, attempt.media, attempt.state, attempt.runs, attempt.max_runs) == (MAC, "xs84", "armed", 0, 1)
    assert len(attempt.token) == 32 and attempt.token.replace("-", "").replace("_", "").isalnum()
    assert attempts.attempt_by_token(world, attempt.token) == attempt
    assert attempts.current_attempt(world, MAC.upper()) == attempt
    other = attempts.arm(world, config, "52:54:00:00:00:02", "xs84")
    assert other.token != attempt.token
    event = world.events(kind="attempt.armed", mac=MAC)[0]
    assert event["run_id"] == "run-1" and event["details"]["media"] == "xs84"
    assert attempt.token not in str(world.events())  # the capability never lands in the event log
    assert "token" not in attempt.as_dict() and attempt.as_dict(with_token=True)["token"] == attempt.token
    assert attempts.decide_for(world, MAC).action == policy.INSTALLER


@pytest.mark.parametrize("mac,media,error,match", [
    ("52:54:00:99:99:99", "xs84", NotFoundError, "no host with MAC 52:54:00:99:99:99"),
    (MAC, "nope", NotFoundError, "no media named 'nope'"),
    ("52:54:00:00:00:03", "xs84", ValidationError, "has no boot disk recorded"),
    ("52:54:00:00:00:02", "xs90", ValidationError, "refuses legacy BIOS"),
    ("not-a-mac", "xs84", ValidationError, "is not a MAC address"),
])
def test_arm_refuses_with_a_clear_error(world, config, mac, media, error, match):
    with pytest.raises(error, match=match):
        attempts.arm(world, config, mac, media)
    assert world.list_attempts() == []


def test_arm_refuses_an_https_public_url_before_anyone_reboots_the_host(world, config):
    with pytest.raises(ValidationError, match="public_url is https://") as caught:
        attempts.arm(world, config.replace(public_url="https://192.0.2.1"), MAC, "xs84")
    assert caught.value.field == "public_url"
    assert world.list_attempts() == []


def test_reinstall_loop_sequence_ends_in_local_boot(world, config):
    attempt = attempts.arm(world, config, MAC, "xs84")
    token = attempt.token
    # 1st PXE boot: the config says installer, the answer file is served once.
    assert attempts.decide_for(world, MAC).action == policy.INSTALLER
    attempts.record_fetch(world, token, "config", CLIENT, name="grub/grub.cfg-01-52-54-00-12-34-56")
    attempts.record_fetch(world, token, "kernel", CLIENT, path="boot/vmlinuz")
    assert attempts.answerfile_allowed(world, token)
    served = attempts.claim_answerfile(world, token, CLIENT)
    assert served is not None and served.runs == 1
    # The installer fetches its installation-start script: the window closes.
    outcome = attempts.start_script_fetched(world, token, CLIENT)
    assert outcome.changed and outcome.attempt.state == states.STARTED and outcome.attempt.started_at
    # It reboots at the end and network-boots again: local boot, and the answer file is gone.
    decision = attempts.decide_for(world, MAC)
    assert decision.action == policy.LOCAL_BOOT and "started" in decision.reason
    assert not attempts.answerfile_allowed(world, token)
    assert attempts.claim_answerfile(world, token, CLIENT) is None
    done = attempts.complete_reported(world, token, "0", CLIENT)
    assert done.changed and done.attempt.state == states.SUCCEEDED and done.attempt.exit_code == 0
    assert attempts.decide_for(world, MAC).action == policy.LOCAL_BOOT
    assert kinds(world) == ["attempt.armed", "attempt.fetch", "attempt.fetch", "attempt.fetch", "attempt.started",
                            "attempt.refused", "attempt.succeeded"]
    fetches = [e["details"] for e in world.events(mac=MAC, kind="attempt.fetch")]
    assert [f["what"] for f in fetches] == ["config", "kernel", "answerfile"]
    assert fetches[0]["client"] == CLIENT and fetches[1]["path"] == "boot/vmlinuz"
    assert world.events(kind="attempt.refused")[0]["details"]["why"] == f"attempt {attempt.id} is started"


def test_a_run_that_dies_before_its_start_script_does_not_loop(world, config):
    attempt = attempts.arm(world, config, MAC, "xs84")
    assert attempts.claim_answerfile(world, attempt.token, CLIENT) is not None
    # No start script (say the answer file was unusable); the installer reboots and PXE-boots again:
    assert attempts.decide_for(world, MAC).action == policy.LOCAL_BOOT
    assert attempts.claim_answerfile(world, attempt.token, CLIENT) is None


def test_attempts_per_arming_caps_installer_runs(world, config):
    attempt = attempts.arm(world, config.replace(attempts_per_arming=2), MAC, "xs84")
    assert attempt.max_runs == 2
    assert attempts.claim_answerfile(world, attempt.token, CLIENT).runs == 1
    assert attempts.decide_for(world, MAC).action == policy.INSTALLER
    assert attempts.record_fetch(world, attempt.token, "answerfile", CLIENT).runs == 2
    assert attempts.decide_for(world, MAC).action == policy.LOCAL_BOOT
    assert attempts.record_fetch(world, attempt, "answerfile", CLIENT) is None


def test_two_concurrent_start_fetches_have_exactly_one_winner(world, config):
    token = attempts.arm(world, config, MAC, "xs84").token
    barrier = threading.Barrier(8)
    results = []

    def fetch():
        barrier.wait()
        results.append(attempts.start_script_fetched(world, token, CLIENT))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.changed for r in results) == [False] * 7 + [True]
    assert all(r.attempt.state == states.STARTED for r in results)
    assert kinds(world).count("attempt.started") == 1
    assert kinds(world).count("attempt.stale_token") == 7


def test_concurrent_answerfile_fetches_cannot_both_pass_the_cap(world, config):
    token = attempts.arm(world, config, MAC, "xs84").token
    barrier = threading.Barrier(6)
    served = []

    def fetch():
        barrier.wait()
        served.append(attempts.claim_answerfile(world, token, CLIENT))

    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([a for a in served if a is not None]) == 1
    assert world.attempt_by_token(token).runs == 1


def test_rearm_expires_the_old_token(world, config):
    old = attempts.arm(world, config, MAC, "xs84")
    new = attempts.arm(world, config, MAC, "xs84")
    assert world.get_attempt(old.id).state == states.EXPIRED
    assert attempts.current_attempt(world, MAC) == new
    assert world.events(kind="attempt.armed", mac=MAC)[-1]["details"]["supersedes"] == old.id
    # The old token is stale everywhere; the new one works.
    assert attempts.claim_answerfile(world, old.token, CLIENT) is None
    stale = attempts.start_script_fetched(world, old.token, CLIENT)
    assert (stale.changed, stale.attempt.state) == (False, states.EXPIRED)
    assert not attempts.complete_reported(world, old.token, "0", CLIENT).changed
    assert world.get_attempt(old.id).state == states.EXPIRED
    assert attempts.answerfile_allowed(world, new.token)
    assert attempts.decide_for(world, MAC).attempt == new


def test_the_database_allows_one_live_attempt_per_host(world, config):
    attempts.arm(world, config, MAC, "xs84")
    with pytest.raises(sqlite3.IntegrityError):
        world._connect().execute(
            "INSERT INTO attempts (mac, media, token, state, max_runs, runs, created_at, updated_at) "
            "VALUES (?, 'xs84', 'x', 'armed', 1, 0, '', '')", (MAC,))


@pytest.mark.parametrize("token", ["", "short", "../../etc/passwd", "A" * 32, None, 42, "x" * 200])
def test_unknown_and_malformed_tokens(world, config, token):
    attempts.arm(world, config, MAC, "xs84")
    assert attempts.attempt_by_token(world, token) is None
    assert not attempts.answerfile_allowed(world, token)
    assert attempts.claim_answerfile(world, token, CLIENT) is None
    assert attempts.start_script_fetched(world, token, CLIENT) == attempts.Outcome(None, False, "unknown token")
    assert attempts.complete_reported(world, token, "0", CLIENT).attempt is None
    assert attempts.record_fetch(world, token, "kernel", CLIENT) is None
    events = world.events(kind="attempt.unknown_token")
    assert [e["details"]["what"] for e in events] == ["answerfile", "start", "complete", "kernel"]
    shown = f"{token[:6]}..." if isinstance(token, str) else f"<{type(token).__name__}>"
    assert {e["details"]["token"] for e in events} == {shown}  # a prefix, never a whole token
    assert attempts.decide_for(world, MAC).action == policy.INSTALLER  # nothing changed


@pytest.mark.parametrize("code,state,exit_code", [("0", states.SUCCEEDED, 0), ("1", states.FAILED, 1),
                                                  (1, states.FAILED, 1), (" 0\n", states.SUCCEEDED, 0)])
def test_complete_codes(world, config, code, state, exit_code):
    token = attempts.arm(world, config, MAC, "xs84").token
    attempts.start_script_fetched(world, token, CLIENT)
    outcome = attempts.complete_reported(world, token, code, CLIENT)
    assert (outcome.changed, outcome.attempt.state, outcome.attempt.exit_code) == (True, state, exit_code)
    assert outcome.attempt.finished_at
    assert world.events(kind=f"attempt.{state}")[0]["details"]["start_seen"] is True
    again = attempts.complete_reported(world, token, "1", CLIENT)
    assert (again.changed, again.attempt.state) == (False, state)
    assert "already" in again.note


@pytest.mark.parametrize("code", ["2", "-1", "abc", "", None, "0; rm -rf /"])
def test_other_complete_codes_are_recorded_but_ignored(world, config, code):
    token = attempts.arm(world, config, MAC, "xs84").token
    attempts.start_script_fetched(world, token, CLIENT)
    outcome = attempts.complete_reported(world, token, code, CLIENT)
    assert (outcome.changed, outcome.attempt.state) == (False, states.STARTED)
    event = world.events(kind="attempt.report_ignored")[0]["details"]
    assert event["why"] == "exit code is not 0 or 1" and event["client"] == CLIENT


def test_complete_without_start_still_closes_the_window(world, config):
    token = attempts.arm(world, config, MAC, "xs84").token
    outcome = attempts.complete_reported(world, token, "1", CLIENT)
    assert outcome.attempt.state == states.FAILED
    assert world.events(kind="attempt.failed")[0]["details"]["start_seen"] is False
    assert attempts.decide_for(world, MAC).action == policy.LOCAL_BOOT


def test_arming_while_an_installer_runs_is_refused_until_disarmed(world, config):
    first = attempts.arm(world, config, MAC, "xs84")
    attempts.start_script_fetched(world, first.token, CLIENT)
    with pytest.raises(ConflictError, match="an installer is running"):
        attempts.arm(world, config, MAC, "xs84")
    disarmed = attempts.disarm(world, MAC, reason="installer hung")
    assert [(a.id, a.state) for a in disarmed] == [(first.id, states.DISARMED)]
    assert world.events(kind="attempt.disarmed")[0]["details"]["reason"] == "installer hung"
    assert attempts.arm(world, config, MAC, "xs84").state == states.ARMED


def test_disarm(world, config):
    attempt = attempts.arm(world, config, MAC, "xs84")
    assert [a.state for a in attempts.disarm(world, MAC)] == [states.DISARMED]
    assert attempts.decide_for(world, MAC).action == policy.LOCAL_BOOT
    assert not attempts.answerfile_allowed(world, attempt.token)
    assert attempts.disarm(world, MAC) == []  # nothing live: nothing to do
    with pytest.raises(NotFoundError):
        attempts.disarm(world, "52:54:00:99:99:99")


def test_removing_a_host_disarms_it_for_good(world, config):
    attempts.arm(world, config, MAC, "xs84")
    host = world.remove_host(MAC)
    assert attempts.current_attempt(world, MAC).state == states.DISARMED
    assert world.events(kind="attempt.disarmed")[0]["details"]["reason"] == "host removed"
    world.add_host(host)
    assert attempts.decide_for(world, MAC).action == policy.LOCAL_BOOT


def test_window_deadline(world, config):
    import datetime as dt

    attempt = attempts.arm(world, config, MAC, "xs84", window_seconds=60)
    assert attempt.window_until
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=61)
    assert attempts.decide_for(world, MAC).action == policy.INSTALLER
    assert attempts.decide_for(world, MAC, now=later).action == policy.LOCAL_BOOT
    assert not attempts.answerfile_allowed(world, attempt.token, now=later)
    assert attempts.claim_answerfile(world, attempt.token, CLIENT, now=later) is None
    for bad in (0, -5, 1.5, "60", True, 10**20, attempts.MAX_WINDOW_SECONDS + 1):
        with pytest.raises(ValidationError, match="whole number of seconds from 1 to"):
            attempts.arm(world, config, MAC, "xs84", window_seconds=bad)


def test_record_fetch(world, config):
    attempt = attempts.arm(world, config, MAC, "xs84")
    assert attempts.record_fetch(world, attempt, "install.img", CLIENT, bytes=70001, path=None) == attempt
    details = world.events(kind="attempt.fetch")[0]["details"]
    assert details == {"attempt": attempt.id, "state": "armed", "what": "install.img", "client": CLIENT,
                       "bytes": 70001, "path": None}
    with pytest.raises(ValueError, match="unknown fetch kind"):
        attempts.record_fetch(world, attempt, "script", CLIENT)


def test_every_transition_goes_through_the_table(world, config):
    attempt = attempts.arm(world, config, MAC, "xs84")
    attempts.disarm(world, MAC)
    before = world.events()
    with pytest.raises(states.InvalidTransition, match="disarmed -> armed"):
        world.change_attempt(token=attempt.token, decide=lambda a: AttemptChange(state=states.ARMED,
                                                                                 updates={"runs": 5}))
    assert world.get_attempt(attempt.id).state == states.DISARMED and world.get_attempt(attempt.id).runs == 0
    assert world.events() == before  # rolled back: no half change, no event
