"""Right before each host: evacuation re-checked, and (with consent) its pinned VMs shut down to be started again on
it after the upgrade (docs/prechecks.md "Evacuation re-checked before each host", "Pinned VMs").

The plan checks evacuation once, at PRECHECK; the pool changes while earlier hosts upgrade (VMs started, memory
taken, a VM given a device), so like Xen Orchestra (assert_can_evacuate per host, PR #10097) CHECK asks again
before DISABLE: a blocker then fails the host before anything was changed on it (remedies: nothing changed), with
the VMs and what to do. Pinned VMs (PCI, vGPU, SR-IOV; prechecks_vms.py) with consent PINNED_VM are left out of
that check and shut down by EVACUATE: journaled first as VM_STOP (action shutdown), so RESTORE (vms.restore) starts
each again on THIS host with VM.start_on, and make_safe does the same after a failure (XO's `defer` start_on).
"""

from __future__ import annotations

from provisioner.coordinator import journal, vms
from provisioner.coordinator.context import Context, StepFailed, error_code
from provisioner.coordinator.prechecks_vms import PINNED_VM, is_pinned
from provisioner.store import RunHost
from provisioner.xapi import XapiError, XapiUnreachable

# On a pool of one every running VM gets one of these (XenCenter's NoHosts, CA-63531): EVACUATE suspends or shuts
# them down instead (vms.py), so they do not block it.
NO_ROOM = ("NO_HOSTS_AVAILABLE", "HOST_NOT_ENOUGH_FREE_MEMORY")


def consented(ctx: Context) -> bool:
    """The operator consented to PINNED_VM for this run (journaled with the run's options)."""
    return PINNED_VM in (journal.options(ctx.store, ctx.run_id).get("consent") or ())


def _handled(err: list[str], *, standalone: bool, stop_pinned: bool) -> bool:
    code = err[0] if err else ""
    return (standalone and code in NO_ROOM) or (stop_pinned and is_pinned(err))


def recheck_evacuation(ctx: Context, rh: RunHost, host_ref: str) -> None:
    """host.assert_can_evacuate; on CANNOT_EVACUATE_HOST, the blockers EVACUATE would not handle fail the host with
    their names and a remedy (StepFailed, before DISABLE: nothing changed)."""
    try:
        ctx.driver.assert_can_evacuate(host_ref)
        return
    except XapiUnreachable as exc:
        raise StepFailed(f"evacuation not re-checked, the master does not answer: {exc}") from None
    except XapiError as exc:
        if error_code(exc) != "CANNOT_EVACUATE_HOST":
            raise StepFailed(f"evacuation not re-checked: XAPI refused host.assert_can_evacuate: {exc}") from None
    try:
        blockers = ctx.driver.evacuation_blockers(host_ref)
        names = {v.ref: v.name for v in ctx.driver.vms()}
        standalone = len(ctx.driver.hosts()) == 1
    except (XapiError, XapiUnreachable) as exc:
        raise StepFailed(f"evacuation re-check: CANNOT_EVACUATE_HOST, and the blockers could not be read: {exc}") \
            from None
    stop_pinned = consented(ctx)
    left = {vm: err for vm, err in blockers.items() if not _handled(err, standalone=standalone,
                                                                    stop_pinned=stop_pinned)}
    ctx.event("host.evacuation_recheck", rh, blockers={names.get(vm, vm): err for vm, err in blockers.items()},
              blocking=sorted(names.get(vm, vm) for vm in left))
    if not left:
        return
    said = "; ".join(f"VM {names.get(vm, vm)}: {' '.join(names.get(p, p) for p in err)}"
                     for vm, err in sorted(left.items(), key=lambda item: names.get(item[0], item[0])))
    fix = ("consent to shutting pinned VMs down for the upgrade (--consent PINNED_VM) or shut them down"
           if any(is_pinned(err) for err in left.values()) else
           "move, suspend or shut down those VMs (or free memory / enable a host)")
    raise StepFailed(f"evacuation re-checked before DISABLE and blocked: {said}. The host was not touched; {fix}, "
                     "then `provisioner upgrade resume` or start the run again")


def stop_pinned(ctx: Context, rh: RunHost, host_ref: str) -> list[str]:
    """With consent: shut down the host's pinned VMs (clean, else hard), each journaled as VM_STOP first; a re-run
    finds the journal and only finishes what is left. What it did; [] without consent or pinned VMs."""
    if not consented(ctx):
        return []
    try:
        found = {v.uuid: v for v in ctx.driver.vms()}
        blockers = ctx.driver.evacuation_blockers(host_ref)
    except (XapiError, XapiUnreachable) as exc:
        raise StepFailed(f"could not read the host's pinned VMs: {exc}") from None
    by_ref = {v.ref: v for v in found.values()}
    planned = {e["uuid"]: e for e in journal.read(ctx.store, ctx.run_id, journal.VM_STOP, mac=rh.mac)}
    for vm_ref, err in blockers.items():
        vm = by_ref.get(vm_ref)
        if vm is None or not is_pinned(err) or vm.uuid in planned:
            continue
        entry = {"uuid": vm.uuid, "name": vm.name, "action": vms.SHUTDOWN, "was": vm.power_state, "cds": [],
                 "pinned": err[0]}
        journal.write(ctx.store, ctx.run_id, journal.VM_STOP, mac=rh.mac, **entry)
        planned[vm.uuid] = entry
    return [f"{line} (pinned: started again on this host after its upgrade)"
            for line in vms.stop_planned(ctx, rh, found, planned)]
