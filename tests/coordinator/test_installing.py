"""Never two hosts down by timeout (installing.py, the runner's member loop): a running installer is never failed
by a timer, the operator ends the wait (mark-failed, abort), and a failed member that is down stops the run."""

from __future__ import annotations

import re

import pytest
from labs import MEDIA, POOL

from provisioner import states
from provisioner.coordinator import installing, journal, runner
from provisioner.coordinator.report import run_report
from provisioner.coordinator.steps import Timeouts
from provisioner.store import ConflictError, NotFoundError

# up (30 min) and down (10 min) are both passed before the 4th "still installing" note (40 min)
SHORT = Timeouts(down=600, up=1800, enable=1800, poll=5, installing_note=600)
NOTES_PAST_EVERY_TIMER = 4


def touched(lab, i, since=0):
    """The XAPI calls (from call_log[since:]) that name host i, except host.get_servertime: the read-only no-op
    CHECK sends every member to see that it answers (coordinator/members.py)."""
    ref = lab.world.pools[POOL].hosts[i].ref
    return [c for c in lab.world.call_log[since:] if any(ref == p for p in c[2]) and c[1] != "host.get_servertime"]


def drive(lab, decide, name, timeouts=SHORT):
    """Run the upgrade; decide(lab, run_id, name) is called at host `name`'s NOTES_PAST_EVERY_TIMER-th "still
    installing" line, with what the run looked like then recorded in `seen`."""
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    notes, seen = [], {}

    def on_commit(rh):  # from here on (prechecks and PREPARE done), host2 must see no call at all
        if rh.name == name and rh.step == states.STEP_CHECK:
            seen["since"] = len(lab.world.call_log)

    def say(line):
        if not line.startswith(f"{name}: still installing after"):
            return  # (a normal install of another host may take over 10 min too)
        notes.append(line)
        if len(notes) == NOTES_PAST_EVERY_TIMER:
            seen["steps"] = {h.name: h.step for h in lab.store.run_hosts(started.id)}
            seen["touched_host2"] = touched(lab, 2, seen["since"])
            seen["run"] = lab.store.get_run(started.id).state
            decide(lab, started.id, name)

    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock, timeouts=timeouts,
                          say=say, on_commit=on_commit).run()
    return started.id, final, notes, seen


def mark(lab, run_id, name):
    runner.request_mark_failed(lab.store, POOL, name)


def abort(lab, run_id, name):
    runner.request_abort(lab.store, POOL)


@pytest.mark.parametrize("index", [1, 0], ids=["member", "master"])
def test_installing_past_every_timeout_waits_until_the_operator_marks_it_failed(lab, index):
    lab.handler.inject(lab.mac(index), never_returns=True)  # the installer started and never reports
    name = f"{POOL}-host{index}"
    run_id, final, notes, seen = drive(lab, mark, name)
    assert len(notes) == NOTES_PAST_EVERY_TIMER
    assert f"provisioner upgrade mark-failed {POOL} {name}" in notes[0]
    # At 40 min (past `up` and `down`): still waiting on it, the next host untouched and pending.
    assert seen["run"] in (states.RUN_MASTER, states.RUN_MEMBERS)
    assert seen["steps"][name] == states.STEP_WAIT_UP and seen["steps"][f"{POOL}-host2"] == states.STEP_PENDING
    assert seen["touched_host2"] == []
    events = lab.store.events(run_id=run_id, kind=installing.STILL_INSTALLING)
    # one note per 10 min of installing, each at the first poll at or past its mark (how far past is how long a
    # loaded machine starved the runner's thread: Clock is wall time x speed, not a property of the runner)
    minutes = [e["details"]["minutes"] for e in events if e["mac"] == lab.mac(index)]
    assert len(minutes) == 4 and minutes == sorted(minutes), minutes
    assert all(m >= 10 * k for k, m in enumerate(minutes, 1)), minutes
    (decision,) = journal.read(lab.store, run_id, journal.MARKED_FAILED)
    assert decision["host"] == name and decision["step"] == states.STEP_WAIT_UP
    hosts = {h["name"]: h for h in run_report(lab.store, run_id)["hosts"]}
    assert hosts[name]["step"] == states.STEP_FAILED
    # marked at the 4th note; the step reads the mark at its next poll
    marked = re.match(rf"wait_up: {installing.MARKED_FAILED_REASON} after (\d+) min", hosts[name]["reason"])
    assert marked and int(marked.group(1)) >= minutes[-1], hosts[name]["reason"]
    # Down after its installer started: the run stops, no other host is started.
    assert final.state == states.RUN_ABORTED and name in final.reason
    assert hosts[f"{POOL}-host2"]["step"] == states.STEP_PENDING and touched(lab, 2, seen["since"]) == []
    assert lab.reboots(2) == 0


