"""The webhook signature (docs/audit.md "Webhook signature"): what a receiver checks before trusting a delivery.

Headers of every delivery:
  X-Provisioner-Event: run.started | host.step_failed | run.needs_operator | run.finished | webhook.test
  X-Provisioner-Delivery: the outbox id (the same on every retry of one delivery: receivers de-duplicate on it)
  X-Provisioner-Timestamp: Unix seconds when this attempt was signed
  X-Provisioner-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
Signing the timestamp with the body lets a receiver refuse a replayed delivery older than its tolerance
(GitHub and Stripe sign the same way: Stripe's "t=...,v1=..." covers "<t>.<body>").
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Mapping

SIGNATURE = "X-Provisioner-Signature"
TIMESTAMP = "X-Provisioner-Timestamp"
EVENT = "X-Provisioner-Event"
DELIVERY = "X-Provisioner-Delivery"
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(int(timestamp)).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(secret: str, body: bytes, *, event: str, delivery: int, timestamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time() if timestamp is None else timestamp)
    return {"Content-Type": "application/json", EVENT: event, DELIVERY: str(delivery), TIMESTAMP: str(stamp),
            SIGNATURE: signature(secret, stamp, body), "User-Agent": "provisioner-webhook/1"}


def check(secret: str, given: Mapping[str, str], body: bytes, *, now: float | None = None,
          tolerance: int = TOLERANCE_SECONDS) -> str | None:
    """Why a delivery must not be trusted, or None when its signature is valid and fresh."""
    stamp = given.get(TIMESTAMP, "")
    if not stamp.isdigit():
        return f"no {TIMESTAMP} header"
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        return f"timestamp {stamp} is more than {tolerance} s from now (a replay?)"
    if not hmac.compare_digest(given.get(SIGNATURE, ""), signature(secret, int(stamp), body)):
        return "the signature does not match the body and timestamp"
    return None
