"""The dashboard's blueprint and its guards: login with an API token, a signed session cookie, CSRF, headers.

Login is per token name (provisioner/tokens.py): the configured api_token logs in as "config" (admin), a named
token as its name with its role; a viewer session may look but every form it posts is refused (403, audited).
The session is Flask's signed cookie. It holds no secret: only the token's name and an HMAC of the token's digest
(so changing or removing the token logs its sessions out), the CSRF token and flash messages. Its key is
app.secret_key when one is configured, else a random key generated on first use into <data_dir>/ui-secret-key
(mode 0600) and kept across restarts.

CSRF: every POST under /ui must carry the session's random token in the form field `csrf_token` (or the
X-CSRF-Token header), compared in constant time. That is the synchronizer-token pattern Flask-WTF implements;
written here in a few lines because the forms are plain HTML and WTForms would add two dependencies for it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from flask import (Blueprint, Flask, Request, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from flask.sessions import SecureCookieSessionInterface

from provisioner import tokens
from provisioner.store import NotFoundError, Store
from provisioner.web import ui_view
from provisioner.web.access import get_config, get_store, get_throttle, json_error

log = logging.getLogger(__name__)

bp = Blueprint("ui", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")
SECRET_FILE = "ui-secret-key"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PUBLIC_ENDPOINTS = ("ui.login", "ui.static")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def load_or_create_secret(path: Path) -> bytes:
    """The key in `path`, or a new random one written there 0600 (atomically: two processes agree on one key)."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode() + b"\n")
        try:
            os.link(tmp, path)  # fails if another process won the race: then its key is the one
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        key = path.read_bytes().strip()
    if path.stat().st_mode & 0o077:
        log.warning("%s was readable by others; its mode is now 0600", path)
        os.chmod(path, 0o600)
    if len(key) < 32:
        raise RuntimeError(f"{path} holds no usable session key (delete it and a new one is generated)")
    return key


class UiSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only for /ui requests, its key loaded on first use."""

    def __init__(self, key_path: Path):
        self.key_path = key_path
        self._lock = threading.Lock()

    def get_signing_serializer(self, app: Flask):
        if not app.secret_key:
            with self._lock:
                if not app.secret_key:
                    app.secret_key = load_or_create_secret(self.key_path)
        return super().get_signing_serializer(app)

    def open_session(self, app: Flask, request: Request):
        if request.path != bp.url_prefix and not request.path.startswith(bp.url_prefix + "/"):
            return None  # boot, file and API requests have no session (Flask gives them a NullSession)
        return super().open_session(app, request)


# --- helpers the views share ---


def page(template: str, status: int = 200, **context: Any):
    return render_template(f"ui/{template}", **context), status


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def login_fingerprint(name: str, secret_digest: str) -> str:
    """What a logged-in session holds: an HMAC of the token's name and digest under the session key."""
    key = current_app.secret_key
    key = key.encode() if isinstance(key, str) else key
    return hmac.new(key, b"ui-login\0" + name.encode() + b"\0" + secret_digest.encode(), hashlib.sha256).hexdigest()


def _token_digest(store: Store, config_token: str, name: str) -> str | None:
    if name == tokens.CONFIG_TOKEN:
        return tokens.digest(config_token) if config_token else None
    return store.api_token_digest(name)


def session_principal(data: Any, store: Store, config_token: str) -> tokens.Principal | None:
    """Who a session's data (a dict) is logged in as, or None: expired, or its token changed or removed.
    Needs the app context (the session key); gate.py asks it too, at header time."""
    if not isinstance(data, dict) or not time.time() < data.get("until", 0):
        return None
    name, given = data.get("who"), data.get("auth")
    if not isinstance(name, str) or not isinstance(given, str):
        return None
    secret_digest = _token_digest(store, config_token, name)
    if not secret_digest or not hmac.compare_digest(given, login_fingerprint(name, secret_digest)):
        return None
    if name == tokens.CONFIG_TOKEN:
        return tokens.Principal(name, tokens.ADMIN)
    row = next((r for r in store.list_api_tokens() if r["name"] == name), None)
    return tokens.Principal(name, row["role"]) if row else None


