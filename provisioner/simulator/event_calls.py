"""The event.from handler of the simulated XAPI: changes since a token, blocking on the sim clock (docs/xapi.md
"Tasks and events")."""

from __future__ import annotations

from .db import CLASSES
from .errors import DropConnection, XapiError
from .registry import Call, api, view


@api("event.from", 4)
def event_from(c: Call, classes, token, timeout):
    """xapi_event.ml:591-775: token "" returns every object as `add`; blocks until a change or the timeout
    (sim seconds here), then returns an empty batch with a new token."""
    subs, refs = set(), set()
    for s in classes:
        # xapi_event.ml:65-78 Subscription.of_string: "*", a class, or "class/ref" (an object); the class is
        # lower-cased, the ref kept as given (object_matches compares it as is)
        cls, slash, ref = str(s).partition("/")
        cls = cls.lower()
        if str(s) != "*" and cls not in CLASSES:
            raise XapiError("EVENT_SUBSCRIPTION_PARSE_FAILURE", str(s))
        (refs.add(f"{cls}/{ref}") if slash else subs.add(cls))
    wanted = None if "*" in subs else subs
    try:
        since = int(str(token).split(",")[0]) if token else 0
    except ValueError:
        raise XapiError("EVENT_FROM_TOKEN_PARSE_FAILURE", token) from None
    db, pool, epoch = c.db, c.pool, c.pool.epoch
    deadline = c.world.clock.now() + float(timeout)
    with db.cond:
        while True:
            if pool.epoch != epoch or c.world.stopping:
                raise DropConnection()  # the coordinator went down: waiters see a connection reset (4.4)
            events = db.changes_since(since, wanted, refs,
                                      view=lambda cls, ref: view(c.world, pool, cls, ref))
            left = deadline - c.world.clock.now()
            if events or left <= 0:
                counts = {k.lower(): len(v) for k, v in db.tables.items()
                          if wanted is None or k.lower() in wanted}
                return {"events": events, "valid_ref_counts": counts, "token": db.token()}
            c.world.clock.wait(db.cond, min(left, c.world.clock.sim(0.2)))
