"""PREPARE and FINALIZE of a run: turn off what would get in the way, then put back exactly that (docs/xapi.md
"XenCenter's prechecks and their unwind"; docs/architecture.md "Rolling pool upgrade").

PREPARE: HA and WLB (only with the operator's explicit disable_ha_wlb, else the precheck refuses) and the
auto_poweron flag of the VMs on the hosts to upgrade (XenCenter's AutoStartEnabled fix). Each change is journaled
with what undoing it needs (HA: heartbeat SRs and failures to tolerate, as XenCenter's HAEnabledProblem keeps)
BEFORE it is made. FINALIZE waits for XAPI to clear rolling_upgrade_in_progress (HA cannot be enabled before,
docs/xapi.md "Mixed versions: rolling_upgrade_in_progress"), undoes every journaled change the world still shows, and
reports VMs whose guest tools are not up to date. Both are idempotent: they read the world first and act only where it
still differs.
"""

from __future__ import annotations

from typing import Any

from provisioner.coordinator import carry, converge, journal
from provisioner.coordinator.carry import AUTO_POWERON, HA, WLB
from provisioner.coordinator.context import Context, StepFailed, xapi_call
from provisioner.coordinator.plan import at_target
from provisioner.store import Store
from provisioner.xapi import XapiError, XapiUnreachable


def _intents(ctx: Context) -> dict[tuple[str, str | None], dict]:
    """The journaled changes, one per (what, VM uuid), in the order they were made."""
    found: dict[tuple[str, str | None], dict] = {}
    for entry in journal.read(ctx.store, ctx.run_id, journal.PREPARE_INTENT):
        found.setdefault((entry["what"], entry.get("uuid")), entry)
    return found


def prepare(ctx: Context, host_uuids: list[str], *, disable_ha_wlb: bool) -> list[str]:
    """Turn off HA / WLB (when allowed) and auto_poweron of the VMs on the hosts to upgrade; what it changed."""
    try:
        # What earlier runs left off first: journaled as this run's own, with their original values (carry.py)
        said = carry.take_over(ctx.store, ctx.run_id, ctx.store.get_run(ctx.run_id).pool, ctx.driver)
        known = _intents(ctx)
        pool = ctx.driver.pool_info()
        for what, on, turn_off, extra in (
                (HA, pool["ha_enabled"], ctx.driver.disable_ha,
                 {"heartbeat_srs": pool["ha_heartbeat_srs"],
                  "failures_to_tolerate": pool["ha_host_failures_to_tolerate"]}),
                (WLB, pool["wlb_enabled"], lambda: ctx.driver.set_wlb_enabled(False), {})):
            if not on:
                continue
            if not disable_ha_wlb:
                raise StepFailed(f"{what.upper()} is enabled (turned on after the prechecks?): disable it, or start "
                                 "the run with disable_ha_wlb")
            if (what, None) not in known:
                journal.write(ctx.store, ctx.run_id, journal.PREPARE_INTENT, what=what, **extra)
            xapi_call(ctx, None, f"{what} off", turn_off)
            said.append(f"{what.upper()} turned off (back on in FINALIZE)")
        refs = {h.ref for h in ctx.driver.hosts() if h.uuid in set(host_uuids)}
        for vm in ctx.driver.vms():
            if vm.resident_on not in refs or not vm.auto_poweron:
                continue
            if (AUTO_POWERON, vm.uuid) not in known:
                journal.write(ctx.store, ctx.run_id, journal.PREPARE_INTENT, what=AUTO_POWERON, uuid=vm.uuid,
                              name=vm.name)
            xapi_call(ctx, None, "VM auto_poweron off", ctx.driver.set_auto_poweron, vm.ref, False, vm=vm.name)
            said.append(f"VM {vm.name}: auto_poweron turned off (back on in FINALIZE)")
    except (XapiError, XapiUnreachable) as exc:
        raise StepFailed(f"preparing the pool failed: {exc}") from None
    return said


