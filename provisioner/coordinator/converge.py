"""CONVERGE: bring an upgraded host to the run's update level before its VMs come back (docs/converge.md).

Only for a run started with `--updates NAME` (an update repository of the store: an offline bundle or a mirror).
The pool is pointed at that repository once per run (Repository.introduce_bundle + PUT /bundle, or
Repository.introduce + pool.sync_updates), each host gets host.apply_updates(host, hash) and its pending guidances
carried out while it is still disabled and empty (reboot_host: host.reboot; restart_toolstack: host.restart_agent),
then its level is verified: last_update_hash is the synced hash and no reboot / toolstack guidance is pending.

Commit, then act: every change is journaled before it is made, and each part first reads the world (the pool's
repositories, the host's last_update_hash and pending guidances), so after a kill -9 nothing is done twice; a reboot
for a guidance is recognised by the host's boot_time, journaled before host.reboot (as REBOOT / WAIT_DOWN do).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from provisioner import states
from provisioner.coordinator import journal, vms
from provisioner.coordinator.context import Context, StepFailed, find, live_info, wait_for, xapi_call
from provisioner.coordinator.converge_plan import Source, source
from provisioner.coordinator.plan import at_target
from provisioner.store import RunHost
from provisioner.xapi import HostInfo, XapiError, XapiUnreachable
from provisioner.xapi_updates import REBOOT_GUIDANCES, TOOLSTACK_GUIDANCES, RepositoryInfo, UpdateLevel

REPOSITORY = "converge.repository"
"""{name, origin, uuid?}: about to introduce the run's repository on the pool (uuid once it exists)."""
ENABLED = "converge.enabled"
"""{before: [repository uuids]}: about to make the run's repository the pool's only enabled one."""
SYNCED = "converge.synced"
"""{hash, uuid}: the pool synced the run's repository (PUT /bundle or pool.sync_updates) to this updateinfo hash."""
APPLY = "converge.apply"
"""{hash}: about to host.apply_updates the host to this hash."""
GUIDANCE_REBOOT = "converge.reboot"
"""{boot_time, guidances}: about to host.reboot the host for its pending guidances; boot_time is the one before."""
LEVEL = "converge.level"
"""{hash, product_version, build_number, pending}: the host's level once CONVERGE (or FINALIZE) verified it."""

def run_source(ctx: Context) -> Source | None:
    """The run's --updates repository, or None for a run without it."""
    name = journal.options(ctx.store, ctx.run_id).get("updates")
    return source(ctx.store, name) if name else None


# --- the pool's side: once per run ---

_POOL_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()
BUSY = ("APPLY_UPDATES_IN_PROGRESS", "SYNC_UPDATES_IN_PROGRESS", "SYNC_BUNDLE_IN_PROGRESS",
        "CONFIGURE_REPOSITORIES_IN_PROGRESS")
"""Pool operations XAPI runs one at a time (xapi_pool_helpers.ml blocking_operations): hosts of one wave wait."""


def pool_hash(ctx: Context, src: Source, rh: RunHost | None) -> str:
    """The run's repository introduced, enabled alone and synced on the pool: the hash host.apply_updates takes.
    Reads the world first: a repository already there, already enabled, already synced in this run is kept. One
    thread of a run at a time (the hosts of a --parallel wave converge on threads): the lock is per process because
    only the process holding the pool's lease drives the run (coordinator/locks.py; a pool has one active run), so
    no other server can be here for this pool; one that takes the lease over after a kill reads SYNCED and the
    pool's repositories first (docs/store.md "Leases")."""
    with _LOCKS_LOCK:
        lock = _POOL_LOCKS.setdefault(ctx.run_id, threading.Lock())
    with lock:
        return _pool_hash(ctx, src, rh)


