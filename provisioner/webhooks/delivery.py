"""The webhook outbox pump: events table -> outbox rows -> signed HTTP POSTs, retried with backoff.

One pump per serving process (runtime.py starts it). Each round: queue the new event rows some webhook wants
(store.webhook_enqueue: cursor and outbox rows in one transaction), then POST every due delivery. A 2xx answer
delivers it; anything else (refused connection, timeout, 5xx, 4xx) schedules the next attempt after
BACKOFF[attempts] (capped), and after max_attempts the delivery is given up with a `webhook.gave_up` event. The
outbox lives in the database, so a receiver that is down, or a restart of this server, loses nothing: the next
round sends what is due. A delivery may be sent more than once (a crash between the POST and its record):
receivers de-duplicate on X-Provisioner-Delivery.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Callable

from provisioner.credentials import SecretError
from provisioner.store import Store
from provisioner.webhooks import events, service, signing

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (5, 15, 60, 300, 900, 1800)  # after the 1st, 2nd, ... failed attempt; then the last one
MAX_ATTEMPTS = 12  # about 3.4 hours of retries with the default backoff (5+15+60+300+900 s, then 30 min)
TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 2.0


def _iso(moment: float) -> str:
    return _dt.datetime.fromtimestamp(moment, _dt.timezone.utc).isoformat(timespec="milliseconds")


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> tuple[bool, str]:
    """POST once: (delivered, what happened). Redirects are not followed (a receiver moved is a failure to see)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003
            return None

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as answer:
            return 200 <= answer.status < 300, f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))[:300]


class Pump:
    """One round at a time (`round()`), or a thread that runs rounds every poll seconds (`start()`/`stop()`).
    `clock` (Unix seconds) and `send` can be replaced by tests (a simulated clock; the real HTTP `post` stays)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 send: Callable[[str, bytes, dict[str, str], float], tuple[bool, str]] = post,
                 backoff: tuple[float, ...] = BACKOFF_SECONDS, max_attempts: int = MAX_ATTEMPTS,
                 timeout: float = TIMEOUT_SECONDS, poll: float = POLL_SECONDS):
        self.store, self.clock, self.send = store, clock, send
        self.backoff, self.max_attempts, self.timeout, self.poll = backoff, max_attempts, timeout, poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1-based)."""
        return float(self.backoff[min(attempts, len(self.backoff)) - 1])

    def round(self) -> dict[str, int]:
        """Queue new notifications, then try every due delivery once: counts of queued/delivered/failed/given_up."""
        queued = self.store.webhook_enqueue(events.select, at=_iso(self.clock()))
        counts = {"queued": queued, "delivered": 0, "failed": 0, "given_up": 0}
        for item in self.store.webhook_due(_iso(self.clock())):
            body = item["payload"].encode()
            try:
                secret = service.secret_of(self.store, item)
            except SecretError as exc:
                ok, what = False, str(exc)
            else:
                sent_headers = signing.headers(secret, body, event=item["event"], delivery=item["id"],
                                               timestamp=int(self.clock()))
                ok, what = self.send(item["url"], body, sent_headers, self.timeout)
            if ok:
                self.store.webhook_result(item["id"], delivered=True)
                counts["delivered"] += 1
                continue
            attempts = item["attempts"] + 1
            give_up = attempts >= self.max_attempts
            self.store.webhook_result(item["id"], delivered=False, error=what, give_up=give_up,
                                      next_at=None if give_up else _iso(self.clock() + self.delay(attempts)))
            counts["given_up" if give_up else "failed"] += 1
            log.warning("webhook %s: delivery %s (%s) attempt %d failed: %s%s", item["url"], item["id"],
                        item["event"], attempts, what, " - given up" if give_up else "")
        return counts

    def start(self) -> "Pump":
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.round()
            except Exception:  # a locked or full database: try again next round, never kill the pump
                log.exception("webhook round failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def test_delivery(url: str, secret: str, *, send=post, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Send one signed `webhook.test` notification now (not through the outbox): (delivered, what happened)."""
    body = json.dumps({"event": "webhook.test", "ts": _iso(time.time())}, sort_keys=True).encode()
    return send(url, body, signing.headers(secret, body, event="webhook.test", delivery=0), timeout)
