"""The audit trail (issue 23, docs/audit.md): who did what, when, from where, with what result; and its check.

Every door records here: the REST API and the dashboard (web/audit_hook.py, one hook after each request) and the
command line (cli/audited.py, the root group). Values that look like secrets (passwords, tokens, keys) are replaced
by "<redacted>" before anything is written; long values are cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from provisioner import auditchain
from provisioner.store import Store

SECRET_KEY = re.compile(r"pass|secret|token|key|credential|csrf", re.I)
REDACTED = "<redacted>"
MAX_VALUE = 200  # characters kept of one value
MAX_ITEMS = 50  # entries kept of one list or mapping
ACTOR_KINDS = ("token", "dashboard", "cli")


_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s/]*@", re.I)


def redact_url_passwords(text: str) -> str:
    """scheme://user:PASSWORD@host... with the password replaced (a database_url on a command line, a mirror URL)."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)


def redact(value: Any, key: str = "", depth: int = 0) -> Any:
    """`value` with every secret-looking field replaced and long values cut (a summary, never the secret)."""
    if key and SECRET_KEY.search(key) and value not in (None, "", False):
        return REDACTED
    if depth > 4:
        return "..."
    if isinstance(value, Mapping):
        return {str(k)[:64]: redact(v, str(k), depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    if isinstance(value, (list, tuple)):
        return [redact(v, key, depth + 1) for v in list(value)[:MAX_ITEMS]]
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = redact_url_passwords(str(value))
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + f"... ({len(text)} chars)"


def record(store: Store, *, actor: str, actor_kind: str, source: str, action: str, target: str = "",
           outcome: str = "ok", details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Append one audit row (details redacted); the row as written."""
    if actor_kind not in ACTOR_KINDS:
        raise ValueError(f"actor_kind must be one of {ACTOR_KINDS}")
    return store.add_audit(actor=actor, actor_kind=actor_kind, source=source, action=action, target=target,
                           outcome=outcome, details=redact(dict(details or {})))


@dataclass(frozen=True)
class Verdict:
    """The result of walking the chain: rows checked, the last hash (to note down elsewhere), the first break."""

    rows: int
    head: str
    broken_id: int | None = None
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_id is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "head": self.head, "broken_id": self.broken_id, "why": self.why}


def verify(store: Store) -> Verdict:
    """Recompute every row's hash in id order; the first row that does not link names the tampering."""
    prev, count = auditchain.GENESIS, 0
    for row in store.iter_audit():
        broken = auditchain.first_break([row], prev)
        if broken is not None:
            return Verdict(count, prev, broken[0], broken[1])
        prev, count = row["hash"], count + 1
    return Verdict(count, prev)