def _pool_hash(ctx: Context, src: Source, rh: RunHost | None) -> str:
    repo = _repository(ctx, src, rh)
    synced = journal.last(ctx.store, ctx.run_id, SYNCED)
    if synced and synced["uuid"] == repo.uuid and repo.hash and repo.hash == synced["hash"] \
            and _enabled(ctx) == [repo.ref]:
        return synced["hash"]
    if _enabled(ctx) != [repo.ref]:
        before = [r.uuid for r in ctx.driver.repositories() if r.ref in set(_enabled(ctx))]
        journal.write(ctx.store, ctx.run_id, ENABLED, before=before)
        xapi_call(ctx, rh, "pool.set_repositories", ctx.driver.set_pool_repositories, [repo.ref], repository=src.label)
    if src.kind == "bundle":
        ctx.say(f"converge: uploading bundle {src.name} to the pool master (PUT /bundle)")
        xapi_call(ctx, rh, "PUT /bundle", ctx.driver.upload_bundle, src.bundle_file, repository=src.label)
        repo = next((r for r in ctx.driver.repositories() if r.ref == repo.ref), repo)
        hash_ = repo.hash
    else:
        ctx.say(f"converge: pool.sync_updates from mirror {src.url}")
        hash_ = xapi_call(ctx, rh, "pool.sync_updates", ctx.driver.sync_updates, repository=src.label)
    if not hash_:
        raise StepFailed(f"the pool synced repository {src.label} but XAPI shows no updateinfo hash for it")
    journal.write(ctx.store, ctx.run_id, SYNCED, hash=hash_, uuid=repo.uuid)
    return hash_


def _enabled(ctx: Context) -> list[str]:
    return sorted(ctx.driver.pool_repositories())


def _repository(ctx: Context, src: Source, rh: RunHost | None) -> RepositoryInfo:
    found = next((r for r in ctx.driver.repositories() if r.name == src.label), None)
    if found is not None:
        return found
    journal.write(ctx.store, ctx.run_id, REPOSITORY, name=src.label, origin=src.kind)
    desc = f"provisioner: update repository {src.name} ({src.product_version})"
    if src.kind == "bundle":
        ref = xapi_call(ctx, rh, "Repository.introduce_bundle", ctx.driver.introduce_bundle_repository, src.label,
                        desc)
    else:
        ref = xapi_call(ctx, rh, "Repository.introduce", ctx.driver.introduce_mirror_repository, src.label, desc,
                        src.url)
    found = next((r for r in ctx.driver.repositories() if r.ref == ref), None)
    if found is None:
        raise StepFailed(f"Repository {src.label} was introduced but XAPI does not list it")
    return found


# --- the host's side ---

def converge(ctx: Context, rh: RunHost) -> str:
    """The CONVERGE step: apply, carry out guidances, verify; then STORAGE."""
    src = run_source(ctx)
    if src is None:
        return states.STEP_STORAGE
    # a guidance reboot: down, then up (an ISO-upgraded host boots as fast as after its install); a toolstack restart:
    # as long as HOST_STILL_BOOTING may last
    waits = Waits(reboot=ctx.timeouts.down + ctx.timeouts.up, restart=ctx.timeouts.enable)
    bring_to_level(ctx, rh, pool_hash(ctx, src, rh), waits)
    return states.STEP_STORAGE


@dataclass(frozen=True)
class Waits:
    """Seconds (the run's clock) to wait for a host back from a guidance reboot / toolstack restart."""

    reboot: float
    restart: float


