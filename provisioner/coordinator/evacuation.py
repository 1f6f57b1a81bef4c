"""Coordinated evacuation of a wave's hosts (docs/waves.md "Coordinated evacuation"): per-VM VM.pool_migrate to
targets the run chooses, instead of host.evacuate (which would pick any enabled host, a host of a later wave or
one being evacuated by the same wave alike, by most free memory).

Targets: live, enabled hosts outside the wave; those at the target version first (the VM never moves again), then
the hosts of the latest waves first (the VM moves again, but as late as possible, when most hosts are upgraded).
The biggest VM first, each on the first target with room: the placement the planner simulated (waves.py). Room is
XAPI's host_metrics.memory_free less what this wave's migrations in flight take (this process's reservations,
as xapi's own allocate_vm_to_host), and XAPI has the last word: VM.assert_can_boot_here before each migration, and
a migration refused for memory (another client took the room) tries the next target.
"""

from __future__ import annotations

import threading

from provisioner.coordinator import journal
from provisioner.coordinator.context import Context, StepFailed, error_code, xapi_call
from provisioner.coordinator.plan import at_target
from provisioner.store import RunHost
from provisioner.xapi import XapiError, XapiUnreachable

RUNNING = ("Running", "Paused")
ROOM_CODES = frozenset({"HOST_NOT_ENOUGH_FREE_MEMORY", "HOST_DISABLED", "HOST_NOT_LIVE", "HOST_OFFLINE"})
"""Refusals that mean "not this target now": the next one is tried."""
REFUSED = "vm.migrate_refused"
"""Event {host, vm, target, code}: XAPI refused a target (its check or the migration itself); the next is tried."""


class WaveTargets:
    """Shared by the threads of one wave: which hosts are in it and in which wave the others go, and the memory
    its migrations in flight take on each target."""

    def __init__(self, wave: int, wave_of: dict[str, int]):
        self.wave, self.wave_of = wave, wave_of  # MAC -> wave number
        self.lock = threading.Lock()
        self.reserved: dict[str, int] = {}  # host ref -> bytes of migrations in flight

    def order(self, ctx: Context, leaving: str) -> list[str]:
        """Host refs a VM of `leaving` may go to, in the order to try them."""
        upgraded, later = [], []
        for h in ctx.driver.hosts():
            number = self.wave_of.get(h.mac or "", -1)
            if h.ref == leaving or number == self.wave or not (h.live and h.enabled):
                continue
            if at_target(h, ctx.media) or 0 <= number < self.wave:
                upgraded.append((number, h.name, h.ref))
            else:
                later.append((-number, h.name, h.ref))
        return [ref for *_, ref in sorted(upgraded)] + [ref for *_, ref in sorted(later)]

    def reserve(self, ctx: Context, rh: RunHost, vm: str, need: int, leaving: str, tried: set[str]) -> str | None:
        """The first target with room for `need` bytes, reserved (XAPI agreed); None when no target has room."""
        with self.lock:
            facts = ctx.driver.precheck_facts()
            for target in self.order(ctx, leaving):
                if target in tried or target not in facts.hosts:
                    continue
                if facts.hosts[target].memory_free - self.reserved.get(target, 0) < need:
                    continue
                try:
                    ctx.driver.assert_can_boot_here(vm, target)
                except XapiError as exc:
                    tried.add(target)
                    ctx.event(REFUSED, rh, vm=vm, target=facts.hosts[target].name, code=error_code(exc),
                              check="VM.assert_can_boot_here")
                    if error_code(exc) in ROOM_CODES:
                        continue
                    raise
                self.reserved[target] = self.reserved.get(target, 0) + need
                return target
        return None

    def release(self, target: str, need: int) -> None:
        with self.lock:
            self.reserved[target] = self.reserved.get(target, 0) - need


def evacuate(ctx: Context, rh: RunHost, host_ref: str, targets: WaveTargets) -> list[str]:
    """Move every running VM off the host to the wave's targets (journaled by the caller first: VM_RESIDENT);
    idempotent: a VM that left already is not touched. StepFailed names a VM that fits nowhere."""
    try:
        facts = ctx.driver.precheck_facts()
    except (XapiError, XapiUnreachable) as exc:
        raise StepFailed(f"the pool master does not answer: {exc}") from None
    vms = sorted((v for v in facts.vms if v.resident_on == host_ref and v.power_state in RUNNING),
                 key=lambda v: (-v.memory, v.name))
    said = []
    for vm in vms:
        tried: set[str] = set()
        while True:
            target = targets.reserve(ctx, rh, vm.ref, vm.memory, host_ref, tried)
            if target is None:
                raise StepFailed(f"VM {vm.name} ({vm.memory / 1024 ** 3:.1f} GiB) fits on no host that stays "
                                 f"enabled during wave {targets.wave} (tried {len(tried)} refused by XAPI); the "
                                 f"host is disabled with its remaining VMs: free memory or shut the VM down, then "
                                 f"resume")
            name = facts.hosts[target].name if target in facts.hosts else target
            try:
                xapi_call(ctx, rh, "VM.pool_migrate", ctx.driver.migrate_vm, vm.ref, target, vm=vm.name, to=name)
                said.append(f"{vm.name}: migrated to {name}")
                break
            except XapiError as exc:
                code = error_code(exc)
                if code == "VM_BAD_POWER_STATE":  # stopped meanwhile: nothing to move (as host.evacuate)
                    break
                if code not in ROOM_CODES:
                    raise StepFailed(f"could not migrate VM {vm.name} to {name}: {exc}") from None
                tried.add(target)
                ctx.event(REFUSED, rh, vm=vm.name, target=name, code=code, check="VM.pool_migrate")
            finally:
                targets.release(target, vm.memory)
    journal.write(ctx.store, ctx.run_id, journal.VM_EVACUATED, mac=rh.mac)
    return said
