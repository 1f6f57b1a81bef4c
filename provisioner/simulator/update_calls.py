"""Handlers of the update calls: Repository.*, pool.set_repositories / add_repository / remove_repository /
sync_updates, host.apply_updates, host.restart_agent, task.create (docs/xapi.md "Update repositories").

Sources: ocaml/xapi/repository.ml (introduce*, forget, apply_updates), xapi_pool.ml:3980-4127 (the pool's
repository calls and sync_updates), xapi_host.ml:793-811 (restart_agent), :3119-3145 (apply_updates);
parameters from ocaml/idl/datamodel_repository.ml, datamodel_pool.ml:1258-1360, datamodel_host.ml:2539-2560.
"""

from __future__ import annotations

import threading

from . import states as st
from . import update_sync as us
from . import updates as up
from .db import NULL_REF, xapi_datetime
from .errors import XapiError
from .hosts import SimHost, SimPool
from .registry import Call, api, sim_host

_OPS_LOCK = threading.Lock()


class pool_operation:
    """Xapi_pool_helpers.with_pool_operation: one repository operation at a time per pool, else
    OTHER_OPERATION_IN_PROGRESS [pool, ref, op, ...] (xapi_pool_helpers.ml:120-135)."""

    def __init__(self, pool: SimPool, op: str):
        self.pool, self.op = pool, op

    def __enter__(self):
        with _OPS_LOCK:
            if self.pool.update_ops:
                busy = next(iter(self.pool.update_ops))
                raise XapiError("OTHER_OPERATION_IN_PROGRESS", "pool", self.pool.ref, busy, NULL_REF)
            self.pool.update_ops.add(self.op)
        return self

    def __exit__(self, *exc):
        with _OPS_LOCK:
            self.pool.update_ops.discard(self.op)


# ---- Repository (repository.ml:32-104) -------------------------------------------------------------------
def _assert_unique(c: Call, name_label: str, binary_url: str | None) -> None:
    for ref in c.db.all("Repository"):
        rec = c.db.get("Repository", ref)
        if rec["name_label"] == name_label or (binary_url is not None and rec["binary_url"] == binary_url):
            raise XapiError("REPOSITORY_ALREADY_EXISTS", ref)


@api("Repository.introduce", 6, 7)
def repository_introduce(c: Call, name_label, name_description, binary_url, source_url, update, gpgkey_path=""):
    conf = up.conf(c.world, c.pool)
    up.assert_url_not_blocked(conf, binary_url)
    up.assert_url_not_blocked(conf, source_url)
    up.assert_url_valid(conf, binary_url)
    up.assert_url_valid(conf, source_url)
    if gpgkey_path and not all(ch.isalnum() or ch in "_-" for ch in gpgkey_path):
        raise XapiError("INVALID_GPGKEY_PATH", gpgkey_path)  # repository_helpers.ml:229-247
    with c.db.lock:
        _assert_unique(c, name_label, binary_url)
        return c.db.create("Repository", name_label=name_label, name_description=name_description,
                           binary_url=binary_url, source_url=source_url, update=update in (True, "true"),
                           gpgkey_path=gpgkey_path, origin="remote")


@api("Repository.introduce_bundle", 3)
def repository_introduce_bundle(c: Call, name_label, name_description):
    with c.db.lock:
        for ref in c.db.all("Repository"):
            rec = c.db.get("Repository", ref)
            if rec["name_label"] == name_label:
                raise XapiError("REPOSITORY_ALREADY_EXISTS", ref)
            if rec["origin"] == "bundle":
                raise XapiError("BUNDLE_REPOSITORY_ALREADY_EXISTS", ref)
        return c.db.create("Repository", name_label=name_label, name_description=name_description,
                           update=True, origin="bundle")


@api("Repository.introduce_remote_pool", 5)
def repository_introduce_remote_pool(c: Call, name_label, name_description, binary_url, certificate):
    up.remote_pool_address(binary_url)
    with c.db.lock:
        _assert_unique(c, name_label, binary_url)
        return c.db.create("Repository", name_label=name_label, name_description=name_description,
                           binary_url=binary_url, update=True, origin="remote_pool", certificate=certificate)


