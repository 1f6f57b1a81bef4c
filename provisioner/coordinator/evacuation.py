"""Coordinated evacuation of a wave's hosts (docs/waves.md "Coordinated evacuation"): per-VM VM.pool_migrate to
targets the run chooses, instead of host.evacuate (which would pick any enabled host, a host of a later wave or
one being evacuated by the same wave alike, by most free memory).

Targets: live, enabled hosts outside the wave; those at the target version first (the VM never moves again), then
the hosts of the latest waves first (the VM moves again, but as late as possible, when most hosts are upgraded).
The biggest VM first, each on the first target with room: the placement the planner simulated (waves.py). Room is
XAPI's host_metrics.memory_free read once per wave less what this wave's migrations took or have in flight (this
process's reservations, as xapi's own allocate_vm_to_host), and XAPI has the last word: VM.assert_can_boot_here
before each migration, and a migration refused for memory (another client took the room) tries the next target.
"""

from __future__ import annotations

import dataclasses
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
    """Shared by the threads of one wave: where its VMs may go, in order, and the memory left on each.

    Read once when the wave's first VM moves (its hosts are all disabled by then: wave_runner.py), then kept up to
    date by this wave's own moves: a migration reserves its memory on the target before it starts and keeps it when
    it succeeds (gives it back when it fails). XAPI's own check before each migration, and the migration's memory
    check itself, catch anything else that took the room meanwhile; then the targets are read again."""

    def __init__(self, wave: int, wave_of: dict[str, int]):
        self.wave, self.wave_of = wave, wave_of  # MAC -> wave number
        self.lock = threading.Lock()
        self.free: dict[str, int] | None = None  # host ref -> bytes left for this wave's VMs
        self.order: list[str] = []  # host refs, in the order to try them
        self.names: dict[str, str] = {}
        self.vms: list = []  # the running VMs (xapi_model.VmInfo) as read for the wave

    def _read(self, ctx: Context, hosts: list | None = None, vms: list | None = None) -> None:
        """Targets: live, enabled, outside the wave; at the target version (or of an earlier wave) first, then the
        latest waves first; free memory as XAPI reports it. `hosts` / `vms`: reads the caller made just before
        (else they are read now)."""
        upgraded, later = [], []
        hosts = ctx.driver.hosts() if hosts is None else hosts
        for h in hosts:
            number = self.wave_of.get(h.mac or "", -1)
            if number == self.wave or not (h.live and h.enabled):
                continue
            self.names[h.ref] = h.name
            if at_target(h, ctx.media) or 0 <= number < self.wave:
                upgraded.append((number, h.name, h.ref))
            else:
                later.append((-number, h.name, h.ref))
        self.order = [ref for *_, ref in sorted(upgraded)] + [ref for *_, ref in sorted(later)]
        free = {h.ref: h.memory_free for h in hosts}
        self.free = {ref: free[ref] for ref in self.order}
        self.vms = [v for v in (ctx.driver.vms() if vms is None else vms) if v.power_state in RUNNING]

    def vms_on(self, ctx: Context, host_ref: str, hosts: list | None = None, vms: list | None = None) -> list:
        """The VMs running on a host of the wave, biggest first, as read for the wave (its hosts are disabled, so
        none arrives; the ones this wave moved are not counted twice: a re-read is fresh). `hosts` / `vms`: the
        caller's reads of a moment ago, used if the wave has not read yet (the other threads wait for that read)."""
        with self.lock:
            if self.free is None:
                self._read(ctx, hosts, vms)
            return sorted((v for v in self.vms if v.resident_on == host_ref), key=lambda v: (-v.memory, v.name))

    def reserve(self, ctx: Context, rh: RunHost, vm: str, need: int, tried: set[str]) -> str | None:
        """The first target with room for `need` bytes, reserved (XAPI agreed); None when no target has room."""
        while True:
            with self.lock:  # the bookkeeping only: XAPI's check below runs outside the lock, in parallel
                if self.free is None:
                    self._read(ctx)
                target = next((t for t in self.order if t not in tried and self.free.get(t, 0) >= need), None)
                if target is None:
                    return None
                self.free[target] -= need
            try:
                ctx.driver.assert_can_boot_here(vm, target)
                return target
            except XapiError as exc:
                self.release(target, need)
                tried.add(target)
                ctx.event(REFUSED, rh, vm=vm, target=self.names.get(target, target), code=error_code(exc),
                          check="VM.assert_can_boot_here")
                if error_code(exc) not in ROOM_CODES:
                    raise
                with self.lock:
                    self.free = None  # someone else took room: read again

    def release(self, target: str, need: int) -> None:
        """The migration to `target` did not happen: its memory is free again."""
        with self.lock:
            if self.free is not None:
                self.free[target] = self.free.get(target, 0) + need


