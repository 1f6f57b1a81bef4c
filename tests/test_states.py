"""states: the one transition table, check_transition() and the diagram drawn from the table; the step table
(coordinator.steps.TABLE) and `provisioner states`, whose output is the README's diagram."""

import inspect
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner import states
from provisioner.cli import main
from provisioner.coordinator import steps
from provisioner.coordinator.context import Timeouts
from provisioner.states import ARMED, ATTEMPT, DISARMED, EXPIRED, FAILED, STARTED, SUCCEEDED

ALLOWED = {
    (None, ARMED),
    (ARMED, STARTED), (ARMED, DISARMED), (ARMED, EXPIRED), (ARMED, SUCCEEDED), (ARMED, FAILED),
    (STARTED, SUCCEEDED), (STARTED, FAILED), (STARTED, DISARMED),
}


@pytest.mark.parametrize("old", [None, *states.ATTEMPT_STATES])
@pytest.mark.parametrize("new", states.ATTEMPT_STATES)
def test_check_transition_allows_exactly_the_table(old, new):
    if (old, new) in ALLOWED:
        states.check_transition(ATTEMPT, old, new)
    else:
        with pytest.raises(states.InvalidTransition, match=re.escape(f"{old or '(new)'} -> {new}")):
            states.check_transition(ATTEMPT, old, new)


def test_terminal_states_have_no_way_out_and_say_so():
    for state in states.ATTEMPT_TERMINAL:
        assert states.allowed_from(ATTEMPT, state) == ()
    with pytest.raises(states.InvalidTransition, match="succeeded is final"):
        states.check_transition(ATTEMPT, SUCCEEDED, ARMED)
    with pytest.raises(states.InvalidTransition, match="allowed from armed: started, disarmed"):
        states.check_transition(ATTEMPT, ARMED, ARMED)


def test_unknown_kind_is_refused():
    with pytest.raises(states.InvalidTransition):
        states.check_transition("run", None, ARMED)


def test_every_state_is_documented_and_reachable():
    reachable = {t.new for t in states.TRANSITIONS if t.kind == ATTEMPT}
    assert reachable == set(states.ATTEMPT_STATES)
    assert states.ATTEMPT_LIVE | states.ATTEMPT_TERMINAL == set(states.ATTEMPT_STATES)
    assert not states.ATTEMPT_LIVE & states.ATTEMPT_TERMINAL
    assert all(t.why for t in states.TRANSITIONS)


def test_mermaid_diagram_is_drawn_from_the_table():
    text = states.diagram(ATTEMPT)
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert "    [*] --> armed: arm" in lines
    assert "    armed --> started: installation-start script fetched" in lines
    arrows = [line for line in lines[1:] if ": " in line]
    assert len(arrows) == len([t for t in states.TRANSITIONS if t.kind == ATTEMPT])
    assert sorted(line for line in lines if line.endswith("--> [*]")) == [
        f"    {s} --> [*]" for s in sorted(states.ATTEMPT_TERMINAL)]


def test_text_diagram_and_bad_arguments():
    text = states.diagram(ATTEMPT, fmt="text")
    assert text.splitlines()[0].split() == ["(new)", "->", "armed", "arm"]
    assert len(text.splitlines()) == len(ALLOWED)
    with pytest.raises(ValueError, match="unknown diagram format"):
        states.diagram(ATTEMPT, fmt="svg")
    with pytest.raises(ValueError, match="no transitions of kind"):
        states.diagram("nothing")


# --- runs and host steps ---------------------------------------------------------------------------------------------

def test_run_goes_through_prepare_before_any_host():
    assert states.allowed_from(states.RUN, states.RUN_PRECHECK) == (
        states.RUN_BLOCKED, states.RUN_PREPARE, states.RUN_ABORTED)
    assert set(states.allowed_from(states.RUN, states.RUN_PREPARE)) == {
        states.RUN_MASTER, states.RUN_MEMBERS, states.RUN_BLOCKED, states.RUN_ABORTED}
    with pytest.raises(states.InvalidTransition, match="precheck -> master"):
        states.check_transition(states.RUN, states.RUN_PRECHECK, states.RUN_MASTER)
    assert states.allowed_from(states.RUN, states.RUN_FINALIZE) == (states.RUN_DONE, states.RUN_DONE_WITH_FAILURES)
    reachable = {t.new for t in states.TRANSITIONS if t.kind == states.RUN}
    assert reachable == set(states.RUN_STATES)
    for state in states.RUN_TERMINAL:
        assert states.allowed_from(states.RUN, state) == ()