def undo(ctx: Context, *, pool_mixed: bool = False) -> list[str]:
    """Put back every journaled change the world still shows, newest first; problems left (journaled as warnings).

    `pool_mixed`: hosts are at different versions (failed members), so HA cannot be enabled and WLB would move
    VMs across versions: both stay off and are reported."""
    intents = list(_intents(ctx).values())
    if not intents:
        return []
    problems: list[str] = []
    try:
        pool = ctx.driver.pool_info()
        vms = {v.uuid: v for v in ctx.driver.vms()}
    except (XapiError, XapiUnreachable) as exc:
        problems.append(f"could not read the pool to undo PREPARE: {exc}")
        journal.warn(ctx.store, ctx.run_id, problems[-1])
        return problems
    for entry in reversed(intents):
        what, name = entry["what"], entry.get("name")
        label = f"VM {name} auto_poweron" if what == AUTO_POWERON else what.upper()
        try:
            if what == AUTO_POWERON:
                vm = vms.get(entry["uuid"])
                if vm is None:
                    raise StepFailed("XAPI no longer knows this VM")
                if not vm.auto_poweron:
                    xapi_call(ctx, None, "VM auto_poweron on", ctx.driver.set_auto_poweron, vm.ref, True, vm=name)
            elif pool_mixed:
                raise StepFailed("left off: the pool still has hosts at the old version (failed members); turn it "
                                 "back on after their remedy")
            elif what == WLB and not pool["wlb_enabled"]:
                xapi_call(ctx, None, "wlb on", ctx.driver.set_wlb_enabled, True)
            elif what == HA and not pool["ha_enabled"]:
                xapi_call(ctx, None, "ha on", ctx.driver.enable_ha, entry["heartbeat_srs"],
                          entry["failures_to_tolerate"])
        except (StepFailed, XapiError, XapiUnreachable) as exc:
            journal.write(ctx.store, ctx.run_id, journal.UNDO, what=what, uuid=entry.get("uuid"), name=name, ok=False,
                          error=str(exc)[:300])
            problems.append(f"{label} not turned back on: {exc}")
            journal.warn(ctx.store, ctx.run_id, problems[-1])
            continue
        journal.write(ctx.store, ctx.run_id, journal.UNDO, what=what, uuid=entry.get("uuid"), name=name, ok=True)
        ctx.say(f"{label} back on")
    return problems


def wait_rpu_cleared(ctx: Context) -> float:
    """Wait for XAPI's DB-GC pass to clear pool other_config rolling_upgrade_in_progress (docs/xapi.md
    "Mixed versions: rolling_upgrade_in_progress"); seconds."""
    start, shown = ctx.clock.now(), None
    while True:
        try:
            set_now = ctx.driver.pool_info()["rolling_upgrade_in_progress"]
            seen = "rolling_upgrade_in_progress still set" if set_now else None
        except (XapiError, XapiUnreachable) as exc:
            seen = f"master not answering ({exc})"
        waited = ctx.clock.now() - start
        if seen is None:
            journal.write(ctx.store, ctx.run_id, journal.RPU_CLEARED, seconds=round(waited, 1))
            ctx.say(f"finalize: XAPI cleared rolling_upgrade_in_progress after {waited:.0f} s")
            return waited
        if seen != shown:
            ctx.say(f"finalize: waiting for XAPI to clear rolling_upgrade_in_progress: {seen} [{waited / 60:.1f} min]")
            shown = seen
        if waited > ctx.timeouts.finalize:
            raise StepFailed(f"rolling_upgrade_in_progress not cleared after {ctx.timeouts.finalize / 60:.0f} min "
                             f"({seen})")
        ctx.clock.sleep(ctx.timeouts.poll)


