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
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from provisioner import registry, states
from provisioner.boot import attempts
from provisioner.coordinator import journal
from provisioner.coordinator.context import Context, error_code, find
from provisioner.coordinator.plan import at_target
from provisioner.store import Run, RunHost, Store
from provisioner.xapi import HostInfo, XapiError, XapiUnreachable

NOTHING_CHANGED = "nothing_changed"
"""Failed before its reboot (CHECK, DISABLE, EVACUATE, ARM, or a refused host.reboot): the host still runs its old
system, the run re-enabled it; fix the blocker and retry. Never forget, reinstall or restore."""
NOT_NETWORK_BOOTED = "not_network_booted"
"""Rebooted but never reached the installer (no boot config, or no answer file, fetched on its attempt): boot
order / boot method problem; its disk is untouched. Fix the boot path and retry."""
INSTALLER_FAILED_INTACT = "installer_failed_intact"
"""The installer ran (answer file served, start script seen or a complete report) and the host is back at its old
version (or, if the installer never got to its start script, nothing on the disk changed): retry, never destroy."""
BROKEN_AFTER_INSTALL = "broken_after_install"
"""The host is gone (not live, not answering) after an installer run that got past its start script and reported,
or that the operator marked failed: the only class that advises forget + reinstall (member) or restore (master)."""
AT_TARGET = "at_target"
"""At the target version but a later step (STORAGE, ENABLE, RESTORE, or the installer's own report) failed: enable
it, plug its storage, start its VMs; nothing to reinstall."""
STILL_INSTALLING = "still_installing"
"""The installer started and has not reported, the host is not back: it may still be installing. Wait, watch its
console, then abort or mark it failed; never start another host meanwhile."""
UNKNOWN = "unknown"
"""Failed after its reboot and XAPI could not be asked what the host is now (run_report() after a crash, or the pool
master did not answer): look at the host before doing anything."""

CLASSES = (NOTHING_CHANGED, NOT_NETWORK_BOOTED, INSTALLER_FAILED_INTACT, BROKEN_AFTER_INSTALL, AT_TARGET,
           STILL_INSTALLING, UNKNOWN)
DESTRUCTIVE = frozenset({BROKEN_AFTER_INSTALL})
"""The classes whose remedy forgets, reinstalls or restores the host (docs/remedies.md: the vendor's rule)."""
DOWN_OR_UNKNOWN = frozenset({BROKEN_AFTER_INSTALL, STILL_INSTALLING, UNKNOWN})
"""Classes in which the host is always down or in an unknown state (Remedy.host_down also covers a host of any
class that is not live now): the run must not start another host while one is."""

PRE_REBOOT = frozenset({states.STEP_CHECK, states.STEP_DISABLE, states.STEP_EVACUATE, states.STEP_ARM})
AFTER_TARGET = frozenset({states.STEP_STORAGE, states.STEP_ENABLE, states.STEP_RESTORE})
OPERATOR_MARKED = "marked failed by the operator"
"""The reason prefix of a host the operator marked failed while its installer was running (mark-failed)."""
EVIDENCE_LIMIT = 24


@dataclass(frozen=True)
class Seen:
    """What XAPI showed of the host when it was assessed (None fields: the master did not answer)."""

    answered: bool
    live: bool = False
    version: str | None = None
    build: str | None = None
    enabled: bool | None = None
    at_target: bool = False


@dataclass(frozen=True)
class Facts:
    """Everything classify() looks at; built by assess() / from_store() (tests build it directly)."""

    name: str
    mac: str
    uuid: str
    role: str
    pool: str
    media: str
    step: str  # the step it failed at
    reason: str
    target: str  # "8.4.0 build 123"
    events: Sequence[Mapping[str, Any]] = ()  # this host's events of this run, oldest first (store rows)
    attempt_id: int | None = None
    now: Seen | None = None  # None: XAPI was not asked (run_report() fallback)
    blockers: Mapping[str, Sequence[str]] = field(default_factory=dict)  # VM name -> XAPI error (EVACUATE)
    error: Sequence[str] = ()  # the XAPI error (code, params) the step failed with, if any
    boot: str = ""  # its boot method, and its BMC when it has one ("redfish (BMC redfish http://...)")


