"""states: the one transition table, check_transition() and the diagram drawn from the table."""

import re

import pytest

from provisioner import states
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
