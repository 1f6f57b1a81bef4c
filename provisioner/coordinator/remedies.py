"""What to do about a host that FAILED its upgrade, chosen from evidence (docs/remedies.md), never from the role alone.

The evidence is where the host failed (its step), what its installer attempt shows (the `attempt.*` events of
this run: boot config fetched, answer file served, start script seen, complete report and its exit code) and
what XAPI shows now (live? which version? enabled?). `classify` is pure: it turns those Facts into a Remedy
(class, operator text, the events it rests on, whether the host is down or in an unknown state). `assess`
gathers the Facts when the runner has the driver (at failure time); `from_store` is the store-only fallback
run_report() uses when no remedy was journaled (a crash right after the failure).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping

from provisioner import registry, states
from provisioner.coordinator import journal
from provisioner.coordinator.context import Context, error_code, find
from provisioner.coordinator.plan import at_target
from provisioner.coordinator.remedy_facts import (
    AFTER_TARGET, AT_TARGET, BROKEN_AFTER_INSTALL, CLASSES, DESTRUCTIVE, DOWN_OR_UNKNOWN, EVIDENCE_LIMIT,
    INSTALLER_FAILED_INTACT, NOT_NETWORK_BOOTED, NOTHING_CHANGED, OPERATOR_MARKED, PRE_REBOOT, STILL_INSTALLING,
    UNKNOWN, Facts, Remedy, Seen, attempt_events, failed_step, installer_seen, sent)
from provisioner.coordinator.remedy_text import describe_error, seen_text, text
from provisioner.store import Run, RunHost, Store
from provisioner.xapi import HostInfo, XapiError, XapiUnreachable

__all__ = ["CLASSES", "DESTRUCTIVE", "DOWN_OR_UNKNOWN", "NOTHING_CHANGED", "NOT_NETWORK_BOOTED",
           "INSTALLER_FAILED_INTACT", "BROKEN_AFTER_INSTALL", "AT_TARGET", "STILL_INSTALLING", "UNKNOWN",
           "OPERATOR_MARKED", "Facts", "Seen", "Remedy", "failed_step", "describe_error", "classify", "assess",
           "from_store", "journaled"]
"""Its callers' names (the vocabulary lives in remedy_facts.py, the operator texts in remedy_text.py)."""


def _summary(event: Mapping[str, Any]) -> str:
    kind, d = event["kind"], event["details"]
    if kind == "attempt.fetch":
        where = f" from {d['client']}" if d.get("client") else ""
        return f"attempt {d.get('attempt')}: fetched {d.get('what')}{where}"
    if kind.startswith("attempt.") and "to" in d:
        return f"attempt {d.get('attempt')}: {d.get('from')} -> {d['to']}" + (
            f" (exit code {d['code']})" if d.get("code") not in (None, "") else "")
    if kind == "xapi.call":
        return f"XAPI {d.get('method')}: " + ("ok" if d.get("ok") else f"failed: {d.get('error', '')}")
    if kind == "host_plugin.download":
        when = "after its reboot" if d.get("phase") == "installer" else "during prepare_host_upgrade.py main"
        return f"fetched {d.get('what')} ({d.get('path')}) from our HTTP server {when}, from {d.get('client')}"
    if kind.startswith("step."):
        return f"step {d.get('from')} -> {d.get('to')}" + (f": {d['reason']}" if d.get("reason") else "")
    return ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("host", "client") and v not in (None, ""))


def _proves(event: Mapping[str, Any]) -> bool:
    """Events that prove something about a failure: the failure itself, XAPI calls that failed or undid or
    rebooted, the attempt's life (fetches, start, report, disarm), and what the waits / the operator recorded."""
    kind, d = event["kind"], event["details"]
    if kind == "xapi.call":
        return d.get("ok") is False or d.get("method") in ("host.enable", "host.reboot", "host.shutdown",
                                                           "host.power_on")
    return kind in ("step.failed", "step.reboot", "host.power_on_unseen") or kind.startswith(
        ("attempt.", "host.still_installing", "host.marked_failed", "host_plugin."))


def _evidence(facts: Facts) -> list[dict[str, Any]]:
    mine = {e["id"] for e in attempt_events(facts)}
    rows = [e for e in facts.events if _proves(e) and (not e["kind"].startswith("attempt.") or e["id"] in mine)]
    found = [{"kind": e["kind"], "when": e["ts"], "what": _summary(e)[:300]} for e in rows][-EVIDENCE_LIMIT:]
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat()
    for vm, err in sorted(facts.blockers.items()):
        found.append({"kind": "xapi.evacuation_blocker", "when": stamp, "what": f"VM {vm}: {describe_error(err)}"})
    if facts.now is not None:
        found.append({"kind": "xapi.now", "when": stamp, "what": seen_text(facts.now)})
    return found