@api("Repository.forget", 2)
def repository_forget(c: Call, ref):
    with c.db.lock:
        c.db.get("Repository", ref)
        if ref in c.db.get("pool", c.pool.ref)["repositories"]:
            raise XapiError("REPOSITORY_IS_IN_USE")
        c.db.delete("Repository", ref)
        c.pool.synced.pop(ref, None)
    return ""


# ---- pool (xapi_pool.ml:3980-4127) -----------------------------------------------------------------------
def _assert_single_repo_can_be_enabled(c: Call, repos: list[str]) -> None:
    """:3980-4007: a bundle or remote_pool repository must be the only one enabled."""
    origins = {c.db.get("Repository", r)["origin"] for r in repos} - {"remote"}
    if len(repos) > 1 and origins:
        raise XapiError("REPO_SHOULD_BE_SINGLE_ONE_ENABLED")


def _reset_sync(c: Call, repo: str) -> None:
    c.db.update("Repository", repo, hash="")
    c.db.update("pool", c.pool.ref, last_update_sync=xapi_datetime(0))


@api("pool.set_repositories", 3)
def pool_set_repositories(c: Call, ref, value):
    c.db.get("pool", ref)
    with pool_operation(c.pool, "configure_repositories"), c.db.lock:
        for r in value:
            c.db.get("Repository", r)
        _assert_single_repo_can_be_enabled(c, list(value))
        existing = c.db.get("pool", ref)["repositories"]
        for r in existing:
            if r not in value:
                c.pool.synced.pop(r, None)  # cleanup_pool_repo
        for r in value:
            if r not in existing:
                _reset_sync(c, r)
        c.db.update("pool", ref, repositories=list(dict.fromkeys(value)))
        if not value:
            c.db.update("pool", ref, last_update_sync=xapi_datetime(0))
            for h in c.db.all("host"):
                c.db.update("host", h, latest_synced_updates_applied="unknown")
    return ""


@api("pool.add_repository", 3)
def pool_add_repository(c: Call, ref, value):
    c.db.get("pool", ref)
    with pool_operation(c.pool, "configure_repositories"), c.db.lock:
        c.db.get("Repository", value)
        existing = c.db.get("pool", ref)["repositories"]
        if value not in existing:
            _assert_single_repo_can_be_enabled(c, [value, *existing])
            c.db.update("pool", ref, repositories=[*existing, value])
            _reset_sync(c, value)
    return ""


@api("pool.remove_repository", 3)
def pool_remove_repository(c: Call, ref, value):
    c.db.get("pool", ref)
    with pool_operation(c.pool, "configure_repositories"), c.db.lock:
        existing = c.db.get("pool", ref)["repositories"]
        c.pool.synced.pop(value, None)
        c.db.update("pool", ref, repositories=[r for r in existing if r != value])
        if len(existing) <= 1:
            c.db.update("pool", ref, last_update_sync=xapi_datetime(0))
    return ""


@api("pool.sync_updates", 3, 7)
def pool_sync_updates(c: Call, ref, force, token="", token_id="", username="", password=""):
    """:4118-4127: bundle repositories cannot be synced (CAN_NOT_SYNC_UPDATES); each enabled repository synced,
    then the hash of the enabled update repository returned."""
    c.db.get("pool", ref)
    with pool_operation(c.pool, "sync_updates"):
        repos = list(c.db.get("pool", ref)["repositories"])
        for r in repos:
            if c.db.get("Repository", r)["origin"] == "bundle":
                raise XapiError("CAN_NOT_SYNC_UPDATES")
        for r in repos:
            if force in (True, "true"):
                c.pool.synced.pop(r, None)
            us.sync_one(c.world, c.pool, r, username=username, password=password)
        return us.set_available_updates(c.world, c.pool)


