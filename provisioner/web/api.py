"""REST API under /api/v1 (bearer token). Views only translate HTTP <-> service calls."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, g, jsonify, request

from provisioner import registry, sites, tokens
from provisioner.boot import attempts
from provisioner import credentials
from provisioner.model import ValidationError, normalize_mac
from provisioner.store import ConflictError, NotFoundError
from provisioner.web.access import get_config, get_store, get_throttle, json_error
from provisioner.xapi import CertificateRefused, XapiUnreachable

bp = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_JSON_DEPTH = 16  # our deepest body is 2 levels (a host record); this bounds the checker, not the decoder
MAX_WINDOW_SECONDS = 30 * 24 * 3600  # an arming window longer than a month is a typo


@bp.before_request
def _require_token():
    """Every API call needs `Authorization: Bearer <token>`: the configured api_token (admin "config") or a named
    token (provisioner/tokens.py), whose role must allow the request (403 otherwise); boot endpoints use
    per-attempt tokens instead. Too many wrong tokens from one address: 429 for a while (throttle.py). The
    principal is left in flask.g.principal for the audit hook (web/audit_hook.py)."""
    config, store = get_config(), get_store()
    if not tokens.enabled(store, config.api_token):
        return json_error(401, "the REST API is disabled: set api_token in the server configuration or add a "
                               "token (provisioner tokens add NAME --role ROLE)")
    guard, client = get_throttle(), request.remote_addr or "?"
    wait = guard.retry_after(client)
    if wait:
        response = json_error(429, f"too many failed authentications from {client}: retry in {wait:.0f} s")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    principal = tokens.authenticate(store, config.api_token, given) if scheme.lower() == "bearer" else None
    if principal is None:
        if guard.failed(client):
            store.add_event("auth.throttled", details={"client": client, "via": "api"})
        response = json_error(401, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="provisioner"'
        return response
    guard.succeeded(client)
    g.principal = principal
    why = tokens.refusal(principal, request.method, request.path)
    if why:
        return json_error(403, why, role=principal.role)
    return None


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError):
    return json_error(400, str(exc), field=exc.field)


@bp.errorhandler(UnicodeEncodeError)
def _not_unicode(exc: UnicodeEncodeError):
    """Safety net: text that cannot be stored (a lone surrogate) reached the store through a path
    json_body() did not check; a client error, not a 500."""
    return json_error(400, "the request carries text that is not valid Unicode (a lone surrogate)")


@bp.errorhandler(RecursionError)
def _too_deep(exc: RecursionError):
    return json_error(400, "the request body is nested too deeply")


@bp.errorhandler(ConflictError)
def _conflict(exc: ConflictError):
    return json_error(409, str(exc))


@bp.errorhandler(NotFoundError)
def _missing(exc: NotFoundError):
    return json_error(404, str(exc))


@bp.errorhandler(registry.ImportRejected)
def _rejected(exc: registry.ImportRejected):
    return json_error(422, "nothing imported: the CSV has bad rows", problems=exc.as_list())


def _unreachable(exc: XapiUnreachable):
    if isinstance(exc, CertificateRefused):  # it answered, with a certificate that is not trusted
        return json_error(502, f"the pool's certificate was refused: {exc}")
    return json_error(502, f"a pool did not answer: {exc}")


def _secret(exc: credentials.SecretError):
    return json_error(500, str(exc))


def register_common_errors(other: Blueprint) -> None:
    """Give another /api/v1 blueprint this one's bearer token check and JSON errors (400, 404, 409; 400 for
    text that is not Unicode or nesting too deep), plus
    502 when a pool does not answer and 500 when a stored secret cannot be read."""
    other.before_request(_require_token)
    for error, handler in ((ValidationError, _invalid), (ConflictError, _conflict), (NotFoundError, _missing),
                           (XapiUnreachable, _unreachable), (credentials.SecretError, _secret),
                           (UnicodeEncodeError, _not_unicode), (RecursionError, _too_deep)):
        other.register_error_handler(error, handler)


def json_body() -> dict:
    """The request's JSON object, or a ValidationError (400) naming what is wrong with it, never a 500."""
    if not request.is_json:
        raise ValidationError("the request body must be a JSON object (Content-Type: application/json)")
    try:
        body = json.loads(request.get_data(cache=True))
    except RecursionError:  # Python's decoder recurses once per level: ~1,000 levels exhaust the stack
        raise ValidationError(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise ValidationError(f"the request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object (Content-Type: application/json)")
    for key, value in body.items():
        field = key.encode("ascii", "backslashreplace").decode()[:64]  # printable even if the key is bad
        _check_json(key, field, 1)
        _check_json(value, field, 1)
    return body


def typed_body(fields: dict[str, type], required: tuple[str, ...] = ()) -> dict:
    """json_body() with only `fields` (name -> accepted type; None always accepted) and `required` non-empty: a
    ValidationError (400) naming the field otherwise."""
    body = json_body()
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(fields)})")
    for key, kind in fields.items():
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise ValidationError(f"must be a {kind.__name__}", key)
    for key in required:
        if not body.get(key):
            raise ValidationError("is required", key)
    return body