def test_abort_past_every_timer_stops_the_wait_and_leaves_the_host_unknown(lab):
    lab.handler.inject(lab.mac(1), never_returns=True)
    run_id, final, notes, seen = drive(lab, abort, f"{POOL}-host1")
    assert final.state == states.RUN_ABORTED
    assert f"{POOL}-host1" in final.reason and "unknown" in final.reason and "still running after" in final.reason
    hosts = {h["name"]: h for h in run_report(lab.store, run_id)["hosts"]}
    left = hosts[f"{POOL}-host1"]
    assert left["step"] == states.STEP_WAIT_UP and "state unknown" in left["reason"]  # not FAILED: nobody knows
    assert lab.store.get_attempt(left["attempt_id"]).state == states.STARTED  # not disarmed: its report may come
    (event,) = lab.store.events(run_id=run_id, kind=installing.LEFT_UNKNOWN)
    # aborted after the 4th note (40 min); the step reads the abort at its next poll, which a loaded machine may
    # delay past the next whole minute (Clock is wall time x speed)
    assert event["mac"] == lab.mac(1) and event["details"]["minutes"] >= 40, event
    assert f"still running after {event['details']['minutes']} min" in final.reason, final.reason
    assert hosts[f"{POOL}-host2"]["step"] == states.STEP_PENDING and touched(lab, 2, seen["since"]) == []


@pytest.mark.parametrize("down", ["stuck_in_firmware", "installer_breaks"])
def test_a_failed_member_that_is_down_stops_the_run_instead_of_starting_the_next(lab, down):
    """Failed by a timer (its installer not running: never network-booted, or reported 1 and never came back):
    the run does not move to the next member, even without stop_on_failure."""
    if down == "stuck_in_firmware":
        lab.world.never_returns(lab.mac(1))  # stays in its firmware: no boot-config fetch, attempt still armed
    else:
        lab.handler.inject(lab.mac(1), installer_breaks=True)  # reports 1 after its backup, then boots nothing
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    final = runner.Runner(lab.store, lab.config, started.id, lab.driver, clock=lab.world.clock,
                          timeouts=SHORT).run()
    hosts = {h["name"]: h for h in run_report(lab.store, started.id)["hosts"]}
    failed = hosts[f"{POOL}-host1"]
    assert failed["step"] == states.STEP_FAILED and "not done after" in failed["reason"]
    assert final.state == states.RUN_ABORTED and f"member {POOL}-host1 failed and is down" in final.reason
    assert failed["host_down"] and failed["remedy"] in final.reason
    assert hosts[f"{POOL}-host0"]["step"] == states.STEP_DONE
    assert hosts[f"{POOL}-host2"]["step"] == states.STEP_PENDING and lab.reboots(2) == 0
    if down == "stuck_in_firmware":  # its installer never started: the timer applied
        assert lab.mac(1) not in {e["mac"] for e in lab.store.events(run_id=started.id,
                                                                     kind=installing.STILL_INSTALLING)}


def test_mark_failed_is_refused_unless_the_run_waits_on_that_host(lab):
    with pytest.raises(NotFoundError, match="no run in progress"):
        runner.request_mark_failed(lab.store, POOL, f"{POOL}-host1")
    started = runner.start_run(lab.store, POOL, MEDIA, lab.driver)
    with pytest.raises(ConflictError, match="at step pending"):
        runner.request_mark_failed(lab.store, POOL, f"{POOL}-host1")
    with pytest.raises(NotFoundError, match="no host named"):
        runner.request_mark_failed(lab.store, POOL, "nobody")
    for step in (states.STEP_CHECK, states.STEP_DISABLE, states.STEP_EVACUATE, states.STEP_ARM, states.STEP_REBOOT,
                 states.STEP_WAIT_DOWN):
        lab.store.set_host_step(started.id, lab.mac(1), step)
    found = runner.request_mark_failed(lab.store, POOL, lab.mac(1).upper())  # a MAC, any spelling
    assert found.name == f"{POOL}-host1"
    assert journal.read(lab.store, started.id, journal.MARKED_FAILED)[0]["step"] == states.STEP_WAIT_DOWN


def test_while_its_installer_runs_the_wait_reads_xapi_once_every_few_polls(lab, monkeypatch):
    """At WAIT_UP a host whose installer runs cannot be back in XAPI: the pool is read every QUIET_POLLS + 1 polls
    (its report, in the store, at every poll)."""
    polls, marks = [], {}
    counted = installing.installer_running

    def counting(ctx, rh):
        polls.append(len(lab.world.call_log))
        return counted(ctx, rh)
    monkeypatch.setattr(installing, "installer_running", counting)
    lab.handler.inject(lab.mac(1), never_returns=True)

    def decide(lab, run_id, name):
        marks["end"] = len(lab.world.call_log)
        mark(lab, run_id, name)
    run_id, final, notes, seen = drive(lab, decide, f"{POOL}-host1")
    assert final.state == states.RUN_ABORTED and len(notes) == NOTES_PAST_EVERY_TIMER
    start = next(i for i, at in enumerate(polls) if at >= seen["since"])
    window = [at for at in polls[start:] if at <= marks["end"]]  # host1's polls from its CHECK to the mark
    reads = sum(1 for _, method, _ in lab.world.call_log[window[0]:window[-1]] if method == "host.get_all_records")
    assert len(window) > 6 * (installing.QUIET_POLLS + 1), len(window)
    assert reads <= len(window) / (installing.QUIET_POLLS + 1) + 6, (reads, len(window))
    assert reads >= len(window) / (installing.QUIET_POLLS + 1) - 6, (reads, len(window))
