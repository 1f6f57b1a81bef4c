"""Add, list and remove webhooks: the checks the CLI and any other door share (docs/audit.md "Webhooks")."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from provisioner import credentials
from provisioner.model import ValidationError
from provisioner.store import Store
from provisioner.webhooks import events

MIN_SECRET = 16
SECRET_WHAT = ("webhook secret", "remove the webhook and add it again with its --secret-file")


def data_dir(store: Store) -> Path:
    """Where the key that encrypts stored secrets lives: with the database (as for pool passwords)."""
    return Path(getattr(store, "data_dir", None) or store.path.parent)


def secret_of(store: Store, hook: dict) -> str:
    """The plain secret of a stored webhook (stored encrypted with credentials.encrypt)."""
    return credentials.decrypt(data_dir(store), hook["secret"], what=SECRET_WHAT)


def read_secret(path: str | Path) -> str:
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read the secret file {path}: {exc}", "secret-file") from None
    if len(secret) < MIN_SECRET:
        raise ValidationError(f"the secret in {path} is shorter than {MIN_SECRET} characters: put a long random "
                              "string there (e.g. `openssl rand -hex 32 > FILE`)", "secret-file")
    return secret


def add(store: Store, url: str, secret: str, *, pool: str | None = None,
        wanted: Iterable[str] | None = None) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("must be an http:// or https:// URL with a host", "url")
    chosen = sorted(set(wanted or events.EVENTS))
    unknown = [e for e in chosen if e not in events.EVENTS]
    if unknown:
        raise ValidationError(f"unknown event {', '.join(unknown)}; known: {', '.join(events.EVENTS)}", "events")
    if pool is not None and store.get_pool(pool) is None:
        raise ValidationError(f"no pool named {pool!r} (see: provisioner pools add)", "pool")
    stored = credentials.encrypt(data_dir(store), secret)  # the database alone cannot forge signatures
    return public(store.add_webhook(url, stored, pool=pool, events=chosen))


def public(hook: dict) -> dict:
    """A webhook as shown: never its secret."""
    return {k: v for k, v in hook.items() if k != "secret"}


def listing(store: Store) -> list[dict]:
    out = []
    for hook in store.list_webhooks():
        deliveries = store.webhook_deliveries(webhook_id=hook["id"])
        states = {s: sum(1 for d in deliveries if d["state"] == s) for s in ("pending", "delivered", "failed")}
        out.append({**public(hook), "deliveries": states})
    return out