def _check_json(value: Any, field: str, depth: int) -> None:
    """Refuse what JSON allows but nothing here can store: lone surrogates ("\\ud800": SQLite and UTF-8
    cannot encode them) and absurd nesting; the error names the top-level field it is under."""
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if level > MAX_JSON_DEPTH:
            raise ValidationError(f"nested deeper than {MAX_JSON_DEPTH} levels", field)
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValidationError("contains a lone surrogate (\\ud800-\\udfff): not valid Unicode text",
                                      field) from None
        elif isinstance(item, dict):
            stack.extend((v, level + 1) for pair in item.items() for v in pair)
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)


@bp.get("/hosts")
def list_hosts():
    return jsonify(hosts=[h.as_dict() for h in get_store().list_hosts(pool=request.args.get("pool"))])


@bp.post("/hosts")
def add_host():
    host = registry.add_host(get_store(), json_body(), site=get_config().site)
    warning = registry.site_warning(get_store(), host.site)
    return (jsonify(host=host.as_dict(), **({"warnings": [warning]} if warning else {})), 201,
            {"Location": f"/api/v1/hosts/{host.mac}"})


@bp.get("/hosts/<mac>")
def show_host(mac: str):
    return jsonify(host=registry.get_host(get_store(), mac).as_dict())


@bp.patch("/hosts/<mac>")
def update_host(mac: str):
    host = registry.update_host(get_store(), mac, json_body())
    warning = registry.site_warning(get_store(), host.site)
    return jsonify(host=host.as_dict(), **({"warnings": [warning]} if warning else {}))


@bp.delete("/hosts/<mac>")
def remove_host(mac: str):
    return jsonify(removed=registry.remove_host(get_store(), mac).as_dict())


@bp.post("/hosts/<mac>/arm")
def arm_host(mac: str):
    body = json_body()
    unknown = sorted(set(body) - {"media", "window_seconds"})
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)} (known: media, window_seconds)")
    attempt = attempts.arm(get_store(), get_config(), mac, body.get("media"),
                           window_seconds=_window_seconds(body.get("window_seconds")))
    return jsonify(attempt=attempt.as_dict()), 201


def _window_seconds(value: Any) -> int | None:
    """window_seconds: absent/null, or a whole number of seconds 1..MAX_WINDOW_SECONDS (JSON true is not 1,
    1e20 is not a window: both used to be accepted or to fail with a 500)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"must be a whole number of seconds, got {json.dumps(value)[:40]}", "window_seconds")
    if not 1 <= value <= MAX_WINDOW_SECONDS:
        raise ValidationError(f"must be between 1 and {MAX_WINDOW_SECONDS} seconds, got {value}", "window_seconds")
    return value


@bp.post("/hosts/<mac>/disarm")
def disarm_host(mac: str):
    return jsonify(disarmed=[a.as_dict() for a in attempts.disarm(get_store(), mac, reason="api")])


@bp.get("/hosts/<mac>/attempts")
def host_attempts(mac: str):
    host = registry.get_host(get_store(), mac)
    return jsonify(attempts=[a.as_dict() for a in get_store().list_attempts(host.mac)])


@bp.post("/hosts/import")
def import_hosts():
    limit = get_config().http_max_body_bytes  # the server refuses bigger bodies unread
    if (request.content_length or 0) > limit:
        return json_error(413, f"CSV larger than {limit} bytes (http_max_body_bytes)")
    try:
        text = request.get_data(cache=False).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("the CSV body must be UTF-8 text") from None
    hosts = registry.import_csv(get_store(), text, source="api", site=get_config().site)
    return jsonify(imported=len(hosts), hosts=[h.as_dict() for h in hosts]), 201


@bp.get("/media")
def list_media():
    store = get_store()
    return jsonify(media=[{**m.as_dict(), "sites": sites.media_availability(store, m.name)}
                          for m in store.list_media()])


@bp.get("/events")
def list_events():
    mac = request.args.get("mac")
    since = request.args.get("since", "0")
    if not (since.isascii() and since.isdigit() and len(since) <= 18):  # "²" is a digit; SQLite has 64 bits
        raise ValidationError("must be a non-negative integer below 10^18", "since")
    events = get_store().events(mac=normalize_mac(mac) if mac else None, since_id=int(since))
    return jsonify(events=events)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
