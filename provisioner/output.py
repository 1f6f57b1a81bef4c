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
    return table(("mac", "pool", "name", "site", "firmware", "ip", "disk", "boot", "bmc"),
                 ((h.mac, h.pool, h.name, h.site or "-", h.firmware, h.ip, h.disk, boot_summary(h), bmc_summary(h))
                  for h in hosts))


def boot_summary(host: Host) -> str:
    """How the host network-boots: its boot method (or the pool's), the boot NIC when not `mac`, multipath."""
    parts = [host.boot_method or "pool default"]
    if host.boot_mac:
        parts.append(f"from {host.boot_mac}")
    if host.multipath:
        parts.append("multipath")
    return ", ".join(parts)


def bmc_summary(host: Host) -> str:
    """The BMC's kind, address and user, and only whether a password is set (never the password)."""
    if not host.bmc_kind:
        return "-"
    system = f" system {host.bmc_system_id}" if host.bmc_system_id else ""
    return (f"{host.bmc_kind} {host.bmc_address}{system} user {host.bmc_username}, "
            f"password {'set' if host.bmc_password_set else 'not set'}")


def host_detail(host: Host, events: Sequence[dict]) -> str:
    lines = [f"{key:16} {value if value not in (None, '') else '-'}" for key, value in host.as_dict().items()]
    if not host.disk:
        lines.append("warning          boot disk unknown: this host cannot be armed for an upgrade until --disk is set")
    lines.append("events:" if events else "events:   none")
    lines += [f"  {e['ts']}  {e['kind']}  {e['details']}" for e in events]
    return "\n".join(lines)


def media_table(media: Sequence[Media], sites: dict[str, str] | None = None) -> str:
    """`sites`: media name -> its availability per site (media_sites), shown when any server registered."""
    if not media:
        return "no media (add an extracted XenServer ISO tree with `provisioner media add NAME PATH`)"
    if sites:
        return table(("name", "product", "version", "build", "platform", "sites", "path"),
                     ((m.name, m.product_name, m.product_version, m.build, m.platform_version,
                       sites.get(m.name) or "-", m.path) for m in media))
    return table(("name", "product", "version", "build", "platform", "boot files", "path"),
                 ((m.name, m.product_name, m.product_version, m.build, m.platform_version,
                   ",".join(m.boot_files), m.path) for m in media))


def packs_table(found: Sequence) -> str:
    """Supplemental packs and driver disks of a media (model.Pack)."""
    if not found:
        return "no packs (add one with `provisioner media add-pack MEDIA PATH`)"
    return table(("name", "kind", "label", "version", "requires", "applies to", "drivers"),
                 ((p.name, "driver disk" if p.kind == "driver" else "supplemental pack", p.label, p.version,
                   _requirement(p.details.get("requires")), pack_scope(p), ",".join(p.details.get("drivers") or ()))
                  for p in found))


def pack_scope(pack) -> str:
    """Which hosts a pack goes to, in words: 'all hosts' or its MACs and pools."""
    if not pack.hosts and not pack.pools:
        return "all hosts"
    return ", ".join([*pack.hosts, *(f"pool {p}" for p in pack.pools)])


def _requirement(req) -> str:
    return f"{req['name']} {req['op']} {req['version']}" if req else "-"


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
    """The plan: hosts in order, what happens to each VM, what is turned off and back on, every precheck finding
    (code, message, fix), the other problems."""
    kind = "a pool of one: its VMs are suspended or shut down, then resumed or started" if found.standalone else (
        "VMs migrate away (host.evacuate)" + (" and back after each upgrade" if found.migrate_back else ""))
    lines = [f"pool {found.pool} -> {found.media} ({found.target}): {'ready' if found.ok else 'BLOCKED'}"]
    lines += found.carried  # settings earlier runs left off come first: this run restores them
    lines += [table(("order", "host", "mac", "version", "action", "boot method"),
                    ((i + 1, h.name, h.mac, h.version, h.action, h.boot_method) for i, h in enumerate(found.hosts)))]
    lines += [f"{h.name}: {h.note}" for h in found.hosts if h.note]
    lines += [f"{h.name}: gets " + ", ".join(f"{'driver disk' if p['kind'] == 'driver' else 'supplemental pack'} "
                                           f"{p['name']} ({p['label']}{' ' + p['version'] if p['version'] else ''})"
                                           for p in h.packs) for h in found.hosts if h.packs]
    lines += update_plan_lines(found.updates)
    if found.vms:
        lines += [f"VMs ({kind}):",
                  table(("host", "vm", "state", "action", "eject first", "afterwards"),
                        ((v.host, v.name, v.power_state, v.action, ", ".join(v.eject), v.afterwards)
                         for v in found.vms))]
    if found.power_cycle:
        lines.append("members are shut down and powered on through the pool (host.power_on); the master is "
                     "rebooted (while it is down nobody could power it on)")
    lines += [f"turned off and back on: {c}" for c in found.changes]
    lines += check_lines(found)
    from_checks = {c.line() for c in found.checks}
    lines += [f"problem: {p}" for p in found.problems if p not in from_checks]
    return "\n".join(lines)


def check_lines(found) -> list[str]:
    """Each precheck finding (coordinator/checks.py): '<LEVEL> <CODE> [host]: message', then its fix; a consent
    check the operator consented to shows as 'consented'."""
    lines = []
    for c in found.checks:
        level = "consented" if c.level == "consent" and not found.blocks(c) else c.level
        lines += [f"{level} {c.code}{' (' + c.host + ')' if c.host else ''}: {c.message}", f"  fix: {c.fix}"]
    return lines