# ---- host ------------------------------------------------------------------------------------------------
@api("host.apply_updates", 3)
def host_apply_updates(c: Call, ref, hash_):
    """xapi_host.ml:3119-3145 and repository.ml:896-957: HA off; the host disabled first; no mandatory guidance
    pending; the single enabled update repository's hash; evacuated when a mandatory guidance reboots or
    evacuates it; the RPMs installed (takes sim time); guidances set. Returns livepatch failures ([])."""
    h = sim_host(c, ref)
    db = c.db
    with pool_operation(c.pool, "apply_updates"):
        if db.get("pool", c.pool.ref)["ha_enabled"]:
            raise XapiError("HA_IS_ENABLED")
        if db.get("host", ref)["enabled"]:
            h.auto_enable = True  # disable ~auto_enable:true
            db.update("host", ref, enabled=False)
        up.assert_no_pending_mandatory(db, ref)
        repo_ref = us.single_enabled_update_repository(c.pool)
        repo = c.pool.synced.get(repo_ref)
        if not hash_ or hash_ != db.get("Repository", repo_ref)["hash"] or repo is None:
            raise XapiError("UPDATEINFO_HASH_MISMATCH")
        if not db.get("host_metrics", db.get("host", ref)["metrics"])["live"] or not h.serving:
            raise XapiError("GET_HOST_UPDATES_FAILED", ref)  # the GET /host_updates to the host fails
        todo = up.applicable(h, repo)
        if todo:
            mandatory = up.reduce_guidance(todo)["mandatory"]
            resident = [v for v in db.find("VM", resident_on=ref) if not db.get("VM", v)["is_control_domain"]]
            if mandatory & {"RebootHost", "EvacuateHost"} and resident:  # repository_helpers.ml:1765-1782
                raise XapiError("HOST_EVACUATION_IS_REQUIRED", ref)
            epoch = h.power_epoch
            if not c.world.sleep(c.world.delays.get("apply_updates", 120.0)) or h.power_epoch != epoch \
                    or not h.serving:
                raise XapiError("APPLY_UPDATES_FAILED", ref)  # repository.ml:702-719 (yum failed: host went down)
        up.record_applied(c.world, c.pool, h, todo, hash_)
    return []


@api("host.restart_agent", 2)
def host_restart_agent(c: Call, ref):
    """xapi_host.ml:793-811: returns at once; 1 s later xe-toolstack-restart stops xapi (connections refused,
    sessions of a coordinator gone) and starts it again: not a system boot, so only RestartToolstack is
    cleared (dbsync_slave.ml:257-270) and the xapi now running reports the installed xapi's version."""
    h = sim_host(c, ref)
    c.world.spawn(_toolstack_restart, c.world, h, name=f"sim-toolstack-{h.name}")
    return ""


def _toolstack_restart(world, h: SimHost) -> None:
    epoch = h.power_epoch
    if not world.sleep(1.0) or h.power_epoch != epoch or h.state != st.XAPI_RUNNING:
        return
    pool = h.pool
    if world.endpoint_listener:
        world.endpoint_listener(h, False)
    world.link_lost(h)
    if h.is_master:
        world.clear_sessions_and_tasks(pool)
    if not world.sleep(world.delays.get("toolstack_restart", 20.0)) or h.power_epoch != epoch:
        return
    h.user_disabled = False  # a new xapi forgets a user disable (consider_enabling_host)
    world._set_state(h, st.XAPI_STARTING)
    if world.endpoint_listener:
        world.endpoint_listener(h, True)
    with pool.db.lock:
        up.on_xapi_start(pool.db, h, system_boot=False, installed=False)
    if h.is_master:
        world.coordinator_restarted(pool)
    else:
        world.link(h)
    world._startup_window(h)


# ---- task.create (datamodel.ml task create: a client-made task for HTTP handlers) ---------------------------
@api("task.create", 3)
def task_create(c: Call, label, description):
    return c.db.create("task", name_label=label, name_description=description, status="pending",
                       created=xapi_datetime(c.world.clock.now()), resident_on=c.pool.master.ref)