@dataclass(frozen=True)
class Remedy:
    cls: str
    text: str
    evidence: list[dict[str, Any]]
    host_down: bool  # not live / not answering / unknown now: the run must not start another host

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed_step(reason: str | None) -> str:
    """The step a FAILED host failed at: the runner's reason is "<step>: <why>"."""
    head = (reason or "").split(":", 1)[0].strip()
    return head if head in states.HOST_STEPS else ""


def _mib(value: Any) -> str:
    mib = int(value) / 2 ** 20
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def describe_error(error: Sequence[str], vm_names: Mapping[str, str] | None = None) -> str:
    """An XAPI error in words: HOST_NOT_ENOUGH_FREE_MEMORY [needed, available] says how much memory is short
    (docs/xapi.md "Error codes and their parameters": [needed, available] for start/migrate, [vm] inside evacuation
    plans); VM refs become names."""
    names = vm_names or {}
    if not error:
        return ""
    code, params = str(error[0]), [names.get(str(p), str(p)) for p in error[1:]]
    sizes = [int(p) for p in params if p.isdigit()]
    if code == "HOST_NOT_ENOUGH_FREE_MEMORY" and len(sizes) == 2:  # [needed, free] (assess adds them to a plan's)
        needed, free = sizes
        which = ", ".join(p for p in params if not p.isdigit())
        head = (f"{code}{f' ({which})' if which else ''}: needs {_mib(needed)}, {_mib(free)} free on the best "
                "other host")
        short = (f"short by {_mib(needed - free)}" if needed > free else "memory XAPI reserves for VMs starting or "
                 "migrating (or for HA) leaves too little")
        return f"{head}, {short}; suspend or shut down some VMs, or add memory / a host"
    if code == "HOST_NOT_ENOUGH_FREE_MEMORY":
        return (f"{code} ({', '.join(params)}): no other enabled host has enough free memory for it; suspend or "
                "shut down some VMs, or add memory / a host")
    if code == "VM_REQUIRES_SR":
        return f"{code} ({', '.join(params)}): it has a disk on a storage repository no other host sees (local SR)"
    if code == "NO_HOSTS_AVAILABLE":
        return f"{code}: no other host can run it (none enabled at this version or higher)"
    return f"{code} ({', '.join(params)})" if params else code


def _attempt_events(facts: Facts) -> list[Mapping[str, Any]]:
    return [e for e in facts.events if e["kind"].startswith("attempt.") and facts.attempt_id is not None
            and e["details"].get("attempt") == facts.attempt_id]


def _installer(facts: Facts) -> dict[str, Any]:
    """What the attempt's events prove: boot config / answer file fetched, start script seen, exit code."""
    found = _attempt_events(facts)
    fetched = [e["details"].get("what") for e in found if e["kind"] == "attempt.fetch"]
    done = [e for e in found if e["kind"] in ("attempt.succeeded", "attempt.failed")]
    code = str(done[-1]["details"].get("code", "")) if done else None
    started = any(e["kind"] == "attempt.started" for e in found) or any(
        d["details"].get("start_seen") for d in done)
    return {"boot": any(w in attempts.BOOT_CONFIG_KINDS for w in fetched), "answerfile": "answerfile" in fetched,
            "started": started, "code": code, "fetched": fetched}


def _sent(facts: Facts, *methods: str) -> bool:
    return any(e["kind"] == "xapi.call" and e["details"].get("method") in methods and e["details"].get("ok")
               for e in facts.events)


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
        ("attempt.", "host.still_installing", "host.marked_failed"))


def _evidence(facts: Facts) -> list[dict[str, Any]]:
    mine = {e["id"] for e in _attempt_events(facts)}
    rows = [e for e in facts.events if _proves(e) and (not e["kind"].startswith("attempt.") or e["id"] in mine)]
    found = [{"kind": e["kind"], "when": e["ts"], "what": _summary(e)[:300]} for e in rows][-EVIDENCE_LIMIT:]
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat()
    for vm, err in sorted(facts.blockers.items()):
        found.append({"kind": "xapi.evacuation_blocker", "when": stamp, "what": f"VM {vm}: {describe_error(err)}"})
    if facts.now is not None:
        found.append({"kind": "xapi.now", "when": stamp, "what": _seen_text(facts.now)})
    return found


def _seen_text(seen: Seen) -> str:
    if not seen.answered:
        return "the pool master does not answer (or XAPI no longer knows the host)"
    return (f"live={seen.live} enabled={seen.enabled} version={seen.version} build={seen.build}"
            + (" (the target)" if seen.at_target else " (not the target)"))