def classify(facts: Facts) -> Remedy:
    """The remedy class, operator text and evidence for a failed host; pure (docs/remedies.md has the table)."""
    seen = installer_seen(facts)
    now = facts.now
    live = now is not None and now.answered and now.live
    entered = seen["entered"] is not None  # host-plugin: the installer read the repository after the reboot
    ran = seen["answerfile"] or seen["started"] or seen["code"] is not None or entered
    refused_reboot = facts.step == states.STEP_REBOOT and not sent(facts, "host.reboot", "host.shutdown")
    if facts.step in AFTER_TARGET or (live and now.at_target):
        cls = AT_TARGET
    elif facts.step in PRE_REBOOT or refused_reboot:
        cls = NOTHING_CHANGED
    elif now is None:  # XAPI not asked: only the attempt speaks (started, no report: it may still be installing)
        cls = STILL_INSTALLING if (seen["started"] or entered) and seen["code"] is None else UNKNOWN
    elif live:  # back at its old version and healthy: never forget, reinstall or restore (the property test)
        cls = INSTALLER_FAILED_INTACT if ran else NOT_NETWORK_BOOTED
    elif seen["code"] is not None and seen["started"]:
        cls = BROKEN_AFTER_INSTALL
    elif seen["started"]:
        cls = BROKEN_AFTER_INSTALL if OPERATOR_MARKED in facts.reason else STILL_INSTALLING
    elif entered:  # host-plugin: in its installer, and nothing says whether it wrote the disk (no start script seen)
        cls = UNKNOWN if OPERATOR_MARKED in facts.reason else STILL_INSTALLING
    elif not now.answered and facts.role == "master" and not ran:
        cls = NOT_NETWORK_BOOTED if facts.attempt_id is not None else UNKNOWN
    else:  # down, and no installer got past its start: the disk is untouched
        cls = INSTALLER_FAILED_INTACT if ran else NOT_NETWORK_BOOTED
    down = not live or cls in DOWN_OR_UNKNOWN
    return Remedy(cls, text(cls, facts, seen), _evidence(facts), down)


def _run_events(store: Store, run_id: str, mac: str) -> list[dict[str, Any]]:
    found, since = [], 0
    while True:
        batch = store.events(run_id=run_id, mac=mac, since_id=since, limit=1000)
        found += batch
        if len(batch) < 1000:
            return found
        since = batch[-1]["id"]


def _facts(store: Store, run: Run, rh: RunHost, target: str, **kw: Any) -> Facts:
    host = store.get_host(rh.mac)
    bmc = f" (BMC {host.bmc_kind} {host.bmc_address})" if host is not None and host.bmc_kind else ""
    boot = registry.boot_method_of(store, host) + bmc if host is not None else ""
    return Facts(rh.name, rh.mac, rh.uuid, rh.role, run.pool, run.media, failed_step(rh.reason), rh.reason or "",
                 target, _run_events(store, run.id, rh.mac), rh.attempt_id, boot=boot, **kw)


def _seen(info: HostInfo | None, ctx: Context) -> Seen:
    if info is None:
        return Seen(answered=False)
    return Seen(True, info.live, info.product_version, info.build_number, info.enabled, at_target(info, ctx.media))


def assess(ctx: Context, rh: RunHost, error: BaseException | None = None) -> Remedy:
    """Classify a host that just FAILED: reads its events, asks XAPI what it is now (and, after EVACUATE, which
    VMs prevent evacuation and why: host.get_vms_which_prevent_evacuation)."""
    info = find(ctx, rh.uuid)
    blockers: dict[str, list[str]] = {}
    if failed_step(rh.reason) == states.STEP_EVACUATE and info is not None and info.live:
        try:
            names = {v.ref: v.name for v in ctx.driver.vms()}
            for vm, err in ctx.driver.evacuation_blockers(info.ref).items():
                if err and err[0] == "HOST_NOT_ENOUGH_FREE_MEMORY":  # [vm] in a plan: add how much is short
                    err = [*err, *map(str, ctx.driver.memory_needs(vm, info.ref))]
                blockers[names.get(vm, vm)] = [err[0], *(names.get(p, p) for p in err[1:])] if err else []
        except (XapiError, XapiUnreachable):
            blockers = {}
    details = [str(d) for d in getattr(error, "details", None) or []] if error_code(error) else []
    if details and not blockers:
        try:
            names = {v.ref: v.name for v in ctx.driver.vms()}
            details = [details[0], *(names.get(p, p) for p in details[1:])]
        except (XapiError, XapiUnreachable):
            pass
    run = ctx.store.get_run(ctx.run_id)
    target = f"{ctx.media.product_version} build {ctx.media.build}"
    return classify(_facts(ctx.store, run, rh, target, now=_seen(info, ctx), blockers=blockers, error=details))


def from_store(store: Store, run: Run, rh: RunHost) -> Remedy:
    """The store-only classification run_report() falls back on when no remedy was journaled for a failed host."""
    return classify(_facts(store, run, rh, run.media))


def journaled(store: Store, run_id: str, mac: str) -> dict[str, Any] | None:
    """The last remedy journaled for the host in this run ({cls, text, evidence, host_down}), or None."""
    return journal.last(store, run_id, journal.REMEDY, mac=mac)
