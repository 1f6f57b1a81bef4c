"""Prometheus metrics (the only module importing prometheus_client).

Two sources, chosen per metric for exactness:
- The events table, read at scrape time by a custom collector (EventTally): TFTP transfers, bytes and
  durations (every finished transfer is a `tftp.sent`/`tftp.aborted` event with bytes and seconds), refusals,
  attempts by state and outcome, run and step durations, XAPI calls and errors by code, and every event kind.
  These counters equal the events table by construction and survive restarts (a new process replays the
  table once, then reads only the rows added since the last scrape; event ids grow in commit order because
  SQLite serializes writers). TFTP events reach the table through the runtime's EventWriter queue, so they
  lag a transfer by milliseconds.
- In-process instruments for what the events table does not hold: every HTTP request (kind, method,
  status, response bytes, handler latency), fed by provisioner.web.metrics. They restart at zero.

Labels are bounded and carry nothing secret: no MAC, no token, no URL, no password.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
from typing import Any, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from provisioner import states

KINDS = ("config", "loader", "kernel", "install.img", "answerfile", "script", "api", "other")
"""Fetch kinds, the `kind` label of TFTP and HTTP metrics (kernel = xen.gz / xen.efi / vmlinuz)."""

FETCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 120.0, 300.0)
RUN_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)
STEP_BUCKETS = (0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)

_KERNELS = frozenset({"xen.gz", "xen.efi", "vmlinuz"})
_LOADER_SUFFIXES = (".0", ".c32", ".efi", ".kpxe", ".pxe", ".lkrn")
_XAPI_CODE = re.compile(r"""\[\s*['"]([A-Z][A-Z0-9_]{1,63})['"]""")


def file_kind(name: Any, source: str | None = None) -> str:
    """The kind of a fetched file: a TFTP name or a path inside a media tree or tftp_root."""
    if source == "dynamic":
        return "config"  # rendered per-MAC answers (pxelinux.cfg/01-<mac>, grub.cfg-01-<mac>, ...)
    if not isinstance(name, str) or not name:
        return "other"
    path = name.strip().lstrip("/").lower()
    base = path.rpartition("/")[2]
    if base in _KERNELS:
        return "kernel"
    if base == "install.img":
        return "install.img"
    if path.startswith("pxelinux.cfg/") or base.startswith("grub.cfg") or base.endswith((".cfg", ".ipxe")):
        return "config"
    if base.endswith(_LOADER_SUFFIXES):
        return "loader"
    return "other"


def http_kind(path: str) -> str:
    """The kind of an HTTP request path (see provisioner.boot.urls for the layout)."""
    parts = path.split("/")  # "", "boot", "answerfile", ...
    top = parts[1] if len(parts) > 1 else ""
    if top == "boot" and len(parts) > 2:
        return {"answerfile": "answerfile", "script": "script", "report": "script", "ipxe": "config"}.get(
            parts[2], "other")
    if top == "media" and len(parts) > 3:
        return file_kind("/".join(parts[3:]))
    if top == "tftp" and len(parts) > 2:
        return file_kind("/".join(parts[2:]))
    if top == "api":
        return "api"
    return "other"


def xapi_error_code(error: Any) -> str:
    """The XAPI error code of an `xapi.call` event's error text ("['HOST_IS_SLAVE', ...]"), else UNREACHABLE
    (our driver's XapiUnreachable: refused, reset, timed out) or OTHER."""
    text = str(error or "")
    match = _XAPI_CODE.match(text)
    if match:
        return match.group(1)
    return "UNREACHABLE" if text.startswith(("http://", "https://")) else "OTHER"


def _ts(text: Any) -> float | None:
    try:
        return _dt.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


class _Buckets:
    """A cumulative histogram kept in plain Python, for metrics derived from events."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds, self.counts, self.total, self.count = bounds, [0] * len(bounds), 0.0, 0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def rows(self) -> list[tuple[str, float]]:
        return [(repr(b), c) for b, c in zip(self.bounds, self.counts)] + [("+Inf", self.count)]


class EventTally:
    """Counters, gauges and histograms derived from the events table, read incrementally."""

    def __init__(self, store: Any, *, page: int = 5000):
        self.store, self.page, self.last_id = store, page, 0
        self.lock = threading.Lock()
        self.events: dict[str, int] = {}
        self.tftp_requests: dict[tuple[str, str], int] = {}  # (kind, outcome) -> count
        self.tftp_bytes: dict[str, int] = {}
        self.tftp_refused: dict[str, int] = {}
        self.tftp_seconds: dict[str, _Buckets] = {}
        self.attempt_state: dict[int, str] = {}
        self.attempt_outcomes: dict[str, int] = {}
        self.run_state: dict[str, str] = {}
        self.run_started: dict[str, float] = {}
        self.run_seconds: dict[str, _Buckets] = {}
        self.step_entered: dict[tuple[str, str], tuple[str, float]] = {}
        self.step_seconds: dict[str, _Buckets] = {}
        self.xapi_calls: dict[tuple[str, str], int] = {}
        self.xapi_errors: dict[str, int] = {}

    def update(self) -> int:
        """Read the events added since the last call; returns how many were read."""
        read = 0
        with self.lock:
            while True:
                rows = self.store.events(since_id=self.last_id, limit=self.page)
                for event in rows:
                    self._apply(event)
                    self.last_id = event["id"]
                read += len(rows)
                if len(rows) < self.page:
                    return read

    def _apply(self, event: dict) -> None:
        kind, details = event["kind"], event.get("details") or {}
        self.events[kind] = self.events.get(kind, 0) + 1
        family = kind.partition(".")[0]
        if family == "tftp":
            self._tftp(kind, details)
        elif family == "attempt":
            self._attempt(kind, details)
        elif family == "run":
            self._run(event, details)
        elif family == "step":
            self._step(event, details)
        elif kind == "xapi.call":
            method = str(details.get("method") or "unknown")[:64]
            ok = bool(details.get("ok"))
            key = (method, "ok" if ok else "error")
            self.xapi_calls[key] = self.xapi_calls.get(key, 0) + 1
            if not ok:
                code = xapi_error_code(details.get("error"))
                self.xapi_errors[code] = self.xapi_errors.get(code, 0) + 1

    def _tftp(self, kind: str, d: dict) -> None:
        outcome = kind.partition(".")[2]
        name = d.get("file")
        fkind = file_kind(None if name in (None, "None") else name, d.get("source"))
        if outcome in ("sent", "aborted"):
            count = int(d.get("count") or 1) if d.get("sampled") else 1  # store.events: a summary row
            self.tftp_bytes[fkind] = self.tftp_bytes.get(fkind, 0) + int(d.get("bytes") or 0)
            if outcome == "sent" and isinstance(d.get("seconds"), (int, float)):
                self.tftp_seconds.setdefault(fkind, _Buckets(FETCH_BUCKETS)).observe(float(d["seconds"]))
        elif outcome == "refused" or d.get("sampled"):
            count = int(d.get("count") or 1)  # a rate-limited or sampled summary stands for `count` events
            reason = str(d.get("reason") or "unknown")[:64]
            self.tftp_refused[reason] = self.tftp_refused.get(reason, 0) + count
        else:
            count = 1
        key = (fkind, outcome)
        self.tftp_requests[key] = self.tftp_requests.get(key, 0) + count

    def _attempt(self, kind: str, d: dict) -> None:
        attempt = d.get("attempt")
        if not isinstance(attempt, int):
            return
        new = states.ARMED if kind == "attempt.armed" else d.get("to")
        if new not in states.ATTEMPT_STATES:
            return  # a fetch, refusal or ignored report: no state change
        self.attempt_state[attempt] = new
        if new in states.ATTEMPT_TERMINAL:
            self.attempt_outcomes[new] = self.attempt_outcomes.get(new, 0) + 1

    def _run(self, event: dict, d: dict) -> None:
        run_id, when = event.get("run_id"), _ts(event.get("ts"))
        new = states.RUN_PRECHECK if event["kind"] == "run.precheck" else d.get("to")
        if run_id is None or new not in states.RUN_STATES:
            return
        self.run_state[run_id] = new
        if new == states.RUN_PRECHECK and when is not None:
            self.run_started[run_id] = when
        elif new in states.RUN_TERMINAL:
            started = self.run_started.pop(run_id, None)
            if started is not None and when is not None:
                self.run_seconds.setdefault(new, _Buckets(RUN_BUCKETS)).observe(when - started)

    def _step(self, event: dict, d: dict) -> None:
        key, when, new = (str(event.get("run_id")), str(event.get("mac"))), _ts(event.get("ts")), d.get("to")
        if new not in states.HOST_STEPS or when is None:
            return
        entered = self.step_entered.pop(key, None)
        if entered is not None and entered[0] == d.get("from"):
            self.step_seconds.setdefault(entered[0], _Buckets(STEP_BUCKETS)).observe(when - entered[1])
        if new not in states.HOST_TERMINAL:
            self.step_entered[key] = (new, when)


def _counter(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


def _histogram(name: str, doc: str, label: str, values: dict[str, _Buckets]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, buckets in sorted(values.items()):
        family.add_metric([key], buckets.rows(), buckets.total)
    return family


class _EventCollector:
    """prometheus_client custom collector over an EventTally (updated at each scrape)."""

    def __init__(self, tally: EventTally):
        self.tally = tally

    def collect(self) -> Iterable[Any]:
        t = self.tally
        t.update()
        with t.lock:
            yield _counter("provisioner_events", "Rows of the events table, by event kind.", ["event"], t.events)
            counters = getattr(t.store, "event_counters", lambda: {})()
            yield _counter("provisioner_events_sampled", "Unauthenticated events counted into summary rows instead "
                           "of stored one by one (per-kind, per-address budgets), by kind, since start.", ["event"],
                           counters.get("sampled", {}))
            yield _counter("provisioner_events_dropped", "Events that could not be written (full disk, full queue, "
                           "read-only database) and were dropped, by kind, since start.", ["event"],
                           counters.get("dropped", {}))
            yield _counter("provisioner_tftp_requests", "TFTP read requests by fetch kind and outcome "
                           "(sent, aborted, refused, error).", ["kind", "outcome"], t.tftp_requests)
            yield _counter("provisioner_tftp_bytes", "Bytes sent over TFTP (finished and aborted transfers).",
                           ["kind"], t.tftp_bytes)
            yield _counter("provisioner_tftp_refused", "TFTP requests refused, by reason.", ["reason"],
                           t.tftp_refused)
            yield _histogram("provisioner_tftp_transfer_seconds", "Duration of completed TFTP transfers "
                             "(request to last ACK).", "kind", t.tftp_seconds)
            attempts = GaugeMetricFamily("provisioner_attempts", "Installer attempts by current state "
                                         "(state=armed: hosts whose next network boot installs).", labels=["state"])
            for state in states.ATTEMPT_STATES:
                attempts.add_metric([state], sum(1 for s in t.attempt_state.values() if s == state))
            yield attempts
            yield _counter("provisioner_attempts_finished", "Attempts that reached a final state, by outcome.",
                           ["outcome"], t.attempt_outcomes)
            runs = GaugeMetricFamily("provisioner_runs", "Upgrade runs by current state.", labels=["state"])
            for state in states.RUN_STATES:
                runs.add_metric([state], sum(1 for s in t.run_state.values() if s == state))
            yield runs
            yield _histogram("provisioner_run_duration_seconds", "Upgrade run durations (start to final state), "
                             "by final state.", "outcome", t.run_seconds)
            yield _histogram("provisioner_step_duration_seconds", "Time a host spent in each upgrade step.",
                             "step", t.step_seconds)
            yield _counter("provisioner_xapi_calls", "Destructive XAPI calls by method and outcome.",
                           ["method", "outcome"], t.xapi_calls)
            yield _counter("provisioner_xapi_errors", "Failed XAPI calls by error code.", ["code"], t.xapi_errors)


class Metrics:
    """One registry per app: the event-derived collector plus the HTTP instruments."""

    def __init__(self, store: Any):
        self.registry = CollectorRegistry()
        self.tally = EventTally(store)
        self.registry.register(_EventCollector(self.tally))
        self.http_requests = Counter("provisioner_http_requests", "HTTP requests by fetch kind, method and status.",
                                     ["kind", "method", "status"], registry=self.registry)
        self.http_bytes = Counter("provisioner_http_response_bytes", "HTTP response body bytes by fetch kind "
                                  "(Content-Length; 0 for HEAD and bodiless answers).", ["kind"],
                                  registry=self.registry)
        self.http_seconds = Histogram("provisioner_http_request_duration_seconds", "HTTP handler latency by fetch "
                                      "kind (until the answer is ready; file bodies then go out by sendfile).",
                                      ["kind"], buckets=FETCH_BUCKETS, registry=self.registry)

    def observe_http(self, kind: str, method: str, status: int, nbytes: int, seconds: float) -> None:
        kind = kind if kind in KINDS else "other"
        method = method if method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") else "OTHER"
        self.http_requests.labels(kind, method, str(int(status))).inc()
        self.http_bytes.labels(kind).inc(max(0, int(nbytes or 0)))
        self.http_seconds.labels(kind).observe(max(0.0, seconds))

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