def _retry(facts: Facts) -> str:
    return (f"then run `provisioner upgrade start {facts.pool} --media {facts.media}` again: hosts already at the "
            f"target are skipped and {facts.name} is tried again (`upgrade resume` continues a run but never retries "
            "a failed host)")


def _master_stop(facts: Facts) -> str:
    return ("The run stopped with no member touched (vendor rule: never go on after a master failure). "
            if facts.role == "master" else "")


def _keep(facts: Facts) -> str:
    if facts.role == "master":
        return (f"Do NOT restore {facts.name} from its backup partition: it holds the backup of the PREVIOUS upgrade "
                "(restoring it rolls dom0 and the pool database back in time).")
    return f"Do NOT forget or reinstall {facts.name}: it is healthy, and a fresh install wipes its local SR."


def _state_now(facts: Facts) -> str:
    now = facts.now
    if now is None or not now.answered:
        return "XAPI does not answer about it now"
    if not now.live:
        return "it is not running now: power it on and it boots its old system" + (
            " (its attempt is disarmed)" if facts.attempt_id is not None else "")
    enabled = ("enabled again" + (" (the run re-enabled it: host.enable)" if _reenabled(facts) else "")
               if now.enabled else f"still disabled (`xe host-enable uuid={facts.uuid}`)")
    return f"it runs its old system ({now.version} build {now.build}), {enabled}"


def _reenabled(facts: Facts) -> bool:
    failed_at = next((i for i, e in enumerate(facts.events) if e["kind"] == "step.failed"), len(facts.events))
    return any(e["kind"] == "xapi.call" and e["details"].get("method") == "host.enable" and e["details"].get("ok")
               for e in facts.events[:failed_at])


def _blocker(facts: Facts) -> str:
    why = facts.reason.split(":", 1)[1].strip() if ":" in facts.reason else facts.reason
    if facts.step == states.STEP_CHECK and "not live" in why:
        return "the host was not live at its turn, so the run did not touch it"
    if facts.blockers:
        return "VMs that cannot move: " + "; ".join(f"VM {vm}: {describe_error(err)}"
                                                    for vm, err in sorted(facts.blockers.items()))
    if facts.error:
        return f"XAPI refused: {describe_error(facts.error)}"
    return why


