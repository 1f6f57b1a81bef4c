"""GET /metrics (Prometheus text format) and the HTTP instrumentation that feeds it.

/metrics needs no token, like most exporters: it holds only aggregate counts whose labels are bounded
(fetch kind, method, status, outcome, state, step, XAPI error code), never a MAC, a token, a URL or a
password. Expose the HTTP port to the scraper's network only, as for the boot endpoints. Every request
(boot files, API, dashboard, /metrics itself) is counted once it has its answer.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from provisioner.metrics import Metrics, http_kind
from provisioner.web import access


def _start() -> None:
    g.metrics_started = time.perf_counter()


def _finish(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    seconds = time.perf_counter() - started if started is not None else 0.0
    nbytes = 0 if request.method == "HEAD" else (response.content_length or 0)
    access.get_metrics().observe_http(http_kind(request.path), request.method, response.status_code, nbytes,
                                      seconds)
    return response


def metrics_view() -> Response:
    body, content_type = access.get_metrics().render()
    return Response(body, mimetype=None, content_type=content_type, headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    """Create the app's metrics registry over its store, instrument every request, serve /metrics."""
    access.set_metrics(app, Metrics(access.get_store(app)))
    app.before_request(_start)
    app.after_request(_finish)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
