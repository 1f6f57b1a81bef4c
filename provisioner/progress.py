"""Live progress of an upgrade run: each host's step, time in it, elapsed, and an ETA (pure functions, no I/O).

The ETA comes from how long hosts took with the same media so far (this run's finished hosts and earlier runs'):
a host's duration is from its `check` commit to its `done` commit, counted only when it went through `reboot`
(a host already at the target is no sample). The typical duration is the median of those samples; a run's ETA
is what is left of the host in progress plus one typical duration per pending host. No sample: no ETA.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from typing import Any, Iterable, Mapping

from provisioner import states
from provisioner.output import table

START, INSTALL_MARK, DONE = states.STEP_CHECK, states.STEP_REBOOT, states.STEP_DONE
TERMINAL = states.HOST_TERMINAL
# The steps a host walks through, in order (states.HOST_STEPS lists them so, FAILED last): a bar is the position.
STEP_ORDER = tuple(step for step in states.HOST_STEPS if step != states.STEP_FAILED)


def parse_ts(ts: str) -> float:
    """An event's ISO-8601 timestamp as Unix seconds."""
    return _dt.datetime.fromisoformat(ts).timestamp()


def timelines(step_events: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """(run_id, mac) -> [(step, when)] in commit order, from `step.<name>` events (others are ignored)."""
    lines: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for e in sorted(step_events, key=lambda e: e["id"]):
        if e["kind"].startswith("step.") and e.get("mac") and e.get("run_id"):
            step = e["kind"][len("step."):]
            if step != "skipped":  # `step.skipped` notes an idempotent skip, not a commit
                lines.setdefault((e["run_id"], e["mac"]), []).append((step, parse_ts(e["ts"])))
    return lines


def durations(step_events: Iterable[Mapping[str, Any]]) -> list[float]:
    """Seconds from `check` to `done` of every host that was really upgraded (went through `reboot`)."""
    found = []
    for line in timelines(step_events).values():
        steps = dict(line)  # the last commit of each step wins; `check` and `done` are committed once
        if START in steps and DONE in steps and INSTALL_MARK in steps:
            found.append(max(0.0, steps[DONE] - min(t for s, t in line if s == START)))
    return found


def typical(samples: Iterable[float]) -> float | None:
    values = list(samples)
    return statistics.median(values) if values else None


def _host_view(host: Mapping[str, Any], line: list[tuple[str, float]], expected: float | None,
               now: float) -> dict[str, Any]:
    started = next((t for s, t in line if s == START), None)
    ended = line[-1][1] if line and host["step"] in TERMINAL else None
    since = line[-1][1] if line else None
    elapsed = None if started is None else (ended or now) - started
    if host["step"] in TERMINAL:
        eta = 0.0
    elif host["step"] == states.STEP_PENDING or elapsed is None:
        eta = expected
    else:
        eta = None if expected is None else max(0.0, expected - elapsed)
    return {**host, "elapsed_seconds": elapsed, "step_seconds": None if ended or since is None else now - since,
            "eta_seconds": eta}


def run_view(report: Mapping[str, Any], step_events: Iterable[Mapping[str, Any]], samples: Iterable[float],
             now: float) -> dict[str, Any]:
    """The run's report (coordinator.report.run_report) with, per host, elapsed / step / ETA seconds, and the run's ETA.

    `step_events` are this run's events (any kinds), `samples` the durations of earlier hosts with this media
    (durations() of other runs); this run's finished hosts are added to them here."""
    events = list(step_events)
    samples = list(samples) + durations(events)
    expected = typical(samples)
    lines = timelines(events)
    hosts = [_host_view(h, lines.get((report["id"], h["mac"]), []), expected, now) for h in report["hosts"]]
    etas = [h["eta_seconds"] for h in hosts]
    if report["state"] in states.RUN_TERMINAL:
        run_eta: float | None = 0.0
    elif any(e is None for e in etas):
        run_eta = None
    else:  # the hosts of one wave (--parallel, docs/waves.md) go at the same time: the longest of each wave counts
        waves: dict[Any, float] = {}
        for h, eta in zip(hosts, etas):
            key = h.get("wave") if report.get("waves") else h["mac"]
            waves[key] = max(waves.get(key, 0.0), eta)
        run_eta = sum(waves.values())
    return {**report, "hosts": hosts, "eta_seconds": run_eta, "typical_host_seconds": expected,
            "samples": len(samples)}


def step_percent(step: str) -> int:
    """0..100 for a host's step (a failed host shows 100: its bar is finished, in the failure colour)."""
    if step == states.STEP_FAILED:
        return 100
    try:
        return round(100 * STEP_ORDER.index(step) / (len(STEP_ORDER) - 1))
    except ValueError:
        return 0


def bar(step: str, width: int = 12) -> str:
    """A text progress bar for a terminal, e.g. `[#####-------] 42%` (`[XXXX..] failed` for a failed host)."""
    if step == states.STEP_FAILED:
        return f"[{'X' * width}] failed"
    done = round(width * step_percent(step) / 100)
    return f"[{'#' * done}{'-' * (width - done)}] {step_percent(step):3d}%"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def render(view: Mapping[str, Any]) -> str:
    """Text for a terminal: a header with the run ETA and one row per host."""
    head = (f"run {view['id']} pool {view['pool']} -> {view['media']}: {view['state']}"
            + (f" ({view['reason']})" if view.get("reason") else "")
            + (f", ETA {format_seconds(view['eta_seconds'])}" if view["state"] not in states.RUN_TERMINAL else "")
            + (f" [typical host {format_seconds(view['typical_host_seconds'])} from {view['samples']} "
               "upgrade(s) with this media]" if view["samples"] else " [no ETA yet: no host finished with this media]"))
    rows = [(h["name"], h["role"], bar(h["step"]), h["step"], format_seconds(h["step_seconds"]), format_seconds(h["elapsed_seconds"]),
             format_seconds(h["eta_seconds"]) if h["step"] not in TERMINAL else "-",
             h.get("reason") or h.get("waiting") or "")
            for h in view["hosts"]]
    heads = ("host", "role", "progress", "step", "in step", "elapsed", "eta", "reason")
    if view.get("waves"):  # a --parallel run: each host's wave (docs/waves.md)
        heads, rows = ("wave",) + heads, [(str(h.get("wave")),) + row for h, row in zip(view["hosts"], rows)]
    return "\n".join([head, table(heads, rows)])
