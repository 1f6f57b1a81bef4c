"""Store mixin: named API tokens (issue 23; provisioner/tokens.py decides roles, docs/audit.md).

Only the sha256 of each secret is stored: a copy of the database gives no working token. Every change writes a
token.* event in the same transaction.
"""

from __future__ import annotations

from typing import Any

from provisioner.store.base import ConflictError, NotFoundError, now
from provisioner.store.errors import INTEGRITY_ERRORS


class TokensMixin:
    """add_api_token / list_api_tokens / find_api_token / touch_api_token / remove_api_token."""

    def add_api_token(self, name: str, role: str, secret_sha256: str) -> dict[str, Any]:
        created = now()
        try:
            with self._tx() as conn:  # type: ignore[attr-defined]
                conn.execute("INSERT INTO api_tokens (name, role, secret_sha256, created_at) VALUES (?, ?, ?, ?)",
                             (name, role, secret_sha256, created))
                self._event(conn, "token.added", details={"name": name, "role": role})  # type: ignore
        except INTEGRITY_ERRORS:
            raise ConflictError(f"an API token named {name!r} exists: remove it first (tokens remove {name})") \
                from None
        return {"name": name, "role": role, "created_at": created, "last_used": None}

    def list_api_tokens(self) -> list[dict[str, Any]]:
        rows = self._connect().execute(  # type: ignore[attr-defined]
            "SELECT name, role, created_at, last_used FROM api_tokens ORDER BY name").fetchall()
        return [dict(r) for r in rows]

    def find_api_token(self, secret_sha256: str) -> dict[str, Any] | None:
        row = self._connect().execute(  # type: ignore[attr-defined]
            "SELECT name, role, created_at, last_used FROM api_tokens WHERE secret_sha256 = ?",
            (secret_sha256,)).fetchone()
        return dict(row) if row else None

    def touch_api_token(self, name: str, when: str | None = None) -> None:
        with self._tx() as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE api_tokens SET last_used = ? WHERE name = ?", (when or now(), name))

    def remove_api_token(self, name: str) -> None:
        with self._tx() as conn:  # type: ignore[attr-defined]
            if conn.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount == 0:
                raise NotFoundError(f"no API token named {name!r} (see: provisioner tokens list)")
            self._event(conn, "token.removed", details={"name": name})  # type: ignore[attr-defined]

    def api_token_digest(self, name: str) -> str | None:
        """The stored sha256 of token `name`'s secret (a dashboard session is tied to it), or None."""
        row = self._connect().execute(  # type: ignore[attr-defined]
            "SELECT secret_sha256 FROM api_tokens WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None
