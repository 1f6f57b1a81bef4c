"""State constants and the ONE flat transition table; anything not in the table raises (Ironic's pattern).

Attempts, runs (one pool upgrade) and host steps (where one host of a run is) share the one table.
The table is data: the store checks every write against it, and diagram() draws it, so the picture in
the docs can never drift from what the code enforces.
"""

from __future__ import annotations

from typing import NamedTuple

# --- attempts: one arming of one host for one installer run (see provisioner.boot.attempts) ---

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


# --- runs: one rolling upgrade of one pool (driven by provisioner.coordinator.runner) ---

RUN = "run"
"""Transition-table kind for pool upgrade runs."""

RUN_PRECHECK = "precheck"
"""Reads only: the prechecks of `upgrade plan` run again; a failed one BLOCKs the run, nothing changed."""
RUN_PREPARE = "prepare"
"""Turns off HA / WLB (when asked) and VMs' auto_poweron, each change journaled before it is made."""
RUN_MASTER = "master"
"""Walks the master through the host steps; any master failure ABORTs the run, no member touched."""
RUN_MEMBERS = "members"
"""Walks each member through the host steps, one at a time."""
RUN_FINALIZE = "finalize"
"""Waits for XAPI to clear rolling_upgrade_in_progress, undoes exactly what PREPARE changed and reports VMs with
older guest tools."""
RUN_DONE = "done"
"""Final: every host at the target, PREPARE's changes undone."""
RUN_DONE_WITH_FAILURES = "done_with_failures"
"""Final: some members failed, or something PREPARE changed could not be undone."""
RUN_BLOCKED = "blocked"
"""Final: a precheck failed, or PREPARE failed and its changes were undone; no host was touched."""
RUN_ABORTED = "aborted"
"""Final: an abort request, a master failure, a member down or unknown, or stop-on-failure ended the run."""
RUN_STATES = (RUN_PRECHECK, RUN_PREPARE, RUN_MASTER, RUN_MEMBERS, RUN_FINALIZE, RUN_DONE, RUN_ABORTED,
              RUN_DONE_WITH_FAILURES, RUN_BLOCKED)
RUN_TERMINAL = frozenset({RUN_DONE, RUN_ABORTED, RUN_DONE_WITH_FAILURES, RUN_BLOCKED})

# --- host steps: where one host of a run is (the step is committed BEFORE its action runs). What each step does
# is said once, here; provisioner.coordinator.steps.TABLE gives each its action, whether an abort stops before
# it (destructive) and the timeouts that bound it. ---

HOST = "host"
"""Transition-table kind for the per-host steps of a run."""

STEP_PENDING = "pending"
"""Planned; not its turn yet."""
STEP_CHECK = "check"
"""Reads the host: DONE at once when it is already at the target and enabled."""
STEP_DISABLE = "disable"
"""host.disable: no new VMs start on it."""
STEP_EVACUATE = "evacuate"
"""A pool: host.evacuate migrates its VMs away (journaled first). A pool of one: ejects CDs and suspends or shuts
down its VMs."""
STEP_ARM = "arm"
"""Records boot_time and version, then opens the host's installer attempt (once per run)."""
STEP_REBOOT = "reboot"
"""host.reboot; host.shutdown for a redfish / ipmi host, and with --power-cycle for a member (POWER_ON follows)."""
STEP_POWER_ON = "power_on"
"""Waits until it is off, powers it on and watches it network-boot: a redfish / ipmi host through its BMC with a
one-time network boot (retried once), else (--power-cycle, a member) host.power_on through the pool."""
STEP_WAIT_DOWN = "wait_down"
"""Waits until the reboot happened: the host went down, or is back with a new boot_time (was "installing" until
schema 8; the store's migration renames stored steps)."""
STEP_WAIT_UP = "wait_up"
"""Waits while the installer runs (never timed out while it does) until the host is back: a member live with a
new boot_time, the master logged in to again first."""
STEP_VERIFY = "verify"
"""product_version and build_number at the target, and the installer did not report failure."""
STEP_CONVERGE = "converge"
"""Only with --updates: the pool's update repository enabled and synced, the run's updates applied to the host and
its pending guidances carried out (reboot, toolstack restart) while it is still disabled and empty; its update level
verified (coordinator/converge.py)."""
STEP_STORAGE = "storage"
"""Plugs the PBDs left unplugged on every live host (what stays unplugged is a warning, not a failure)."""
STEP_ENABLE = "enable"
"""host.enable, retried while HOST_STILL_BOOTING."""
STEP_RESTORE = "restore"
"""Resumes / starts the VMs EVACUATE stopped and, when asked, migrates back the ones it moved."""
STEP_DONE = "done"
"""Final: at the target and enabled."""
STEP_FAILED = "failed"
"""Final: a step failed; the reason is "<step>: <why>" and the remedy is chosen from evidence."""
HOST_STEPS = (STEP_PENDING, STEP_CHECK, STEP_DISABLE, STEP_EVACUATE, STEP_ARM, STEP_REBOOT, STEP_POWER_ON,
              STEP_WAIT_DOWN, STEP_WAIT_UP, STEP_VERIFY, STEP_CONVERGE, STEP_STORAGE, STEP_ENABLE, STEP_RESTORE,
              STEP_DONE, STEP_FAILED)