def current_user() -> tokens.Principal | None:
    """The logged-in principal of this request (cached in flask.g), or None."""
    if "ui_user" not in g:
        g.ui_user = session_principal(dict(session), get_store(), get_config().api_token)
    return g.ui_user


def logged_in() -> bool:
    return current_user() is not None


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard (no scheme, no //host): a login link must not redirect elsewhere."""
    if target and target.startswith(bp.url_prefix) and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("ui.index")


def _wants_json() -> bool:
    return request.path.endswith(".json") or request.accept_mimetypes.best == "application/json"


@bp.before_request
def _guard():
    if request.endpoint in PUBLIC_ENDPOINTS and request.endpoint != "ui.login":
        return None
    if request.endpoint != "ui.login" and not logged_in():
        if _wants_json():
            return json_error(401, "log in first")
        return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
    user = current_user()
    if user is not None:
        g.principal = user  # for the audit hook (web/audit_hook.py)
    if request.method not in SAFE_METHODS:
        given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
        expected = session.get("csrf")
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return page("message.html", 400, title="Form refused",
                        message="This form did not carry this dashboard's security token (it may be from an "
                                "old page, another site, or a session that ended). Reload the page and try again.")
        why = tokens.refusal(user, request.method, request.path) if user and request.endpoint not in (
            "ui.login", "ui.logout") else None
        if why:
            return page("message.html", 403, title="Not allowed", message=why + ".")
    return None


@bp.after_request
def _headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _template_helpers() -> dict[str, Any]:
    return {"csrf_token": csrf_token, "logged_in": logged_in, "current_user": current_user, "when": ui_view.when}


@bp.errorhandler(NotFoundError)
def _missing(exc: NotFoundError):
    return page("message.html", 404, title="Not found", message=str(exc))


# --- login / logout ---


@bp.route("/login", methods=["GET", "POST"])
def login():
    config, store = get_config(), get_store()
    target = _safe_next(request.values.get("next"))
    if not tokens.enabled(store, config.api_token):
        return page("login.html", 503, disabled=True, next=target)
    if request.method == "GET":
        return page("login.html", next=target)
    given = request.form.get("token", "")
    client = request.remote_addr or "?"
    guard = get_throttle()
    wait = guard.retry_after(client)
    if wait:
        when = f"{wait / 60:.0f} min" if wait >= 90 else f"{wait:.0f} s"
        body, status = page("login.html", 429, error=f"Too many failed logins from {client}: try again in {when}.",
                            next=target)
        return body, status, {"Retry-After": str(int(wait) + 1)}
    user = tokens.authenticate(store, config.api_token, given)
    if user is None:
        store.add_event("ui.login_failed", details={"client": client})
        if guard.failed(client):
            store.add_event("auth.throttled", details={"client": client, "via": "ui"})
        return page("login.html", 401, error="That is not the API token of this server, nor one of its named tokens.", next=target)
    guard.succeeded(client)
    g.principal = user  # the audit row of this login names who logged in
    session.clear()  # a new session on login: nothing from before it (session fixation) survives
    session["who"] = user.name
    session["auth"] = login_fingerprint(user.name, _token_digest(store, config.api_token, user.name) or "")
    session["until"] = int(time.time()) + SESSION_SECONDS
    session["csrf"] = secrets.token_urlsafe(32)
    store.add_event("ui.login", details={"client": client, "token": user.name})
    return redirect(target, 303)


@bp.post("/logout")
def logout():
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("ui.login"), 303)


def init_session(app: Flask) -> None:
    """Use the dashboard's session interface and cookie settings (the only user of sessions in this app)."""
    config = get_config(app)
    app.session_interface = UiSessionInterface(Path(config.data_dir) / SECRET_FILE)
    app.config.update(SESSION_COOKIE_NAME="provisioner_ui", SESSION_COOKIE_PATH=bp.url_prefix,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      PERMANENT_SESSION_LIFETIME=SESSION_SECONDS)