def test_host_steps_form_one_chain_in_host_steps_order_and_each_can_fail():
    chain = [states.STEP_PENDING]
    while True:
        nxt = [s for s in states.allowed_from(states.HOST, chain[-1]) if s != states.STEP_FAILED]
        if chain[-1] == states.STEP_CHECK:
            nxt.remove(states.STEP_DONE)  # the shortcut for a host already at the target
        if chain[-1] == states.STEP_REBOOT:
            nxt.remove(states.STEP_WAIT_DOWN)  # a plain reboot; the chain follows --power-cycle's POWER_ON
        if chain[-1] == states.STEP_VERIFY:
            nxt.remove(states.STEP_STORAGE)  # a run without --updates; the chain follows CONVERGE
        if not nxt:
            break
        (step,) = nxt
        chain.append(step)
    assert tuple(chain) + (states.STEP_FAILED,) == states.HOST_STEPS
    assert chain.index(states.STEP_CONVERGE) == chain.index(states.STEP_VERIFY) + 1  # before STORAGE / ENABLE:
    assert chain.index(states.STEP_STORAGE) == chain.index(states.STEP_CONVERGE) + 1  # a guidance reboot while empty
    assert states.STEP_CONVERGE not in steps.DESTRUCTIVE_STEPS  # runs to its end: no host left with a pending reboot
    assert chain.index(states.STEP_RESTORE) == chain.index(states.STEP_ENABLE) + 1
    assert chain.index(states.STEP_WAIT_DOWN) == chain.index(states.STEP_POWER_ON) + 1
    assert states.STEP_POWER_ON not in steps.DESTRUCTIVE_STEPS  # an abort must not leave a host shut down
    for step in states.HOST_STEPS:
        can_fail = states.STEP_FAILED in states.allowed_from(states.HOST, step)
        assert can_fail == (step not in (states.STEP_PENDING, *states.HOST_TERMINAL)), step
    assert steps.DESTRUCTIVE_STEPS < set(states.HOST_STEPS)
    assert states.STEP_RESTORE not in steps.DESTRUCTIVE_STEPS  # an abort still lets VMs be put back


def test_run_and_host_diagrams():
    text = states.diagram(states.RUN)
    assert "    precheck --> prepare: prechecks passed" in text and "    prepare --> master: pool prepared" in text
    assert "    verify --> storage: at the target version" in states.diagram(states.HOST)


# --- the step table and `provisioner states` -------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def test_step_table_covers_every_active_step_in_order_and_derives_the_destructive_set():
    assert tuple(s.name for s in steps.TABLE) == states.HOST_ACTIVE
    assert tuple(t.old for t in states.TRANSITIONS if t.kind == states.HOST and t.new == states.STEP_FAILED) == \
        states.HOST_ACTIVE
    assert steps.STEPS == {s.name: s.action for s in steps.TABLE}
    assert steps.DESTRUCTIVE_STEPS == {states.STEP_DISABLE, states.STEP_EVACUATE, states.STEP_ARM, states.STEP_REBOOT}
    assert steps.STEPS[states.STEP_WAIT_DOWN] is steps.wait_down  # the names match the design's host steps


@pytest.mark.parametrize("step", steps.TABLE, ids=lambda s: s.name)
def test_each_step_names_the_timeouts_its_action_reads(step):
    """The table's timeouts are Timeouts attributes, and exactly the ones (besides poll) its action reads."""
    source = inspect.getsource(step.action)
    read = set(re.findall(r"ctx\.timeouts\.(\w+)", source)) - {"poll"}
    assert set(step.timeouts) == read
    assert all(hasattr(Timeouts(), name) for name in step.timeouts)


def test_states_command_prints_the_machines_and_the_readme_shows_exactly_that():
    result = CliRunner().invoke(main, ["states"])
    assert result.exit_code == 0, result.output
    assert states.diagram(states.RUN, fmt="text") in result.output
    assert states.diagram(states.HOST, fmt="text") in result.output
    section = README.read_text().split("### State machines\n", 1)[1]
    block = re.search(r"^```\n(.*?)^```$", section, re.S | re.M).group(1)
    assert block == result.output


def test_states_command_json():
    result = CliRunner().invoke(main, ["states", "--json"])
    data = json.loads(result.output)
    assert data["run"][0] == {"from": None, "to": states.RUN_PRECHECK, "why": "upgrade start"}
    assert len(data["host"]) == len([t for t in states.TRANSITIONS if t.kind == states.HOST])
    assert [(r["step"], r["action"], r["destructive"]) for r in data["steps"]] == [
        (s.name, s.action.__name__, s.destructive) for s in steps.TABLE]