BATCH = 10
"""A host's VMs migrate this many at a time, each on its own XAPI session: xapi's host.evacuate migrates in parallel
batches of evacuation_batch_size, 10 by default (xapi_host.ml:749-764, xapi_globs.ml:1025)."""


def evacuate(ctx: Context, rh: RunHost, host_ref: str, targets: WaveTargets, hosts: list | None = None,
             vms: list | None = None) -> list[str]:
    """Move every running VM off the host to the wave's targets (journaled by the caller first: VM_RESIDENT), up to
    BATCH at once; idempotent: a VM that left already is not touched. StepFailed names a VM that fits nowhere.
    `hosts` / `vms`: the caller's reads of the pool, made just before (no VM moved since)."""
    try:
        queue = targets.vms_on(ctx, host_ref, hosts, vms)
    except (XapiError, XapiUnreachable) as exc:
        raise StepFailed(f"the pool master does not answer: {exc}") from None
    lock, said, errors = threading.Lock(), [], []

    def work(own: Context) -> None:
        try:
            while True:
                with lock:
                    if not queue or errors:
                        return
                    vm = queue.pop(0)  # the biggest left first
                line = _move(own, rh, vm, targets)
                with lock:
                    said.append(line)
        except BaseException as exc:  # the first error fails the host once every worker stopped
            errors.append(exc)
        finally:
            if own is not ctx:
                own.driver.close()
    workers = [threading.Thread(target=work, args=(dataclasses.replace(ctx, driver=ctx.driver.fork()),))
               for _ in range(min(BATCH, len(queue)) if len(queue) > 1 else 0)]
    if len(queue) == 1:
        work(ctx)
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if errors:
        raise errors[0]
    journal.write(ctx.store, ctx.run_id, journal.VM_EVACUATED, mac=rh.mac)
    return sorted(line for line in said if line)


def _move(ctx: Context, rh: RunHost, vm, targets: WaveTargets) -> str:
    """One VM to the first target that has room and that XAPI accepts; what happened."""
    tried: set[str] = set()
    while True:
        target = targets.reserve(ctx, rh, vm.ref, vm.memory, tried)
        if target is None:
            raise StepFailed(f"VM {vm.name} ({vm.memory / 1024 ** 3:.1f} GiB) fits on no host that stays enabled "
                             f"during wave {targets.wave} ({len(tried)} refused by XAPI); the host is disabled with "
                             f"its remaining VMs: free memory or shut the VM down, then resume")
        name = targets.names.get(target, target)
        try:
            xapi_call(ctx, rh, "VM.pool_migrate", ctx.driver.migrate_vm, vm.ref, target, vm=vm.name, to=name)
            return f"{vm.name}: migrated to {name}"
        except (XapiError, XapiUnreachable) as exc:
            targets.release(target, vm.memory)
            code = error_code(exc)
            if code == "VM_BAD_POWER_STATE":  # stopped meanwhile: nothing to move (as host.evacuate)
                return f"{vm.name}: stopped meanwhile, not moved"
            if code not in ROOM_CODES:
                raise StepFailed(f"could not migrate VM {vm.name} to {name}: {exc}") from None
            tried.add(target)
            ctx.event(REFUSED, rh, vm=vm.name, target=name, code=code, check="VM.pool_migrate")
