"""Plain-text formatting for the CLI (no click here: these are pure functions, tested directly)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from provisioner.model import Host, Media


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A left-aligned text table; None shows as '-'."""
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def hosts_table(hosts: Sequence[Host]) -> str:
    if not hosts:
        return "no hosts registered"
    return table(("mac", "pool", "name", "firmware", "ip", "disk"),
                 ((h.mac, h.pool, h.name, h.firmware, h.ip, h.disk) for h in hosts))


def host_detail(host: Host, events: Sequence[dict]) -> str:
    lines = [f"{key:9} {value if value not in (None, '') else '-'}" for key, value in host.as_dict().items()]
    if not host.disk:
        lines.append("warning   boot disk unknown: this host cannot be armed for an upgrade until --disk is set")
    lines.append("events:" if events else "events:   none")
    lines += [f"  {e['ts']}  {e['kind']}  {e['details']}" for e in events]
    return "\n".join(lines)


def media_table(media: Sequence[Media]) -> str:
    if not media:
        return "no media (add an extracted XenServer ISO tree with `provisioner media add NAME PATH`)"
    return table(("name", "product", "version", "build", "platform", "boot files", "path"),
                 ((m.name, m.product_name, m.product_version, m.build, m.platform_version,
                   ",".join(m.boot_files), m.path) for m in media))


def attempts_table(found: Sequence) -> str:
    if not found:
        return "no attempts"
    return table(("id", "media", "state", "runs", "exit", "created", "started", "finished"),
                 ((a.id, a.media, a.state, f"{a.runs}/{a.max_runs}", a.exit_code, a.created_at, a.started_at,
                   a.finished_at) for a in found))


def discovery(found) -> str:
    lines = [f"added: {', '.join(found.added) or 'none'}", f"already registered: {', '.join(found.unchanged) or 'none'}"]
    lines += [f"CONFLICT (left alone): {c}" for c in found.conflicts]
    return "\n".join(lines)


def plan(found) -> str:
    lines = [f"pool {found.pool} -> {found.media} ({found.target}): {'ready' if found.ok else 'BLOCKED'}",
             table(("order", "host", "mac", "version", "action"),
                   ((i + 1, h.name, h.mac, h.version, h.action) for i, h in enumerate(found.hosts)))]
    lines += [f"problem: {p}" for p in found.problems]
    return "\n".join(lines)


def run_report(run: dict) -> str:
    lines = [f"run {run['id']} pool {run['pool']} -> {run['media']}: {run['state']}"
             + (f" ({run['reason']})" if run.get("reason") else ""),
             table(("host", "role", "step", "reason"),
                   ((h["name"], h["role"], h["step"], h["reason"]) for h in run["hosts"]))]
    lines += [f"remedy for {h['name']}: {h['remedy']}" for h in run["hosts"] if h.get("remedy")]
    return "\n".join(lines)
