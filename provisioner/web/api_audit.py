"""REST: the audit trail (GET /api/v1/audit, GET /api/v1/audit/verify; docs/audit.md). Read-only: any role."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify, request

from provisioner import audit
from provisioner.model import ValidationError
from provisioner.web import api
from provisioner.web.access import get_store

bp = Blueprint("api_audit", __name__, url_prefix="/api/v1")
api.register_common_errors(bp)
MAX_LIMIT = 1000


def _int_arg(name: str, default: int, high: int) -> int:
    raw = request.args.get(name, str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or int(raw) > high:
        raise ValidationError(f"must be an integer from 0 to {high}", name)
    return int(raw)


@bp.get("/audit")
def list_audit():
    """Rows after ?since= (an id), oldest first, at most ?limit= (1000); ?actor= one token name."""
    rows = get_store().audit_rows(since_id=_int_arg("since", 0, 10**18), limit=_int_arg("limit", MAX_LIMIT, MAX_LIMIT),
                                  actor=request.args.get("actor") or None)
    return jsonify(audit=rows)


@bp.get("/audit/verify")
def verify_audit():
    """The chain walked now: {ok, rows, head, broken_id, why}."""
    return jsonify(audit.verify(get_store()).as_dict())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