"""In the order a host walks them (FAILED last)."""
HOST_TERMINAL = frozenset({STEP_DONE, STEP_FAILED})
HOST_ACTIVE = tuple(step for step in HOST_STEPS if step not in (STEP_PENDING, *HOST_TERMINAL))
"""The steps that run an action (and can fail)."""

TRANSITIONS = TRANSITIONS + (
    Transition(RUN, None, RUN_PRECHECK, "upgrade start"),
    Transition(RUN, RUN_PRECHECK, RUN_BLOCKED, "a precheck failed"),
    Transition(RUN, RUN_PRECHECK, RUN_PREPARE, "prechecks passed"),
    Transition(RUN, RUN_PRECHECK, RUN_ABORTED, "abort requested"),
    Transition(RUN, RUN_PREPARE, RUN_MASTER, "pool prepared"),
    Transition(RUN, RUN_PREPARE, RUN_MEMBERS, "pool prepared, master already at the target"),
    Transition(RUN, RUN_PREPARE, RUN_BLOCKED, "preparing failed (its changes undone)"),
    Transition(RUN, RUN_PREPARE, RUN_ABORTED, "abort requested (changes undone)"),
    Transition(RUN, RUN_MASTER, RUN_MEMBERS, "master upgraded"),
    # Vendor rule: never go on after a master failure; the operator restores the master first.
    Transition(RUN, RUN_MASTER, RUN_ABORTED, "master failed or abort requested"),
    Transition(RUN, RUN_MEMBERS, RUN_FINALIZE, "every member handled"),
    Transition(RUN, RUN_MEMBERS, RUN_ABORTED, "abort requested or stop on failure"),
    Transition(RUN, RUN_FINALIZE, RUN_DONE, "every host at the target, preparation undone"),
    Transition(RUN, RUN_FINALIZE, RUN_DONE_WITH_FAILURES, "some members failed, or something could not be undone"),
    Transition(HOST, None, STEP_PENDING, "planned"),
    Transition(HOST, STEP_PENDING, STEP_CHECK, "its turn"),
    Transition(HOST, STEP_CHECK, STEP_DISABLE, "checked"),
    Transition(HOST, STEP_CHECK, STEP_DONE, "already at the target"),
    Transition(HOST, STEP_DISABLE, STEP_EVACUATE, "disabled"),
    Transition(HOST, STEP_EVACUATE, STEP_ARM, "evacuated"),
    Transition(HOST, STEP_ARM, STEP_REBOOT, "armed"),
    Transition(HOST, STEP_REBOOT, STEP_WAIT_DOWN, "reboot sent"),
    Transition(HOST, STEP_REBOOT, STEP_POWER_ON, "shutdown sent (a redfish / ipmi host; --power-cycle, a member)"),
    Transition(HOST, STEP_POWER_ON, STEP_WAIT_DOWN, "powered on through the BMC or the pool, network-booting"),
    Transition(HOST, STEP_WAIT_DOWN, STEP_WAIT_UP, "went down"),
    Transition(HOST, STEP_WAIT_UP, STEP_VERIFY, "back up"),
    Transition(HOST, STEP_VERIFY, STEP_STORAGE, "at the target version"),
    Transition(HOST, STEP_VERIFY, STEP_CONVERGE, "at the target version, the run has --updates"),
    Transition(HOST, STEP_CONVERGE, STEP_STORAGE, "at the run's update level, no pending guidance"),
    Transition(HOST, STEP_STORAGE, STEP_ENABLE, "storage plugged (or reported)"),
    Transition(HOST, STEP_ENABLE, STEP_RESTORE, "enabled"),
    Transition(HOST, STEP_RESTORE, STEP_DONE, "VMs restored (or reported)"),
) + tuple(Transition(HOST, step, STEP_FAILED, "step failed") for step in HOST_ACTIVE)

