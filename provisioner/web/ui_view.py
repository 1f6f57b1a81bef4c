"""What the dashboard shows, built in plain Python (no Flask): pool and run summaries, progress, host timelines.

Everything here is also what the live-update JSON returns, so the page and its updates cannot disagree.
Secrets never leave this module: pool passwords are not read, URL credentials are cut, and attempt tokens
(in event details or in logged URL paths) are shortened to a 6-character prefix.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any, Iterable, Mapping

from provisioner import states
from provisioner.coordinator.report import run_report
from provisioner.model import TOKEN_PATHS
from provisioner.progress import step_percent
from provisioner.store import Store

TIMELINE_LIMIT = 2000
_SECRET_KEYS = ("token", "password", "passwd", "secret")
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_TOKEN_PATH = re.compile(f"({TOKEN_PATHS})" + r"([^/?#\s]{0,6})[^/?#\s]*")  # keeps a token's first 6 characters
_ERROR_KINDS = ("failed", "refused", "crashed", "unknown_token", "stale_token", "not_found", "bad_name",
                "render_failed", "aborted", "blocked", "bad_script_stage")


def when(ts: str | None) -> str:
    """A stored UTC timestamp as the pages show it: '2026-01-31 12:34:56.789' (every time shown is UTC)."""
    if not ts:
        return ""
    return ts[:23].replace("T", " ") if ts.endswith("+00:00") else ts


def safe_url(url: str) -> str:
    """The URL without any user:password@ part (a pool URL may have been registered with one)."""
    parts = urllib.parse.urlsplit(url or "")
    if parts.username is None and parts.password is None:
        return url or ""
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub(text: str) -> str:
    """Text safe to show: URL credentials removed, attempt tokens in boot paths cut to 6 characters."""
    text = _URL_CREDENTIALS.sub(r"\1", text)
    return _TOKEN_PATH.sub(lambda m: m.group(1) + m.group(2) + "…", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of an event detail value safe to show: secrets shortened, URL credentials and token paths cut."""
    if any(word in key.lower() for word in _SECRET_KEYS):
        return (value[:6] + "…") if isinstance(value, str) and value else "…"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def run_view(report: Mapping[str, Any], running_ids: Iterable[str]) -> dict[str, Any]:
    """A run report (report.run_report) with progress per host and for the run, and what can be done with it; a failed
    host keeps its remedy, remedy class and the evidence it rests on (remedies.py)."""
    active = report["state"] not in states.RUN_TERMINAL
    hosts = [{"mac": h["mac"], "name": h["name"], "role": h["role"], "step": h["step"],
              "reason": scrub(h["reason"] or "") or None, "remedy": h.get("remedy"),
              "waiting": scrub(h.get("waiting") or "") or None,  # what the run waits for at it (members.py)
              "remedy_class": h.get("remedy_class"), "evidence": [redact(e) for e in h.get("evidence") or []],
              "attempt_id": h["attempt_id"], "percent": step_percent(h["step"]),
              "failed": h["step"] == states.STEP_FAILED, "done": h["step"] == states.STEP_DONE,
              "wave": h.get("wave")}  # a --parallel run's wave (docs/waves.md), else None
             for h in report["hosts"]]
    percent = round(sum(h["percent"] for h in hosts) / len(hosts)) if hosts else (0 if active else 100)
    return {"id": report["id"], "pool": report["pool"], "media": report["media"], "state": report["state"],
            "reason": scrub(report["reason"] or "") or None, "abort_requested": report["abort_requested"],
            "stop_on_failure": report["stop_on_failure"], "created_at": report["created_at"],
            "updated_at": report["updated_at"], "active": active, "driven_here": report["id"] in set(running_ids),
            "percent": percent, "done_hosts": sum(h["done"] for h in hosts),
            "failed_hosts": sum(h["failed"] for h in hosts), "hosts": hosts, "waves": bool(report.get("waves")),
            "levels": report.get("levels")}  # FINALIZE's versions, builds, update levels, hosts left behind


def pool_names(store: Store) -> list[str]:
    """Registered pools (with XAPI credentials) and pools that only appear in the host registry."""
    return sorted({p.name for p in store.list_pools()} | {h.pool for h in store.list_hosts()})


