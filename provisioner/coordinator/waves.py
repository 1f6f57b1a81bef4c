"""The wave planner of `--parallel N|auto` (docs/waves.md): the master alone first, then the members in waves.

Pure: it gets each host's memory and VMs (wave_facts.py reads them from XAPI) and answers the waves, each with why
it has its size. A wave is safe when the VMs of its hosts fit, with the memory XAPI's check counts, on the hosts
that stay enabled while it is down (the upgraded ones, with their dom0 grown to its post-upgrade size, and the ones
of later waves), and then the F most loaded of those hosts could still fail and be evacuated too (HA's failures to
tolerate); no two hosts sharing a group tag (rack, power feed) are in one wave. The placement it simulates is the
one the run makes (evacuation.py): biggest VM first, upgraded hosts first (no second move), then the hosts upgraded
last (the VMs placed there move again, but as late as possible, when most hosts are upgraded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GiB = 1024 ** 3
AUTO = "auto"


@dataclass(frozen=True)
class HostCap:
    """One host as the planner sees it; memory in bytes."""

    name: str
    free: int  # what XAPI's memory check counts free now (host_metrics.memory_free)
    vms: tuple[tuple[str, int], ...] = ()  # (VM name, memory a migration needs) of the VMs running on it
    dom0_growth: int = 0  # the control domain's memory after the upgrade minus now (getDom0DefaultMemory)
    groups: tuple[str, ...] = ()  # its tags with the group prefix (rack:A, feed:2)


@dataclass(frozen=True)
class Wave:
    number: int  # 0: the master alone
    hosts: tuple[str, ...]
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "hosts": list(self.hosts), "why": self.why}


@dataclass
class WavePlan:
    parallel: str  # "auto" or N
    waves: list[Wave] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the planner assumed (HA off during the run, ...)

    def wave_of(self, name: str) -> int | None:
        return next((w.number for w in self.waves if name in w.hosts), None)

    def as_dict(self) -> dict[str, Any]:
        return {"parallel": self.parallel, "waves": [w.as_dict() for w in self.waves], "notes": list(self.notes)}

    def lines(self) -> list[str]:
        return [f"wave {w.number}: {', '.join(w.hosts)} ({w.why})" for w in self.waves] + self.notes


def parse_parallel(value: str | int | None) -> str | None:
    """None (one at a time, today's run), "auto", or N >= 1 as a string; ValueError names the fix."""
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdigit() and int(text) >= 1:
        return str(int(text))
    raise ValueError(f"--parallel takes a number of hosts (1 or more) or 'auto', not {value!r}")


def parse_max_failures(value: str | int | None, members: int) -> int | None:
    """K, or P% of the members (rounded down, at least 1, as vSphere's failed-hosts tolerance); None: no limit."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return max(1, int(members * share / 100))
        k = int(text)
        if k < 1:
            raise ValueError
        return k
    except ValueError:
        raise ValueError(f"--max-failures takes a number of members (1 or more) or a percentage like 25%, "
                         f"not {value!r}") from None


def gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


class _Pool:
    """The simulated pool while waves are chosen: where each VM is, how much is free, who is upgraded."""

    def __init__(self, hosts: list[HostCap], upgraded: tuple[HostCap, ...]):
        self.hosts = {h.name: h for h in [*upgraded, *hosts]}
        self.free = {h.name: h.free for h in self.hosts.values()}
        self.vms = {h.name: list(h.vms) for h in self.hosts.values()}
        self.upgraded: list[str] = [h.name for h in upgraded]

    def targets(self, down: set[str], pending: list[str]) -> list[str]:
        """Where the VMs of `down` go, in the order the run tries them (docs/waves.md "Coordinated evacuation")."""
        later = [n for n in reversed(pending) if n not in down]
        return [n for n in self.upgraded if n not in down] + later

    def place(self, down: set[str], pending: list[str], free: dict[str, int] | None = None
              ) -> tuple[dict[str, list[tuple[str, int]]], tuple[str, int] | None]:
        """Place the VMs of `down` (biggest first) on the targets; (VMs per target, first VM that fits nowhere)."""
        free = dict(self.free if free is None else free)
        placed: dict[str, list[tuple[str, int]]] = {}
        targets = self.targets(down, pending)
        for vm in sorted((vm for n in down for vm in self.vms[n]), key=lambda v: (-v[1], v[0])):
            target = next((t for t in targets if free[t] >= vm[1]), None)
            if target is None:
                return placed, vm
            free[target] -= vm[1]
            placed.setdefault(target, []).append(vm)
        return placed, None

    def fits(self, down: set[str], pending: list[str], ha: int) -> str | None:
        """None when the VMs of `down` fit and `ha` more hosts could still fail; else what does not fit."""
        placed, stuck = self.place(down, pending)
        if stuck is not None:
            room = sum(self.free[t] for t in self.targets(down, pending))
            need = sum(m for n in down for _, m in self.vms[n])
            return f"its VMs need {gib(need)}; the hosts staying enabled have {gib(room)} free, and VM {stuck[0]} " \
                   f"({gib(stuck[1])}) would fit on none of them"
        if ha <= 0:
            return None
        free = dict(self.free)
        vms = {n: list(v) for n, v in self.vms.items()}
        for target, moved in placed.items():
            free[target] -= sum(m for _, m in moved)
            vms[target] += moved
        staying = self.targets(down, pending)
        worst = sorted(staying, key=lambda n: -sum(m for _, m in vms[n]))[:ha]
        saved, self.vms = self.vms, vms
        try:
            _, stuck = self.place(down | set(worst), [n for n in pending if n not in worst], free)
        finally:
            self.vms = saved
        if stuck is not None:
            return f"HA's {ha} host failure(s) to tolerate would not be kept (the VMs of {', '.join(worst)} " \
                   f"would then fit nowhere)"
        return None

    def upgrade(self, wave: list[str], pending: list[str]) -> None:
        placed, _ = self.place(set(wave), pending)
        for target, moved in placed.items():
            self.free[target] -= sum(m for _, m in moved)
            self.vms[target] += moved
        for n in wave:
            self.free[n] += sum(m for _, m in self.vms[n]) - self.hosts[n].dom0_growth
            self.vms[n] = []
            self.upgraded.append(n)


def plan_waves(master: HostCap | None, members: list[HostCap], parallel: str, *, ha_tolerate: int = 0,
               notes: tuple[str, ...] = (), upgraded: tuple[HostCap, ...] = ()) -> WavePlan:
    """The waves: 0 is the master alone (if it is to be upgraded), then the members in the given order, each wave
    as large as `parallel` allows ("auto": no cap but capacity) and still safe. `upgraded`: hosts at the target
    already (they only take VMs). A member that does not fit even alone gets a wave of its own (the run would meet
    the same shortage one at a time; the prechecks name it)."""
    cap = len(members) if parallel == AUTO else max(1, int(parallel))
    plan = WavePlan(parallel, notes=list(notes))
    pool = _Pool(([master] if master else []) + list(members), upgraded)
    pending = [h.name for h in members]
    if master is not None:
        plan.waves.append(Wave(0, (master.name,), "the master always goes alone, first"))
        pool.upgrade([master.name], pending)
    number = 1
    while pending:
        wave, skipped = [pending[0]], []
        alone = pool.fits({pending[0]}, pending, ha_tolerate)
        if alone is not None:
            stop = f"even alone {alone}"
        else:
            for name in pending[1:]:
                if len(wave) >= cap:
                    stop = f"the --parallel {parallel} cap"
                    break
                shared = set(pool.hosts[name].groups) & {g for n in wave for g in pool.hosts[n].groups}
                if shared:
                    skipped.append(f"{name} (shares {', '.join(sorted(shared))})")
                    continue
                short = pool.fits(set(wave) | {name}, pending, ha_tolerate)
                if short is not None:
                    stop = f"adding {name}: {short}"
                    break
                wave.append(name)
            else:
                stop = "every host left fits" if len(wave) > 1 else "the last host"
        why = f"{len(wave)} host{'s' if len(wave) > 1 else ''}: {stop}" + (
            f"; kept for a later wave: {', '.join(skipped)}" if skipped else "")
        plan.waves.append(Wave(number, tuple(wave), why))
        pool.upgrade(wave, pending)
        pending = [n for n in pending if n not in wave]
        number += 1
    return plan