def bring_to_level(ctx: Context, rh: RunHost, hash_: str, waits: Waits) -> UpdateLevel:
    """host.apply_updates unless the host is at `hash_`, its guidances carried out, its level verified and
    journaled (LEVEL). StepFailed when it does not get there."""
    info = live_info(ctx, rh)
    level = ctx.driver.update_level(info.ref)
    if level.last_update_hash != hash_:
        journal.write(ctx.store, ctx.run_id, APPLY, mac=rh.mac, hash=hash_)
        ctx.say(f"{rh.name}: converge: applying updates (hash {hash_[:12]})")
        for warning in _when_free(ctx, rh, "host.apply_updates", ctx.driver.apply_updates, info.ref, hash_,
                                  timeout=waits.restart) or []:
            journal.warn(ctx.store, ctx.run_id, f"host.apply_updates: {' '.join(map(str, warning))}", mac=rh.mac)
        level = ctx.driver.update_level(info.ref)
    level = carry_out_guidances(ctx, rh, level, waits)
    if level.last_update_hash != hash_:
        raise StepFailed(f"not at the pool's update level: last_update_hash {level.last_update_hash or 'none'}, "
                         f"the pool synced {hash_}")
    left = set(level.pending) & (REBOOT_GUIDANCES | TOOLSTACK_GUIDANCES)
    if left:
        raise StepFailed(f"guidances still pending after carrying them out: {', '.join(sorted(left))}")
    for other in sorted(set(level.pending) - left):
        journal.warn(ctx.store, ctx.run_id, f"pending guidance {other} left to the operator", mac=rh.mac)
    journal.write(ctx.store, ctx.run_id, LEVEL, mac=rh.mac, hash=hash_, product_version=level.product_version,
                  build_number=level.build_number, pending=list(level.pending))
    ctx.event("converge.done", rh, hash=hash_, pending=list(level.pending))
    return level


def _when_free(ctx: Context, rh: RunHost, method: str, fn, *args, timeout: float):
    """xapi_call, retried while XAPI runs another pool operation of the same kind (BUSY) for up to `timeout`."""
    start = ctx.clock.now()
    while True:
        try:
            return xapi_call(ctx, rh, method, fn, *args)
        except XapiError as exc:
            if not (exc.details and exc.details[0] in BUSY) or ctx.clock.now() - start > timeout:
                raise
            ctx.clock.sleep(ctx.timeouts.poll)


def carry_out_guidances(ctx: Context, rh: RunHost, level: UpdateLevel, waits: Waits) -> UpdateLevel:
    """Reboot for reboot_host* (once: the journaled boot_time tells a reboot already done), then host.restart_agent
    for restart_toolstack; the level re-read after each."""
    done = _guidance_reboot_done(ctx, rh)
    if set(level.pending) & REBOOT_GUIDANCES or done is False:
        _reboot_for_guidance(ctx, rh, level, waits.reboot)
        level = ctx.driver.update_level(live_info(ctx, rh).ref)
    if set(level.pending) & TOOLSTACK_GUIDANCES:
        info = live_info(ctx, rh)
        ctx.say(f"{rh.name}: converge: restarting the toolstack (guidance restart_toolstack)")
        xapi_call(ctx, rh, "host.restart_agent", ctx.driver.restart_toolstack, info.ref, guidance="restart_toolstack")
        _wait_back(ctx, rh, lambda info: info is not None and info.live, "toolstack restart", waits.restart)
        level = ctx.driver.update_level(live_info(ctx, rh).ref)
    return level


def _guidance_reboot_done(ctx: Context, rh: RunHost) -> bool | None:
    """None: no guidance reboot journaled for this host (or its last one is finished); False: one was journaled and
    the host has not come back from it yet (sent or not: _reboot_for_guidance tells)."""
    entry = journal.last(ctx.store, ctx.run_id, GUIDANCE_REBOOT, mac=rh.mac)
    if entry is None:
        return None
    info = find(ctx, rh.uuid)
    back = info is not None and info.live and info.boot_time != entry["boot_time"]
    return None if back else False


def _reboot_sent(ctx: Context, rh: RunHost, boot_time: str) -> bool:
    return any(e["details"].get("method") == "host.reboot" and e["details"].get("ok")
               and e["details"].get("before") == boot_time
               for e in ctx.store.events(run_id=ctx.run_id, mac=rh.mac, kind="xapi.call"))


