"""`provisioner states`: the run state machine, the host step machine and the step table, drawn from the code.

The README's "State machines" section is this command's output (tests/test_states.py compares them), so the
picture a reader sees is the table the store enforces (provisioner.states) and the runner follows
(provisioner.coordinator.steps.TABLE).
"""

from __future__ import annotations

import click

from provisioner import states
from provisioner.cli.base import emit, main
from provisioner.coordinator import steps

MACHINES = ((states.RUN, "runs: one rolling upgrade of one pool"),
            (states.HOST, "host steps: where one host of a run is (committed before its action runs)"))


def _step_rows() -> list[dict]:
    return [{"step": s.name, "action": s.action.__name__, "destructive": s.destructive, "timeouts": list(s.timeouts)}
            for s in steps.TABLE]


def as_json() -> dict:
    """{run: [...], host: [...]} transitions ({from, to, why}; from None: created) and steps: the step table."""
    data: dict = {kind: [{"from": t.old, "to": t.new, "why": t.why} for t in states.TRANSITIONS if t.kind == kind]
                  for kind, _ in MACHINES}
    data["steps"] = _step_rows()
    return data


def as_text() -> str:
    """Each machine as one line per transition (states.diagram text), then the step table."""
    parts = [f"{title}\n{states.diagram(kind, fmt='text')}" for kind, title in MACHINES]
    rows = [("step", "action", "destructive", "timeouts")] + [
        (r["step"], r["action"], "yes" if r["destructive"] else "no", ", ".join(r["timeouts"]) or "-")
        for r in _step_rows()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    table = "".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}\n" for a, b, c, d in rows)
    parts.append("host step actions: an abort request stops a host before a destructive step; the timeouts are\n"
                 f"provisioner.coordinator.context.Timeouts attributes\n{table}")
    return "\n".join(parts)


@main.command("states")
@click.option("--json", "as_json_flag", is_flag=True, help="The transitions and the step table as JSON.")
def states_command(as_json_flag: bool) -> None:
    """Print the run state machine, the host step machine (one line per transition) and the step table."""
    emit(as_json(), as_json_flag, as_text().rstrip("\n"))