def remedy_lines(host: dict) -> list[str]:
    """A failed host's remedy: its class and advice, then the evidence it rests on, one event a line."""
    lines = [f"remedy for {host['name']} ({host.get('remedy_class') or 'unclassified'}): {host['remedy']}"]
    if host.get("evidence"):
        lines.append(f"  evidence for {host['name']}:")
        lines += [f"    {e['when']}  {e['kind']}  {e['what']}" for e in host["evidence"]]
    return lines


def run_report(run: dict) -> str:
    """A run report (coordinator.report.run_report): hosts, VMs touched, PREPARE's changes, guest tools, warnings."""
    lines = [f"run {run['id']} pool {run['pool']} -> {run['media']}: {run['state']}"
             + (f" ({run['reason']})" if run.get("reason") else ""),
             table(("host", "role", "step", "reason"),
                   ((h["name"], h["role"], h["step"], h["reason"]) for h in run["hosts"]))]
    lines += [line for h in run["hosts"] if h.get("remedy") for line in remedy_lines(h)]
    vms = [(h["name"], v) for h in run["hosts"] for v in h.get("vms", [])]
    if vms:
        lines += ["VMs:", table(("host", "vm", "action", "done", "cds ejected (not reinserted)", "afterwards"),
                                ((host, v["name"], v["action"], v["done"], ", ".join(v["cds_ejected"]),
                                  v["afterwards"]) for host, v in vms))]
    lines += [f"{'turned off by PREPARE' if c['state'] == 'changed' else 'PREPARE change'}: "
              f"{c['what']}{' of VM ' + c['vm'] if c.get('vm') else ''}: {c['state']}" for c in run.get("prepare", [])]
    lines += [f"VM {v['name']} stopped by the run ({v['how']}) and not running again" for v in
              run.get("vms_not_restored", [])]
    tools = run.get("guest_tools")
    if tools:
        lines += guest_tools_lines(tools)
    lines += level_lines(run.get("levels"))
    lines += [f"warning ({h['name']}): {w}" for h in run["hosts"] for w in h.get("warnings", [])]
    lines += [f"warning: {w}" for w in run.get("warnings", [])]
    return "\n".join(lines)


def update_plan_lines(updates: dict | None) -> list[str]:
    """`--updates NAME` in the plan: the repository, then what CONVERGE applies to each host (coordinator/
    converge_plan.py)."""
    if not updates:
        return []
    lines = [f"updates {updates['name']} ({updates['kind']}, {updates['product_version'] or 'product not checked'}): "
             f"{len(updates['updates'])} update(s), applied by CONVERGE after each host's upgrade, then in FINALIZE"]
    lines += [f"  {h['host']}: " + ("at the level already" if h["at_level"] else ", ".join(h["to_apply"]) or "nothing")
              for h in updates["hosts"]]
    return lines


def level_lines(levels: dict | None) -> list[str]:
    """FINALIZE's record of each host's version, build and update level, and the hosts left behind (converge.py)."""
    if not levels:
        return []
    lines = ["hosts at the end:", table(("host", "version", "build", "update level", "pending guidances"), (
        (h["name"], h["product_version"], h["build_number"], h["last_update_hash"][:12] or "base",
         ", ".join(h["pending"]) or "-") for h in levels["hosts"]))]
    lines += [f"LEFT BEHIND: {x['name']}: {x['why']}" for x in levels["left_behind"]]
    if levels.get("replaced_repositories"):
        lines.append("the run's update repository is now the pool's enabled one; it replaced repositories "
                     f"{', '.join(levels['replaced_repositories'])} (`xe pool-param-set repositories=...` to go back)")
    return lines


def guest_tools_lines(tools: dict) -> list[str]:
    """FINALIZE's guest-tools report (PV_drivers_up_to_date / PV_drivers_detected, as XenCenter); a report stored
    before issue 14 (older / unknown, by version) still prints."""
    if "not_up_to_date" not in tools:
        older = ", ".join(f"{v['name']} ({v['version']})" for v in tools.get("older", []))
        unknown = ", ".join(v["name"] for v in tools.get("unknown", []))
        return [f"guest tools older than {tools.get('target')}: {older or 'none'} ({tools.get('checked')} VMs checked)"
                ] + ([f"guest tools not shown by XAPI: {unknown}"] if unknown else [])
    stale = ", ".join(v["name"] + (f" ({v['version']})" if v.get("version") else "") for v in tools["not_up_to_date"])
    lines = [f"guest tools not up to date: {stale or 'none'} ({tools['checked']} running VMs checked"
             + (f", {tools['not_running']} not running" if tools.get("not_running") else "")
             + "; upgrade them from the guest-tools ISO)"]
    if tools["no_tools"]:
        lines.append(f"no guest tools detected: {', '.join(v['name'] for v in tools['no_tools'])}")
    return lines


def restore_settings(done: dict) -> str:
    """`upgrade restore-settings`: what was put back, what already was, what could not be and why."""
    lines = [f"restored: {s}" for s in done["restored"]]
    lines += [f"already back on: {s}" for s in done["already_back"]]
    lines += [f"NOT restored: {n['setting']}: {n['why']}" for n in done["not_restored"]]
    return "\n".join(lines) or f"pool {done['pool']}: nothing left off by earlier runs"
