"""Named API tokens and their roles (issue 23, docs/audit.md "Tokens and roles"): who a bearer secret is, and what
that role may do. The one decision every door asks: the REST API, the dashboard, the HTTP body gate.

Roles: viewer = read only (GET/HEAD); operator = every action but the server's own access configuration (tokens,
webhooks); admin = everything. The configured `api_token` keeps working as an admin token named "config", so a
server set up before named tokens behaves as it did.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from provisioner.model import ValidationError
from provisioner.store import Store, now

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)
CONFIG_TOKEN = "config"  # the name of the configured api_token
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_ONLY = ("/api/v1/tokens", "/api/v1/webhooks", "/ui/tokens", "/ui/webhooks")  # the access configuration
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SECRET_PREFIX = "prov_"
TOUCH_SECONDS = 60  # last_used is written at most this often per token (not one write per API call)


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token name and its role."""

    name: str
    role: str


def digest(secret: str) -> str:
    """What the store keeps of a secret: its sha256, hex (the secrets are 256 random bits: no salt needed)."""
    return hashlib.sha256(secret.strip().encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ValidationError("a token name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter "
                              "or digit", "name")
    if name == CONFIG_TOKEN:
        raise ValidationError(f"{CONFIG_TOKEN!r} is the name of the configured api_token; choose another", "name")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", "role")
    return role


def add(store: Store, name: str, role: str) -> tuple[dict, str]:
    """Create a token; (its record, the secret). The secret is shown once: only its digest is stored."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    record = store.add_api_token(check_name(name), check_role(role), digest(secret))
    return record, secret


def listing(store: Store, config_token: str) -> list[dict]:
    """Every token, the configured one first (when set)."""
    rows = store.list_api_tokens()
    if config_token:
        rows.insert(0, {"name": CONFIG_TOKEN, "role": ADMIN, "created_at": None, "last_used": None,
                        "source": "config api_token"})
    return rows


def enabled(store: Store, config_token: str) -> bool:
    """Any token can log in (else the REST API and the dashboard are off)."""
    return bool(config_token) or bool(store.list_api_tokens())


def authenticate(store: Store, config_token: str, secret: str) -> Principal | None:
    """The principal a presented secret stands for, or None."""
    secret = (secret or "").strip()
    if not secret:
        return None
    if config_token and hmac.compare_digest(secret.encode("utf-8", "surrogatepass"), config_token.encode()):
        return Principal(CONFIG_TOKEN, ADMIN)
    row = store.find_api_token(digest(secret))  # an index lookup by digest: no timing leak about the secret
    if row is None:
        return None
    stamp = now()
    if not row["last_used"] or row["last_used"][:16] != stamp[:16]:  # at most once a minute
        try:
            store.touch_api_token(row["name"], stamp)
        except Exception:  # a busy database must not refuse a valid token; last_used is informative
            pass
    return Principal(row["name"], row["role"])


def refusal(principal: Principal, method: str, path: str) -> str | None:
    """Why `principal` may not make this request, or None when it may."""
    if method.upper() in READ_METHODS and principal.role in ROLES:
        return None
    if principal.role == VIEWER:
        return f"token {principal.name!r} has the viewer role: it may only read"
    if principal.role == OPERATOR and path.startswith(ADMIN_ONLY):
        return f"token {principal.name!r} has the operator role: tokens and webhooks need an admin token"
    if principal.role in (OPERATOR, ADMIN):
        return None
    return f"token {principal.name!r} has an unknown role {principal.role!r}"