def _text(cls: str, facts: Facts, seen: dict[str, Any]) -> str:
    name, stop = facts.name, _master_stop(facts)
    if cls == AT_TARGET:
        return (f"the host is at the target version: enable it (xe host-enable uuid={facts.uuid}), plug its storage "
                "and start its VMs listed in this report")
    if cls == NOTHING_CHANGED:
        return (f"nothing was changed on {name}: it failed at {facts.step} before its reboot ({_blocker(facts)}); "
                f"{_state_now(facts)}. {stop}Fix that, {_retry(facts)}. {_keep(facts)}")
    if cls == NOT_NETWORK_BOOTED and facts.boot.startswith("host-plugin"):  # hostplugin.py: no attempt, no fetch
        return (f"{name} did not enter the installer (host-plugin): its bootloader did not take the plugin's one-shot "
                f"upgrade entry, or the installer stopped before writing anything; {_state_now(facts)}. Nothing on its "
                f"disk changed. {stop}Look at its console on the next reboot and at /boot/installer and the bootloader "
                f"default in its dom0, or use another boot method; {_retry(facts)}. {_keep(facts)}")
    if cls == NOT_NETWORK_BOOTED:
        how = ("it fetched its boot config but never the answer file: a boot file failed to load or the loader fell "
               "back to the disk" if seen["boot"] else "no boot config was fetched on its attempt: it booted its disk")
        return (f"{name} did not reach the installer: {how}; {_state_now(facts)}. Nothing on its disk changed. "
                f"{stop}Its boot method is {facts.boot or 'unknown'}: check it and its boot order (network boot "
                f"before the disk, a BMC's one-time network boot override, the UEFI BootOrder, "
                f"the PXE / iPXE settings of its NIC), {_retry(facts)}. {_keep(facts)}")
    if cls == INSTALLER_FAILED_INTACT:
        if seen["code"] is not None:
            how = f"its installer reported exit code {seen['code']}"
        elif seen["started"]:
            how = "its installer started (start script seen) and did not report"
        else:
            how = ("the answer file was served but no start script ran: the installer refused the answer file or "
                   "stopped before touching the disk (it runs its start script before any disk write)")
        return (f"the installer ran on {name} and failed ({how}); {_state_now(facts)}: the old system is intact. "
                f"{stop}Find the cause (installer log, answer file, media), {_retry(facts)}. {_keep(facts)}")
    if cls == STILL_INSTALLING:
        return (f"{name}'s installer started and has not reported; the host is not back (it may still be installing: "
                f"watch its console). Start no other host meanwhile. While the run waits on it: `provisioner upgrade "
                f"mark-failed {facts.pool} {name}` if it is dead (a remedy follows from the evidence), or `provisioner "
                f"upgrade abort {facts.pool}`. If it comes back at its old version, its old system is intact: start "
                "again. Do NOT forget, reinstall or restore it while it may still be installing.")
    if cls == UNKNOWN:
        return (f"{name} failed at {facts.step} and what it is now is unknown (XAPI was not asked or did not answer). "
                f"{stop}Look at the host (console, `xe host-list`) before doing anything; `provisioner upgrade status "
                f"{facts.pool}` after the master answers again shows the remedy from evidence. Do NOT forget, "
                "reinstall or restore it on this report alone.")
    ran = (f"its installer reported exit code {seen['code']}" if seen["code"] is not None
           else "its installer started and never reported; marked failed by the operator")
    gone = f"{name} is gone after an installer run that got past its start ({ran}); {_gone_now(facts)}. "
    if facts.role == "master":
        return (gone + "The run stopped with no member touched (vendor rule). Restore the master from its backup "
                "partition (boot the installer from the same media and choose to restore). What the backup holds: "
                "the installer takes it after its checks and before writing the new root (host-installer "
                "backend.py prep sequence), and the start script runs before those checks, so it is this "
                "upgrade's backup only if the installer got past them; if not, the partition holds the PREVIOUS "
                "upgrade's backup and restoring it rolls dom0 and the pool database back in time (check the "
                "backup's version on the restore screen). Then start a new run.")
    return (gone + "A member whose upgrade failed is replaced (vendor rule): make sure it is off, then forget it, "
            f"reinstall it fresh and pool-join it as a new host: `provisioner reinstall {facts.mac} --pool "
            f"{facts.pool} --media {facts.media} --confirm {name} --forget --root-password-hash-file FILE` (FILE: "
            "`openssl passwd -6` of the pool password); add `--plan` first to see every VM disk on its local SR "
            "that the wipe loses (host.destroy removes only the host record): it refuses until `--accept-data-loss`.")


def _gone_now(facts: Facts) -> str:
    now = facts.now
    if now is None or not now.answered:
        return "XAPI does not answer about it"
    return "XAPI shows it not live" if not now.live else f"XAPI shows it at {now.version} build {now.build}"


def classify(facts: Facts) -> Remedy:
    """The remedy class, operator text and evidence for a failed host; pure (docs/remedies.md has the table)."""
    seen = _installer(facts)
    now = facts.now
    live = now is not None and now.answered and now.live
    ran = seen["answerfile"] or seen["started"] or seen["code"] is not None
    refused_reboot = facts.step == states.STEP_REBOOT and not _sent(facts, "host.reboot", "host.shutdown")
    if facts.step in AFTER_TARGET or (live and now.at_target):
        cls = AT_TARGET
    elif facts.step in PRE_REBOOT or refused_reboot:
        cls = NOTHING_CHANGED
    elif now is None:  # XAPI not asked: only the attempt speaks (started, no report: it may still be installing)
        cls = STILL_INSTALLING if seen["started"] and seen["code"] is None else UNKNOWN
    elif live:  # back at its old version and healthy: never forget, reinstall or restore (the property test)
        cls = INSTALLER_FAILED_INTACT if ran else NOT_NETWORK_BOOTED
    elif seen["code"] is not None and seen["started"]:
        cls = BROKEN_AFTER_INSTALL
    elif seen["started"]:
        cls = BROKEN_AFTER_INSTALL if OPERATOR_MARKED in facts.reason else STILL_INSTALLING
    elif not now.answered and facts.role == "master" and not ran:
        cls = NOT_NETWORK_BOOTED if facts.attempt_id is not None else UNKNOWN
    else:  # down, and no installer got past its start: the disk is untouched
        cls = INSTALLER_FAILED_INTACT if ran else NOT_NETWORK_BOOTED
    down = not live or cls in DOWN_OR_UNKNOWN
    return Remedy(cls, _text(cls, facts, seen), _evidence(facts), down)


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
