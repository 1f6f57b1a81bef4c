"""Which requests may send a body, decided from the headers alone, before the server buffers one byte of it.

The HTTP server (provisioner.web.server) asks this at header time. An unauthenticated 1,000 MB POST used to
be spooled to disk (996 MB in the temporary directory) before the API's 401 (issue 15, finding 6). Rules:
- /api/...: a body needs the right `Authorization: Bearer` token. Without it the body is dropped unread and the
  API answers its own 401 (so the failed-authentication throttle still counts it: a header-time 401 would
  let anyone test tokens unthrottled).
- /ui/...: a form of up to UI_SMALL_BODY bytes (the login form, every dashboard form) is read into memory
  (waitress spools only past 512 KB); a bigger one (the CSV upload) needs a logged-in dashboard session,
  else it is dropped and the dashboard answers as for any request without a session.
- Everything else (boot, files, metrics) takes no body: 413. A chunked body is accepted only where it is
  authenticated (its size is unknown until read): 411 elsewhere.
The size cap (http_max_body_bytes) is applied by the server to every admitted body.
"""

from __future__ import annotations

from typing import Callable, Mapping

from flask import Flask
from itsdangerous import BadSignature
from werkzeug.http import parse_cookie

from provisioner.web import ui_base
from provisioner import tokens
from provisioner.web.access import get_config, get_store
from provisioner.web.httpguard import DROP_BODY, Limits, Verdict

API_PREFIX = "/api/"
UI_PREFIX = ui_base.bp.url_prefix + "/"
UI_SMALL_BODY = 64 * 1024


def body_gate(app: Flask) -> Callable[[str, str, Mapping[str, str], "int | None"], Verdict]:
    """The gate for `app`: gate(method, path, headers, length or None if chunked) -> None | DROP_BODY | (status,
    message). `headers` as waitress parses them (upper case, '-' as '_')."""
    token = get_config(app).api_token
    store = get_store(app)

    def bearer_ok(headers: Mapping[str, str]) -> bool:
        """The configured api_token or any named token (tokens.py); the role is checked by the API itself."""
        scheme, _, given = headers.get("AUTHORIZATION", "").partition(" ")
        return scheme.lower() == "bearer" and tokens.authenticate(store, token, given) is not None

    def session_ok(headers: Mapping[str, str]) -> bool:
        cookie = parse_cookie(headers.get("COOKIE", "")).get(app.config.get("SESSION_COOKIE_NAME", ""), "")
        if not cookie:
            return False
        with app.app_context():  # the session key and the login fingerprint are the app's
            serializer = app.session_interface.get_signing_serializer(app)
            try:
                data = serializer.loads(cookie, max_age=ui_base.SESSION_SECONDS)
            except BadSignature:
                return False
            return ui_base.session_principal(data, store, token) is not None

    def gate(method: str, path: str, headers: Mapping[str, str], length: int | None) -> Verdict:
        if path.startswith(API_PREFIX):
            return None if bearer_ok(headers) else DROP_BODY
        if path.startswith(UI_PREFIX):
            if length is not None and length <= UI_SMALL_BODY:
                return None
            return None if session_ok(headers) else DROP_BODY
        if length is None:
            return 411, "a chunked request body is not accepted here"
        return 413, "this URL takes no request body"

    return gate


def http_limits(app: Flask) -> Limits:
    """The HTTP server's limits for `app` from its config (http_max_connections_per_client, ...), with its gate."""
    config = get_config(app)
    return Limits(max_per_client=config.http_max_connections_per_client, header_timeout=config.http_header_timeout,
                  max_body=config.http_max_body_bytes, gate=body_gate(app))
