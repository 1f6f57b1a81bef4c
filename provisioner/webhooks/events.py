"""Which event rows are notifications, and for which webhooks (docs/audit.md "Webhooks").

  run.started        <- run.precheck (a run was created and starts its prechecks)
  host.step_failed   <- step.failed (one host's step failed; the run may go on)
  run.needs_operator <- run.blocked (why "consent" when a consent-level precheck waits for the operator's
                        --consent CODE, named in the reason, else "blocked"), host.still_installing (past the
                        installing threshold)
  run.finished       <- run.done, run.done_with_failures, run.aborted
A webhook with a pool gets only events of that pool's runs; without one, every pool's.
"""

from __future__ import annotations

from typing import Any, Mapping

RUN_STARTED, STEP_FAILED, NEEDS_OPERATOR, RUN_FINISHED = (
    "run.started", "host.step_failed", "run.needs_operator", "run.finished")
EVENTS = (RUN_STARTED, STEP_FAILED, NEEDS_OPERATOR, RUN_FINISHED)
SOURCES = {"run.precheck": RUN_STARTED, "step.failed": STEP_FAILED, "run.blocked": NEEDS_OPERATOR,
           "host.still_installing": NEEDS_OPERATOR, "run.done": RUN_FINISHED,
           "run.done_with_failures": RUN_FINISHED, "run.aborted": RUN_FINISHED}


def notification(event: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(name, payload) of the notification an event row stands for, or None."""
    name = SOURCES.get(event["kind"])
    if name is None:
        return None
    details = dict(event.get("details") or {})
    payload: dict[str, Any] = {"event": name, "source_event": event["kind"], "event_id": event["id"],
                               "ts": event["ts"], "run_id": event.get("run_id"), "pool": event.get("pool"),
                               "mac": event.get("mac"), "details": details}
    if name == NEEDS_OPERATOR:
        reason = str(details.get("reason") or "")
        # a consent-level precheck the operator has not agreed to names its fix `--consent CODE` (docs/prechecks.md)
        payload["why"] = ("still_installing" if event["kind"] == "host.still_installing"
                          else "consent" if "--consent" in reason else "blocked")
    if name == RUN_FINISHED:
        payload["state"] = event["kind"].partition(".")[2]
    return name, payload


def select(event: Mapping[str, Any], hooks: list[dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    """The deliveries one event row makes: [(webhook id, notification name, payload)]."""
    found = notification(event)
    if found is None:
        return []
    name, payload = found
    return [(hook["id"], name, payload) for hook in hooks
            if name in hook["events"] and (hook["pool"] is None or hook["pool"] == event.get("pool"))]
