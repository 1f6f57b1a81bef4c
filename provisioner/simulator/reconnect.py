"""Members and the coordinator's xapi restarting (docs/simulator.md "Members reconnect after the coordinator
restarts"): a mixin World inherits from, and `forward`, the check every forwarded call handler makes first.

What the real xapi does (xapi-project/xen-api, docs/xapi.md "The pool after its coordinator restarts"):
- When the coordinator's xapi goes away, each member's database connection dies; the member retries it with a
  backoff from 2 s doubling to 256 s (ocaml/database/master_connection.ml:213-262, never giving up on a running
  member: master_connection_retry_timeout = -1, db_globs.ml:66, xapi.ml:1254-1256).
- The restarted coordinator asks every host Pool.is_slave at startup (xapi.ml:191-229 check_no_other_masters),
  which interrupts the member's backoff sleep (xapi_pool.ml:2710-2721 signals Master_connection.delay): a member
  that gets it reconnects at once, one that misses it waits for its next backoff retry (up to 256 s later).
- A member that reconnects sends a heartbeat at once (xapi.ml:233-252 on_master_restart).
- The restarted coordinator has no heartbeat from anyone: db_gc.ml:80-141 check_host_liveness starts a fresh
  host_assumed_dead_interval (600 s) timer per host and sets live=true meanwhile, whatever the host's state
  (the in-memory shutting-down list is empty after a restart); live=false once the timer expires unheard.
- A forwarded call (message_forwarding.ml:129-172 do_op_on) checks live (HOST_OFFLINE [host]), then opens a
  connection to the member: refused -> CANNOT_CONTACT_HOST [host]; a member in emergency mode answers its
  emergency error (api_server.ml:15-25); a member whose database link is down blocks in its own database calls
  until it reconnects (master_connection.ml:263-: the request loops until write_ok).

It imports nothing of world.py (the world's types come from hosts.py).
"""

from __future__ import annotations

from .db import xapi_datetime
from .errors import XapiError
from .hosts import SimHost, SimPool

BACKOFF_FIRST, BACKOFF_MAX = 2.0, 256.0  # master_connection.ml:213-221


def backoff_retry(lost_at: float, not_before: float) -> float:
    """The first retry of a member whose connection died at `lost_at` that comes at or after `not_before`:
    retries at lost+2, +4, +8, ... each gap doubling up to 256 s (master_connection.ml:213-221)."""
    t, gap = lost_at, BACKOFF_FIRST
    while t < not_before:
        t += gap
        gap = min(gap * 2.0, BACKOFF_MAX)
    return t


class MemberLinks:
    """World's model of each member's database link to the coordinator; uses World's clock, delays, threads."""

    def link_lost(self, h: SimHost) -> None:
        """`h`'s xapi stops: if it is the coordinator every member's link dies, else only its own."""
        now = self.clock.now()
        for m in (x for x in h.pool.hosts if x is not h.pool.master) if h.is_master else [h]:
            if m.linked:
                m.linked, m.link_lost_at = False, now
                m.link_up.clear()

    def link(self, m: SimHost) -> None:
        """The member's database link is up again; it sends a heartbeat at once (xapi.ml:233-252)."""
        m.linked = True
        m.link_up.set()
        db = m.pool.db
        with db.lock:
            if db.exists("host", m.ref):
                db.update("host_metrics", db.get("host", m.ref)["metrics"], live=True,
                          last_updated=xapi_datetime(self.clock.now()))

    def coordinator_restarted(self, pool: SimPool) -> None:
        """The coordinator's xapi started: every other host live for a fresh 600 s (db_gc.ml:80-141), the startup
        Pool.is_slave kick to each member (xapi.ml:191-229), and the members that miss it on their backoff."""
        pool.restarts += 1
        db, started = pool.db, self.clock.now()
        members = [m for m in pool.hosts if m is not pool.master]
        with db.lock:
            for m in members:
                if db.exists("host", m.ref):
                    db.update("host_metrics", db.get("host", m.ref)["metrics"], live=True)
        for m in members:
            self.spawn(self._dead_unless_heard, m, pool.restarts, name=f"sim-liveness-{m.name}")
            if m.serving and not m.linked and m.emergency is None:
                self.spawn(self._reconnect, m, pool.restarts, started, name=f"sim-reconnect-{m.name}")

    def _reconnect(self, m: SimHost, restarts: int, started: float) -> None:
        if m.reconnect_never:
            return
        if m.reconnect_after is None:  # the kick interrupts the backoff sleep: at once
            at = started
        else:
            at = backoff_retry(m.link_lost_at, started + m.reconnect_after)
        epoch = m.power_epoch
        if not self.sleep(at - self.clock.now()):
            return
        if m.pool.restarts == restarts and m.power_epoch == epoch and m.serving and not m.linked:
            self.link(m)

    def _dead_unless_heard(self, m: SimHost, restarts: int) -> None:
        if not self.sleep(self.delays["assumed_dead"]) or m.pool.restarts != restarts:
            return
        if m.serving and m.linked:
            return  # its heartbeats kept the timer fresh
        db = m.pool.db
        with db.lock:
            if db.exists("host", m.ref):
                db.update("host_metrics", db.get("host", m.ref)["metrics"], live=False)


def forward(c, ref: str) -> None:
    """`c` is the handler's registry.Call (not imported: registry is above this module). What a call forwarded to the host `ref` meets before it runs there (message_forwarding.ml:129-172): nothing
    for the coordinator itself; HOST_OFFLINE when not live; CANNOT_CONTACT_HOST when its xapi does not listen (or
    is injected unreachable); its emergency error; and, while its database link is down, a wait until it is up."""
    h = c.pool.host_by_ref(ref)
    if h is c.pool.master:
        return
    if not c.db.get("host_metrics", c.db.get("host", ref)["metrics"])["live"]:
        raise XapiError("HOST_OFFLINE", ref)
    world = c.world
    while True:
        if not h.serving or (h.reconnect_unreachable and not h.linked):
            raise XapiError("CANNOT_CONTACT_HOST", ref)
        if h.emergency is not None:
            raise h.emergency
        if h.linked or world.stopping:
            return
        h.link_up.wait(world.clock.real(5.0))
