"""One audit row per operator action over HTTP (issue 23, docs/audit.md): every non-GET request under /api/ and
every dashboard POST, written once after the view (or the refusal) answered, whatever the view was.

Who: the principal the API's token check or the dashboard's session guard left in flask.g (else "anonymous");
from where: the client address; what: the endpoint, the method and path, the URL's arguments (the target), the
status, and a redacted summary of the body (JSON fields or form fields; a CSV upload by its size). 401 and 403
answers are audited as "refused". Hooking the app once, rather than each view, is what makes "every mutating call
leaves exactly one row" hold for views added later.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, request

from provisioner import audit, tokens
from provisioner.web.access import get_store

log = logging.getLogger(__name__)

AUDITED_PREFIXES = ("/api/", "/ui/")


def audited(method: str, path: str) -> bool:
    """Whether a request is an operator action to audit: anything but a read, under the API or the dashboard."""
    return method.upper() not in tokens.READ_METHODS and path.startswith(AUDITED_PREFIXES)


def outcome(status: int) -> str:
    if status in (401, 403):
        return "refused"
    return "ok" if status < 400 else "failed"


def _body_summary() -> dict[str, Any]:
    if request.form:
        return {"form": {k: request.form.getlist(k) if len(request.form.getlist(k)) > 1 else request.form[k]
                         for k in request.form}}
    body = request.get_json(silent=True, cache=True) if request.is_json else None
    if body is not None:
        return {"json": body}
    if request.content_length:
        return {"body_bytes": request.content_length, "content_type": request.content_type or ""}
    return {}


def _record(response: Response) -> Response:
    if not audited(request.method, request.path):
        return response
    principal = g.get("principal")
    actor = principal.name if principal else "anonymous"
    kind = "token" if request.path.startswith("/api/") else "dashboard"
    try:
        summary = _body_summary() if response.status_code not in (401, 413) else {}
    except Exception:  # an unreadable body: audit the request without it
        summary = {"body": "unreadable"}
    target = "/".join(str(v) for v in (request.view_args or {}).values())
    details = {"method": request.method, "path": request.path[:300], "status": response.status_code,
               "role": principal.role if principal else None, **summary}
    if response.status_code >= 400 and response.is_json:
        error = (response.get_json(silent=True) or {}).get("error")
        if error:
            details["error"] = str(error)[:300]
    try:
        audit.record(get_store(), actor=actor, actor_kind=kind, source=request.remote_addr or "?",
                     action=request.endpoint or "unrouted", target=target, outcome=outcome(response.status_code),
                     details=details)
    except Exception:  # the action already happened: say loudly that its record is missing, never hide the answer
        log.exception("could not write the audit row of %s %s by %s", request.method, request.path, actor)
    return response


def init_app(app: Flask) -> None:
    app.after_request(_record)