def _reboot_for_guidance(ctx: Context, rh: RunHost, level: UpdateLevel, timeout: float) -> None:
    """host.reboot once per journaled boot_time. A host back from the journaled reboot is rebooted again only if the
    level read AFTER seeing it back still asks for it (xapi clears reboot_host as it starts, before live)."""
    entry = journal.last(ctx.store, ctx.run_id, GUIDANCE_REBOOT, mac=rh.mac)
    info = find(ctx, rh.uuid)
    if entry is not None and info is not None and info.live and info.boot_time != entry["boot_time"]:
        level = ctx.driver.update_level(info.ref)
        if not set(level.pending) & REBOOT_GUIDANCES:
            ctx.event("step.skipped", rh, step=states.STEP_CONVERGE, why="guidance reboot already done")
            return
        entry = None  # back from the last one and asking again: a new one
    if entry is None:
        info = live_info(ctx, rh)
        entry = {"boot_time": info.boot_time}
        journal.write(ctx.store, ctx.run_id, GUIDANCE_REBOOT, mac=rh.mac, boot_time=info.boot_time,
                      guidances=sorted(set(level.pending) & REBOOT_GUIDANCES))
    before = entry["boot_time"]
    if not _reboot_sent(ctx, rh, before) and info is not None and info.live and info.boot_time == before \
            and "shutdown" not in ctx.driver.host_operations(info.ref):  # an accepted reboot whose event was lost
        ctx.say(f"{rh.name}: converge: rebooting (guidance {', '.join(sorted(set(level.pending) & REBOOT_GUIDANCES))})")
        try:
            xapi_call(ctx, rh, "host.reboot", ctx.driver.reboot, info.ref, guidance="reboot_host", before=before)
        except XapiError as exc:
            if not (exc.details and exc.details[0] == "OTHER_OPERATION_IN_PROGRESS"):
                raise
    else:
        ctx.event("step.skipped", rh, step=states.STEP_CONVERGE, why="guidance reboot already sent")
    _wait_back(ctx, rh, lambda info: info is not None and info.live and info.boot_time != before,
               "reboot for guidance", timeout)


def _wait_back(ctx: Context, rh: RunHost, done, what: str, timeout: float) -> None:
    """Wait until done(host record); while the master's xapi restarts, find() reads None (refused, HOST_STILL_BOOTING,
    SESSION_INVALID: the driver logs in again by itself at its next call)."""
    wait_for(ctx, rh, what, timeout, done)


# --- FINALIZE: the whole pool at one level, and what the report shows ---

POOL = "converge.pool"
"""{hash, hosts: [{name, mac, product_version, build_number, last_update_hash, pending, at_level}], left_behind:
[{name, why}]}: each host's version, build and update level at the end of FINALIZE (report.py shows it)."""


def _pseudo_host(ctx: Context, info: HostInfo) -> RunHost:
    """A RunHost for a pool host the run did not walk (skipped at CHECK: already at the target version)."""
    found = next((rh for rh in ctx.store.run_hosts(ctx.run_id) if rh.uuid == info.uuid), None)
    return found or RunHost(run_id=ctx.run_id, mac=info.mac or "", position=-1, name=info.name, uuid=info.uuid,
                            role="master" if info.is_master else "member", step=states.STEP_DONE,
                            before_version=info.product_version, before_boot_time=info.boot_time, attempt_id=None,
                            reason=None, updated_at="")


def finalize_pool(ctx: Context, *, mixed: bool) -> list[str]:
    """FINALIZE with --updates: every live host at the target version brought to the run's level (a host skipped at
    CHECK: disabled, evacuated, converged, enabled, its VMs migrated back); then the levels recorded. Problems."""
    src = run_source(ctx)
    problems: list[str] = []
    hash_ = ""
    if src is not None:
        try:
            hash_ = pool_hash(ctx, src, None)
        except (StepFailed, XapiError, XapiUnreachable) as exc:
            problems.append(f"converge: the pool could not sync {src.label}: {exc}")
    if hash_ and not mixed:
        for info in _hosts(ctx):
            if not info.live or not at_target(info, ctx.media):
                continue
            rh = _pseudo_host(ctx, info)
            if rh.step == states.STEP_FAILED:
                continue
            level = ctx.driver.update_level(info.ref)
            if level.last_update_hash == hash_ and not set(level.pending) & (REBOOT_GUIDANCES | TOOLSTACK_GUIDANCES):
                continue
            try:
                _converge_in_service(ctx, rh, info, hash_, Waits(reboot=ctx.timeouts.down + ctx.timeouts.up,
                                                                  restart=ctx.timeouts.enable))
            except (StepFailed, XapiError, XapiUnreachable) as exc:
                problems.append(f"{info.name}: not converged: {exc}")
                journal.warn(ctx.store, ctx.run_id, f"not converged: {exc}", mac=rh.mac or None)
    problems += record_levels(ctx, hash_)
    return problems