def tools_report(ctx: Context) -> dict[str, Any]:
    """The running VMs whose guest tools are not up to date or not there, as XenCenter shows them (VM.cs
    GetVirtualizationStatus: PV_drivers_detected, then PV_drivers_up_to_date; docs/real-world.md
    "Guest tools out of date"), never by comparing tools versions with the product version. Halted / suspended VMs
    report nothing (XenCenter: "unknown")."""
    try:
        vms = ctx.driver.vms()
    except (XapiError, XapiUnreachable) as exc:
        journal.warn(ctx.store, ctx.run_id, f"guest tools not checked: {exc}")
        return {}
    running = [v for v in vms if v.power_state == "Running"]
    no_tools = [{"uuid": v.uuid, "name": v.name} for v in running if not v.tools_detected]
    not_up_to_date = [{"uuid": v.uuid, "name": v.name, "version": v.tools_version} for v in running
                      if v.tools_detected and not v.tools_up_to_date]
    found = {"target": ctx.media.product_version, "checked": len(running), "not_running": len(vms) - len(running),
             "not_up_to_date": not_up_to_date, "no_tools": no_tools}
    journal.write(ctx.store, ctx.run_id, journal.TOOLS, **found)
    if not_up_to_date:
        ctx.say(f"finalize: {len(not_up_to_date)} VM(s) whose guest tools are not up to date: "
                + ", ".join(v["name"] for v in not_up_to_date))
    if no_tools:
        ctx.say(f"finalize: {len(no_tools)} running VM(s) with no guest tools detected: "
                + ", ".join(v["name"] for v in no_tools))
    return found


def finalize(ctx: Context, *, failed_hosts: list[str]) -> list[str]:
    """FINALIZE: wait for rolling_upgrade_in_progress to go, bring the pool to the run's update level (--updates) and
    record each host's level (converge.py), undo PREPARE, report guest tools; problems left."""
    problems: list[str] = []
    mixed = bool(failed_hosts) and _mixed(ctx)
    if mixed:
        ctx.say("finalize: failed hosts keep the pool mixed: rolling_upgrade_in_progress stays; HA / WLB stay off")
    else:
        try:
            wait_rpu_cleared(ctx)
        except StepFailed as exc:
            problems.append(str(exc))
            journal.warn(ctx.store, ctx.run_id, str(exc))
            mixed = True
    # before undo: host.apply_updates refuses while HA is on (xapi_host.ml apply_updates)
    problems += converge.finalize_pool(ctx, mixed=mixed)
    problems += undo(ctx, pool_mixed=mixed)
    tools_report(ctx)
    return problems


def _mixed(ctx: Context) -> bool:
    """Some host is not at the target (a member that failed before or during its install), or XAPI cannot say."""
    try:
        return not all(at_target(h, ctx.media) for h in ctx.driver.hosts())
    except (XapiError, XapiUnreachable):
        return True


def prepare_report(store: Store, run_id: str) -> list[dict[str, Any]]:
    """What PREPARE changed and where each change is now: changed (still), undone, or not undone (why)."""
    outcome: dict[tuple[str, str | None], dict] = {}
    for e in journal.read(store, run_id, journal.UNDO):
        outcome[(e["what"], e.get("uuid"))] = e
    settled = {(e["what"], e.get("uuid")): e for e in journal.read(store, run_id, journal.SETTLED)}
    rows, seen = [], set()
    for e in journal.read(store, run_id, journal.PREPARE_INTENT):
        key = (e["what"], e.get("uuid"))
        if key in seen:
            continue
        seen.add(key)
        done = outcome.get(key)
        state = "changed" if done is None else "undone" if done["ok"] else f"not undone: {done.get('error')}"
        later = settled.get(key)
        if later is not None and not (done and done["ok"]):
            state = {"carried": f"carried to run {later['by']}", "restored": f"restored by {later['by']}",
                     "found back on": "found back on"}.get(later["how"], later["how"])
        rows.append({"what": e["what"], "vm": e.get("name"), "uuid": e.get("uuid"), "state": state,
                     "carried_from": e.get("carried_from")})
    return rows
