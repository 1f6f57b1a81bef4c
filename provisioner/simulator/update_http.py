"""xapi's plain HTTP handlers of the update side, on the simulated coordinator: PUT /bundle, GET /updates,
GET /repository/enabled/... (docs/xapi.md "Update repositories").

Sources: xapi_pool.ml:4456-4520 put_bundle_handler (session and task from the query, the bundle repository
must be the single enabled one, Tar_ext unpack then a forced sync; BUNDLE_UNPACK_FAILED [msg],
BUNDLE_SYNC_FAILED [], BUNDLE_REPO_NOT_ENABLED []), :4177-4245 get_updates_handler (JSON: hosts, updates, hash;
404 without a repository), repository.ml:631-644 get_enabled_repository_handler (the enabled repository's
files, what a remote pool's sync fetches), Constants (/bundle, /updates, /repository/enabled).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import repo_format as rf
from . import update_sync as us
from . import updates as up
from .db import xapi_datetime
from .errors import XapiError
from .hosts import SimHost
from .registry import HttpRequest, http_route
from .update_calls import pool_operation

if TYPE_CHECKING:
    from .world import World

JSON = "application/json"
TEXT = "text/plain"


def _session(h: SimHost, req: HttpRequest) -> str | None:
    """Xapi_http.with_context: session_id from the query or the cookie, valid on the coordinator."""
    session = req.query.get("session_id") or req.cookies.get("session_id")
    return session if session and session in h.pool.sessions else None


def _forbidden(h: SimHost) -> tuple[int, str, bytes]:
    if not h.is_master:  # a member's xapi sends clients to its coordinator
        return 503, TEXT, b"HOST_IS_SLAVE"
    return 403, TEXT, b"Forbidden"


def _task(world: "World", h: SimHost, req: HttpRequest, **fields) -> None:
    """The task_id of the query (a client's task.create) records the outcome, as TaskHelper does."""
    task, db = req.query.get("task_id"), h.pool.db
    with db.lock:
        if task and db.exists("task", task):
            if fields.get("status") in ("success", "failure"):
                fields["finished"] = xapi_datetime(world.clock.now())
            db.update("task", task, **fields)


@http_route("PUT", "/bundle")
def put_bundle(world: "World", h: SimHost, req: HttpRequest) -> tuple[int, str, bytes]:
    """The 200 goes out before the bundle is read (xapi_pool.ml:4467): from then on the outcome is the task's."""
    if not h.is_master or _session(h, req) is None:
        return _forbidden(h)
    pool = h.pool
    _task(world, h, req, progress=0.0)
    try:
        with pool_operation(pool, "sync_bundle"):
            error = _sync_bundle(world, pool, req)
    except XapiError as exc:  # another pool operation runs: with_pool_operation fails before the 200
        _task(world, h, req, status="failure", progress=1.0, error_info=exc.description)
        return 500, TEXT, json.dumps(exc.description).encode()
    if error:
        _task(world, h, req, status="failure", progress=1.0, error_info=error)
    else:
        _task(world, h, req, status="success", progress=1.0)
    return 200, TEXT, b""


def _sync_bundle(world: "World", pool, req: HttpRequest) -> list[str]:
    """Unpack and sync; the task's error_info on failure, [] on success."""
    try:
        ref = us.single_enabled_update_repository(pool)
    except XapiError as exc:
        return exc.description
    if pool.db.get("Repository", ref)["origin"] != "bundle":
        return ["BUNDLE_REPO_NOT_ENABLED"]
    try:
        files = rf.unpack_tar(req.body, up.conf(world, pool).bundle_max_size)
    except rf.UnpackError as exc:
        return ["BUNDLE_UNPACK_FAILED", str(exc)]
    try:
        pool.synced.pop(ref, None)  # sync_repos ~force:true
        us.sync_one(world, pool, ref, bundle=files)
        us.set_available_updates(world, pool)
    except XapiError:
        return ["BUNDLE_SYNC_FAILED"]
    return []


def updates_json(pool, host_refs: list[str]) -> dict:
    """repository.ml:659-700 get_pool_updates_in_json: per host its applicable updates and their guidance; the
    updates' updateinfo; the repository hash."""
    ref = us.single_enabled_update_repository(pool)
    repo = pool.synced.get(ref)
    if repo is None:
        raise XapiError("INVALID_REPOMD_XML")
    hosts, ids = [], set()
    for h in pool.hosts:
        if h.ref not in host_refs:
            continue
        todo = up.applicable(h, repo)
        ids |= {u.id for u in todo}
        guidance = up.reduce_guidance(todo)
        pkgs = {p.name: p for u in todo for p in u.packages}
        hosts.append({"ref": h.ref,
                      "guidance": {k: sorted(v) for k, v in guidance.items() if v},
                      "RPMS": [f"{p.name}-{p.epoch}:{p.version}-{p.release}.{p.arch}" for p in pkgs.values()],
                      "updates": sorted(u.id for u in todo), "livepatches": []})
    updates = [{"id": u.id, "summary": u.summary, "type": u.type, "description": "", "special-info": "",
                "URL": "", "livepatches": [], "guidance": {k: list(v) for k, v in u.guidance.items()}}
               for u in sorted((repo.updates[i] for i in ids), key=lambda u: u.id)]
    out = {"hosts": hosts, "updates": updates, "hash": pool.db.get("Repository", ref)["hash"]}
    if repo.api_version:
        out["xapi-api-version"] = repo.api_version
    return out


@http_route("GET", "/updates")
def get_updates(world: "World", h: SimHost, req: HttpRequest) -> tuple[int, str, bytes]:
    if not h.is_master or _session(h, req) is None:
        return _forbidden(h)
    pool = h.pool
    all_hosts = [x.ref for x in pool.hosts if pool.db.exists("host", x.ref)]
    refs = all_hosts
    if "host_refs" in req.query:
        refs = req.query["host_refs"].split(";")
        if not refs or any(r not in all_hosts for r in refs):
            return 400, TEXT, b"Bad request"
    try:
        with pool_operation(pool, "get_updates"):
            body = updates_json(pool, refs)
    except XapiError as exc:
        if exc.code in ("NO_REPOSITORY_ENABLED", "INVALID_REPOMD_XML", "INVALID_UPDATEINFO_XML"):
            return 404, TEXT, b"Not found"
        return 500, TEXT, json.dumps(exc.description).encode()
    return 200, JSON, json.dumps(body).encode()


@http_route("GET", "/repository/enabled")
def get_enabled_repository(world: "World", h: SimHost, req: HttpRequest) -> tuple[int, str, bytes]:
    if not h.is_master or _session(h, req) is None:
        return _forbidden(h)
    try:
        repo = h.pool.synced.get(us.single_enabled_update_repository(h.pool))
    except XapiError:
        return 404, TEXT, b"Not found"
    path = req.path[len("/repository/enabled"):].lstrip("/")
    if repo is None or path not in repo.files:
        return 404, TEXT, b"Not found"
    return 200, "application/octet-stream", repo.files[path]