def _hosts(ctx: Context) -> list[HostInfo]:
    try:
        return ctx.driver.hosts()
    except (XapiError, XapiUnreachable):
        return []


def _converge_in_service(ctx: Context, rh: RunHost, info: HostInfo, hash_: str, waits: Waits) -> None:
    """A host in service (VMs on it): disable and evacuate it first, converge, enable it, migrate its VMs back."""
    ctx.say(f"{info.name}: converge in FINALIZE: disable, evacuate, apply, guidances, enable, VMs back")
    if info.enabled:
        xapi_call(ctx, rh, "host.disable", ctx.driver.disable, info.ref)
    if len(_hosts(ctx)) > 1:
        vms.note_resident(ctx, rh, info.ref)
        xapi_call(ctx, rh, "host.evacuate", ctx.driver.evacuate, info.ref)
    bring_to_level(ctx, rh, hash_, waits)
    info = live_info(ctx, rh)
    if not info.enabled:
        xapi_call(ctx, rh, "host.enable", ctx.driver.enable, info.ref)
    for line in vms.restore(ctx, rh, info.ref, migrate_back=True):
        ctx.say(f"{info.name}: {line}")


def record_levels(ctx: Context, hash_: str) -> list[str]:
    """Journal POOL: each host's version, build and update level; the hosts left behind (not at the target version,
    or not at the level: the run's hash, else the master's). Problems: one line per host left behind."""
    hosts = _hosts(ctx)
    if not hosts:
        return ["converge: the pool master does not answer: the hosts' levels are not known"]
    rows = []
    for info in hosts:
        try:
            level = ctx.driver.update_level(info.ref)
        except (XapiError, XapiUnreachable):
            level = UpdateLevel("?", "unknown", "", ())
        rows.append((info, level))
    target = hash_ or next((lv.last_update_hash for h, lv in rows if h.is_master), "")
    found, left = [], []
    for info, level in rows:
        at_level = level.last_update_hash == target
        found.append({"name": info.name, "mac": info.mac, "product_version": info.product_version,
                      "build_number": info.build_number, "last_update_hash": level.last_update_hash,
                      "pending": list(level.pending), "at_level": at_level, "live": info.live})
        why = []
        if not at_target(info, ctx.media):
            why.append(f"at {info.product_version} build {info.build_number}, not {ctx.media.product_version}")
        if not at_level:
            why.append(f"update level {level.last_update_hash[:12] or 'base'}, not {target[:12] or 'base'}")
        if set(level.pending) & (REBOOT_GUIDANCES | TOOLSTACK_GUIDANCES):
            why.append(f"guidances pending: {', '.join(level.pending)}")
        if why:
            left.append({"name": info.name, "why": "; ".join(why)})
    # the run's repository stays the enabled one: the pool's /repository/enabled then serves the level its hosts are
    # at (what a reinstalled host converges to, reinstall_converge.py); the set it replaced is named in the report
    enabled = journal.last(ctx.store, ctx.run_id, ENABLED)
    journal.write(ctx.store, ctx.run_id, POOL, hash=target, hosts=found, left_behind=left,
                  replaced_repositories=enabled["before"] if enabled else [])
    return [f"{x['name']} left behind: {x['why']}" for x in left] if hash_ else []
