"""State constants and the ONE flat transition table; anything not in the table raises (Ironic's pattern).

Only attempts live here so far; runs and host steps add their constants and rows to the same table.
The table is data: the store checks every write against it, and diagram() draws it, so the picture in
the docs can never drift from what the code enforces.
"""

from __future__ import annotations

from typing import NamedTuple

# --- attempts: one arming of one host for one installer run (see provisioner.attempts) ---

ATTEMPT = "attempt"
"""Transition-table kind for attempts."""

ARMED = "armed"
"""Window open: the MAC gets the installer on every boot path (until the per-arming run cap is used up)."""

STARTED = "started"
"""The installation-start script was fetched: the window is closed, the MAC gets LOCAL_BOOT everywhere."""

SUCCEEDED = "succeeded"
"""The installation-complete script reported 0 (the coordinator's XAPI check is still the ground truth)."""

FAILED = "failed"
"""The installation-complete script reported 1: the installer gave up and reboots into the old system."""

DISARMED = "disarmed"
"""Cancelled by the operator or the coordinator (or its host was removed); never offers the installer again."""

EXPIRED = "expired"
"""Superseded by a newer arming of the same host (explicit re-arm); its token is stale from then on."""

ATTEMPT_STATES = (ARMED, STARTED, SUCCEEDED, FAILED, DISARMED, EXPIRED)
ATTEMPT_TERMINAL = frozenset({SUCCEEDED, FAILED, DISARMED, EXPIRED})
ATTEMPT_LIVE = frozenset({ARMED, STARTED})
"""States in which an installer may still be running or about to run for that host."""


class Transition(NamedTuple):
    kind: str
    old: str | None  # None: the record does not exist yet
    new: str
    why: str


# The ONE table. Add rows, never special-case a transition in code.
TRANSITIONS: tuple[Transition, ...] = (
    Transition(ATTEMPT, None, ARMED, "arm"),
    Transition(ATTEMPT, ARMED, STARTED, "installation-start script fetched"),
    Transition(ATTEMPT, ARMED, DISARMED, "disarm"),
    Transition(ATTEMPT, ARMED, EXPIRED, "re-armed"),
    # The complete script without a start script: the start GET was lost or failed (the installer then
    # aborts and still reports 1). Either way an installer ran, so the window must close.
    Transition(ATTEMPT, ARMED, SUCCEEDED, "complete 0 (start not seen)"),
    Transition(ATTEMPT, ARMED, FAILED, "complete 1 (start not seen)"),
    Transition(ATTEMPT, STARTED, SUCCEEDED, "complete 0"),
    Transition(ATTEMPT, STARTED, FAILED, "complete 1"),
    # An installer that died mid-run never reports: the operator closes the attempt before re-arming.
    Transition(ATTEMPT, STARTED, DISARMED, "disarm"),
)

_ALLOWED = frozenset((t.kind, t.old, t.new) for t in TRANSITIONS)
_KINDS = frozenset(t.kind for t in TRANSITIONS)


class InvalidTransition(ValueError):
    """A state change that the transition table does not list."""

    def __init__(self, kind: str, old: str | None, new: str):
        self.kind, self.old, self.new = kind, old, new
        allowed = [t.new for t in TRANSITIONS if t.kind == kind and t.old == old]
        hint = f"allowed from {old or 'nothing'}: {', '.join(allowed)}" if allowed else f"{old} is final"
        super().__init__(f"{kind}: {old or '(new)'} -> {new} is not a valid transition ({hint})")


def check_transition(kind: str, old: str | None, new: str) -> None:
    """Raise InvalidTransition unless (kind, old, new) is a row of TRANSITIONS."""
    if kind not in _KINDS:
        raise InvalidTransition(kind, old, new)
    if (kind, old, new) not in _ALLOWED:
        raise InvalidTransition(kind, old, new)


def allowed_from(kind: str, old: str | None) -> tuple[str, ...]:
    """The states reachable in one step from `old` (in table order)."""
    return tuple(t.new for t in TRANSITIONS if t.kind == kind and t.old == old)


def diagram(kind: str = ATTEMPT, fmt: str = "mermaid") -> str:
    """Render the table rows of `kind` as a Mermaid stateDiagram-v2 ("mermaid") or plain text ("text")."""
    rows = [t for t in TRANSITIONS if t.kind == kind]
    if not rows:
        raise ValueError(f"no transitions of kind {kind!r} (known: {', '.join(sorted(_KINDS))})")
    if fmt == "mermaid":
        lines = ["stateDiagram-v2"]
        lines += [f"    {t.old or '[*]'} --> {t.new}: {t.why}" for t in rows]
        finals = sorted({t.new for t in rows} - {t.old for t in rows if t.old})
        lines += [f"    {state} --> [*]" for state in finals]
        return "\n".join(lines) + "\n"
    if fmt == "text":
        width = max(len(t.old or "(new)") for t in rows)
        return "".join(f"{(t.old or '(new)'):<{width}} -> {t.new:<10} {t.why}\n" for t in rows)
    raise ValueError(f"unknown diagram format {fmt!r} (use 'mermaid' or 'text')")