def _trust(record) -> str:
    """How the pool's certificate is trusted, for the pool page (docs/xapi.md "TLS")."""
    if record.tls_fingerprint:
        fp = record.tls_fingerprint
        return "certificate pinned, SHA-256 " + ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()
    if record.tls_ca:
        return "certificate checked against its stored CA"
    return "plain http: the password crosses the network in clear" if record.url.startswith("http:") else \
        "system CA store (a self-signed certificate is refused: `provisioner pools trust`)"


def pool_view(store: Store, name: str, running_ids: Iterable[str], *, history: int = 1) -> dict[str, Any]:
    """One pool: where it connects (no credentials), its registered hosts, and its newest `history` runs."""
    record = store.get_pool(name)
    runs = store.list_runs(name)[:history]
    return {"name": name, "registered": record is not None,
            "url": safe_url(record.url) if record else None, "username": record.username if record else None,
            "trust": _trust(record) if record else None,
            "hosts": len(store.list_hosts(pool=name)),
            "runs": [run_view(run_report(store, r.id), running_ids) for r in runs]}


def status(store: Store, running_ids: Iterable[str]) -> dict[str, Any]:
    """The live-update payload: every pool with its newest run."""
    running_ids = list(running_ids)
    pools = []
    for name in pool_names(store):
        view = pool_view(store, name, running_ids)
        pools.append({"name": name, "run": view["runs"][0] if view["runs"] else None})
    return {"pools": pools}


def _level(kind: str, details: Mapping[str, Any]) -> str:
    if details.get("ok") is False or details.get("error") or any(kind.endswith(k) for k in _ERROR_KINDS):
        return "error"
    if kind in ("attempt.succeeded", "step.done", "run.done") or details.get("ok") is True:
        return "ok"
    return "info"


def _summary(kind: str, d: Mapping[str, Any]) -> str:
    """One readable line for an event; unknown kinds list their details."""
    if kind == "attempt.fetch":
        extra = f" ({d['file']})" if d.get("file") else ""
        return f"fetched {d.get('what', '?')}{extra}" + (f", {d['bytes']} bytes" if d.get("bytes") else "")
    if kind == "host_plugin.download":  # boot/downloads.py: the first of its kind since prepare_host_upgrade main
        when = "after its reboot" if d.get("phase") == "installer" else "during prepare_host_upgrade.py main"
        return f"fetched {d.get('what', '?')} ({d.get('path', '')}) from our HTTP server {when} (host-plugin)"
    if kind == "xapi.call":
        return f"XAPI {d.get('method', '?')}: " + ("ok" if d.get("ok") else f"failed: {d.get('error', '')}")
    if kind.startswith("step."):
        line = f"step {d.get('from', '?')} -> {d.get('to', kind[5:])}"
        return line + (f": {d['reason']}" if d.get("reason") else "")
    if kind.startswith("attempt.") and "to" in d:
        return f"attempt {d.get('attempt', '?')}: {d.get('from')} -> {d['to']}" + (
            f" (exit code {d['code']})" if d.get("code") not in (None, "") else "")
    if kind == "run.progress":
        return str(d.get("line", ""))
    if d.get("error"):
        return str(d["error"])
    skip = {"client", "host"}
    return ", ".join(f"{k}={v}" for k, v in d.items() if k not in skip and v not in (None, "", [], {}))


def timeline_row(event: Mapping[str, Any]) -> dict[str, Any]:
    """An events-table row as the timeline shows it (details redacted)."""
    details = redact(event.get("details") or {})
    return {"id": event["id"], "ts": event["ts"], "time": when(event["ts"]), "kind": event["kind"], "run_id": event.get("run_id"),
            "attempt": details.get("attempt"), "client": details.get("client"),
            "summary": _summary(event["kind"], details)[:500], "level": _level(event["kind"], details)}


def host_timeline(store: Store, mac: str, *, since: int = 0,
                  limit: int = TIMELINE_LIMIT) -> tuple[list[dict[str, Any]], bool]:
    """The host's events (oldest first) after event id `since`; (rows, whether more are left)."""
    events = store.events(mac=mac, since_id=since, limit=limit + 1)
    return [timeline_row(e) for e in events[:limit]], len(events) > limit


def run_events(store: Store, run_id: str, *, since: int = 0, last: int = 40) -> list[dict[str, Any]]:
    """The newest `last` events of a run after event id `since` (progress lines, steps, XAPI calls), oldest first."""
    return [timeline_row(e) for e in store.events(run_id=run_id, since_id=since, limit=100_000)[-last:]]
