"""The registry of the simulator's XAPI call handlers ("class.method" -> handler) and what every handler shares.

Handler modules (host_calls, join, vm_calls, event_calls) register themselves with @api on import; xapi_server
imports them all and looks calls up in HANDLERS. This module imports no handler module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from . import vm_ops
from .db import Db
from .errors import XapiError
from .hosts import SimHost, SimPool

if TYPE_CHECKING:
    from .world import World


@dataclass
class Call:
    """One call as its handler sees it: the world, the pool and host it arrived at, its session and name."""

    world: World
    pool: SimPool
    host: SimHost  # the endpoint the call arrived on
    session: str
    method: str

    @property
    def db(self) -> Db:
        return self.pool.db


# "Class.call" -> (handler, min params, max params) counting the session; shorter forms are the
# later-added defaulted parameters (2.1: host.evacuate(host), host.disable(host), login(u, p)).
HANDLERS: dict[str, tuple[Callable, int, int]] = {}


def api(name: str, nmin: int, nmax: int | None = None):
    def deco(fn):
        HANDLERS[name] = (fn, nmin, nmax if nmax is not None else nmin)
        return fn
    return deco


@dataclass
class HttpRequest:
    """One plain HTTP request to a host's xapi (PUT /bundle, GET /updates, GET /repository/...: the handlers
    xapi registers besides XML-RPC, xapi.ml; docs/xapi.md "Update repositories")."""

    method: str
    path: str
    query: dict[str, str]
    cookies: dict[str, str]
    body: bytes


# (method, path prefix) -> handler(world, host, HttpRequest) -> (status, content type, body bytes)
HTTP_ROUTES: dict[tuple[str, str], Callable] = {}


def http_route(method: str, prefix: str):
    def deco(fn):
        HTTP_ROUTES[(method, prefix)] = fn
        return fn
    return deco


def find_http_route(method: str, path: str) -> Callable | None:
    for (m, prefix), fn in sorted(HTTP_ROUTES.items(), key=lambda kv: -len(kv[0][1])):
        if m == method and (path == prefix or path.startswith(prefix.rstrip("/") + "/")):
            return fn
    return None


# Derived reverse references, computed at read time so they never drift.
DERIVED = {"host": {"resident_VMs": ("VM", "resident_on"), "PIFs": ("PIF", "host"), "PBDs": ("PBD", "host")},
           "VM": {"VBDs": ("VBD", "VM"), "snapshots": ("VM", "snapshot_of"), "VGPUs": ("VGPU", "VM"),
                  "VIFs": ("VIF", "VM")}, "VDI": {"VBDs": ("VBD", "VDI")},
           "SR": {"PBDs": ("PBD", "SR"), "VDIs": ("VDI", "SR")}, "network": {"PIFs": ("PIF", "network")}}


def view(world: World, pool: SimPool, cls: str, ref: str) -> dict:
    """The record as the wire shows it (derived fields filled in; the generic getters and event.from use it)."""
    db = pool.db
    with db.lock:
        rec = db.record(cls, ref)
        for fld, (other, key) in DERIVED.get(cls, {}).items():
            rec[fld] = db.find(other, **{key: ref})
        if cls == "VM":
            rec["allowed_operations"] = vm_ops.allowed_operations(world, pool, rec, ref)
        if cls == "host" and world.rpu_in_progress(pool):
            rec["allowed_operations"] = ["evacuate", "provision"]  # xapi_host_helpers.ml:198-229 (Miami keys)
        elif cls == "host":
            rec["allowed_operations"] = ["evacuate", "provision", "reboot", "shutdown", "power_on"]
        return rec


def sim_host(c: Call, ref: str) -> SimHost:
    c.db.get("host", ref)
    return c.pool.host_by_ref(ref)


def assert_live(c: Call, ref: str) -> None:
    """Forwarded calls check host_metrics.live first: HOST_OFFLINE [host] (message_forwarding.ml:129-163)."""
    if not c.db.get("host_metrics", c.db.get("host", ref)["metrics"])["live"]:
        raise XapiError("HOST_OFFLINE", ref)