# --- lab reinstall-and-join: the only flow that may wipe a disk (see provisioner.coordinator.reinstall) ---

REINSTALL = "reinstall"
"""Transition-table kind for reinstall-and-join flows (one per host at a time; committed before each action)."""

RI_FORGET, RI_ARM, RI_INSTALLING, RI_WAIT_XAPI = "forget", "arm", "installing", "wait_xapi"
RI_JOIN, RI_WAIT_JOINED, RI_DONE, RI_FAILED = "join", "wait_joined", "done", "failed"
RI_CONVERGE = "converge"
"""The new standalone host takes the pool's coordinator as its update source (Repository.introduce_remote_pool),
syncs, applies the updates and carries out their guidances until its update level is the master's
(coordinator/reinstall_converge.py); nothing to do when the pool has no update level."""
RI_JOIN_REFUSED = "join_refused"
"""pool.join refused the fresh host (updates, edition, version...): it stays standalone and the flow waits for the
operator to fix it and run the same reinstall command again, which retries JOIN. Not final, nothing is undone."""
REINSTALL_STEPS = (RI_FORGET, RI_ARM, RI_INSTALLING, RI_WAIT_XAPI, RI_CONVERGE, RI_JOIN, RI_JOIN_REFUSED,
                   RI_WAIT_JOINED, RI_DONE, RI_FAILED)
"""FORGET host.destroy's the dead member's record; ARM opens ONE fresh-install window; INSTALLING waits for the
installer's report; WAIT_XAPI logs in to the new standalone host; JOIN sends pool.join; WAIT_JOINED waits for the
new uuid to be live and enabled in the pool, then the registry follows it."""
REINSTALL_TERMINAL = frozenset({RI_DONE, RI_FAILED})
REINSTALL_WAITING = frozenset({RI_JOIN_REFUSED})
"""Steps where a flow stops driving itself until the operator runs the command again (still in progress)."""

TRANSITIONS = TRANSITIONS + (
    Transition(REINSTALL, None, RI_FORGET, "start with --forget: host.destroy the dead member first"),
    Transition(REINSTALL, None, RI_ARM, "start: nothing to forget"),
    Transition(REINSTALL, RI_FORGET, RI_ARM, "forgotten"),
    Transition(REINSTALL, RI_ARM, RI_INSTALLING, "fresh-install attempt armed"),
    Transition(REINSTALL, RI_INSTALLING, RI_WAIT_XAPI, "installer reported success"),
    Transition(REINSTALL, RI_WAIT_XAPI, RI_JOIN, "new standalone host answers"),
    Transition(REINSTALL, RI_WAIT_XAPI, RI_CONVERGE, "new standalone host answers: bring it to the pool's level"),
    Transition(REINSTALL, RI_CONVERGE, RI_JOIN, "at the master's update level (or the pool has none)"),
    Transition(REINSTALL, RI_JOIN_REFUSED, RI_CONVERGE, "the operator ran the command again: converge, then join"),
    Transition(REINSTALL, RI_JOIN, RI_WAIT_JOINED, "pool.join sent"),
    Transition(REINSTALL, RI_JOIN, RI_JOIN_REFUSED, "pool.join refused: the new host stays standalone, waiting"),
    Transition(REINSTALL, RI_JOIN_REFUSED, RI_JOIN, "the operator ran the command again: retry pool.join"),
    Transition(REINSTALL, RI_WAIT_JOINED, RI_DONE, "new host live and enabled in the pool"),
) + tuple(Transition(REINSTALL, step, RI_FAILED, "step failed")
          for step in REINSTALL_STEPS if step not in REINSTALL_TERMINAL)

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
        width, new_width = max(len(t.old or "(new)") for t in rows), max(len(t.new) for t in rows)
        return "".join(f"{(t.old or '(new)'):<{width}} -> {t.new:<{new_width}} {t.why}\n" for t in rows)
    raise ValueError(f"unknown diagram format {fmt!r} (use 'mermaid' or 'text')")
