"""What the web layer shares through the Flask app, behind one set of accessors (the Flask tutorial's get_db idea).

The views ask `get_store()`, `get_config()`, `get_flows()`, ... instead of reading `current_app.extensions` by
string key: the keys live only here. The app factory (app.py) calls `install()`; `serve` (runtime.py) adds the
services only a serving process has (the flow service, the event writer) with the setters. Each getter reads
the current app, or the `app` passed in where there is no request (the HTTP server's body gate, set-up code).
`json_error()` is the one shape of every JSON error answer: `{"error": message, ...}` with its status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from flask import Flask, Response, current_app, jsonify

from provisioner.config import Config
from provisioner.store import Store
from provisioner.web.throttle import Throttle

if TYPE_CHECKING:  # types only: importing the services here would load them for every view module
    from provisioner.coordinator.service import FlowService
    from provisioner.eventwriter import EventWriter
    from provisioner.metrics import Metrics

CONFIG = "PROVISIONER"  # app.config key
STORE = "provisioner.store"  # app.extensions keys from here on
FLOWS = "provisioner.flows"
EVENTS = "provisioner.events"
ON_FETCH = "provisioner.on_fetch"
METRICS = "provisioner.metrics"
THROTTLE = "provisioner.auth_throttle"

FetchCallback = Callable[..., None]  # on_fetch(kind=, name=, path=, client_ip=, bytes=): see files.py


def _app(app: Flask | None) -> Flask:
    return app if app is not None else current_app


def install(app: Flask, config: Config, store: Store) -> None:
    """Give a new app its configuration and store (create_app does, before any blueprint is registered)."""
    app.config[CONFIG] = config
    app.extensions[STORE] = store


def get_config(app: Flask | None = None) -> Config:
    return _app(app).config[CONFIG]


def set_config(app: Flask, config: Config) -> None:
    app.config[CONFIG] = config


def get_store(app: Flask | None = None) -> Store:
    return _app(app).extensions[STORE]


def get_flows(app: Flask | None = None) -> "FlowService | None":
    """The flow service of this process (set by `serve`), or None (an app under another WSGI server, a test)."""
    return _app(app).extensions.get(FLOWS)


def set_flows(app: Flask, flows: "FlowService") -> None:
    app.extensions[FLOWS] = flows


def running_run_ids(app: Flask | None = None) -> list[str]:
    """The ids of the runs this process drives now ([] without a flow service)."""
    flows = get_flows(app)
    return flows.running() if flows is not None else []


def get_events(app: Flask | None = None) -> "EventWriter | None":
    """The event writer of this process (set by `serve`), or None: boot views then read the store as it is."""
    return _app(app).extensions.get(EVENTS)


def set_events(app: Flask, events: "EventWriter") -> None:
    app.extensions[EVENTS] = events


def get_on_fetch(app: Flask | None = None) -> FetchCallback | None:
    """The callback told about each file answer (files.py), or None."""
    return _app(app).extensions.get(ON_FETCH)


def set_on_fetch(app: Flask, callback: FetchCallback | None) -> None:
    app.extensions[ON_FETCH] = callback


def get_metrics(app: Flask | None = None) -> "Metrics":
    return _app(app).extensions[METRICS]


def set_metrics(app: Flask, metrics: "Metrics") -> None:
    app.extensions[METRICS] = metrics


def get_throttle(app: Flask | None = None) -> Throttle:
    """The app's failed-authentication throttle (created with the defaults on first use; a test may set its own)."""
    return _app(app).extensions.setdefault(THROTTLE, Throttle())


def set_throttle(app: Flask, throttle: Throttle) -> None:
    app.extensions[THROTTLE] = throttle


def json_error(status: int, message: str, **extra: Any) -> Response:
    """The JSON error answer `{"error": message, **extra}` with `status` (callers may add headers to it)."""
    response = jsonify(error=message, **extra)
    response.status_code = status
    return response
