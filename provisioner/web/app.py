"""create_app(): the Flask factory. Nothing here opens a socket, file or DB at import time."""

from __future__ import annotations

from flask import Flask, jsonify, request

from provisioner.boot import attempts
from provisioner.config import Config, load_config
from provisioner.store import Store


def create_app(config: Config | None = None, store: Store | None = None) -> Flask:
    """Build the WSGI app for `config` (loaded from the usual sources when None)."""
    config = config or load_config()
    app = Flask("provisioner", static_folder=None)
    app.config["PROVISIONER"] = config
    app.extensions["provisioner.store"] = store or Store(config.db_path)
    app.json.sort_keys = False

    from provisioner.web import api, api_upgrade, boot, files

    store = app.extensions["provisioner.store"]

    def on_fetch(*, kind: str, name: str, path: str, client_ip, bytes: int) -> None:
        if kind == "media":  # kernel / install.img fetches join their attempt's timeline
            attempts.record_file_fetch(store, path=path, client_ip=client_ip, media=name, bytes=bytes)

    app.extensions.setdefault("provisioner.on_fetch", on_fetch)

    api.init_app(app)
    api_upgrade.init_app(app)
    from provisioner.web import api_reinstall  # POST/GET /api/v1/hosts/<mac>/reinstall
    api_reinstall.init_app(app)
    boot.init_app(app)
    files.init_app(app)
    from provisioner.web import metrics, openapi  # /metrics (and request counting), /api/v1/openapi.json
    metrics.init_app(app)
    openapi.init_app(app)
    from provisioner.web import ui  # the dashboard under /ui/
    ui.init_app(app)

    @app.errorhandler(404)
    def _not_found(_exc):
        if not request.path.startswith("/api/"):  # firmware asking for something we do not serve
            get_store(app).add_event("http.not_found", details={
                "path": request.path[:200], "client": request.remote_addr})
        return jsonify(error="not found"), 404

    @app.errorhandler(405)
    def _not_allowed(_exc):
        return jsonify(error="method not allowed"), 405

    return app


def get_store(app: Flask) -> Store:
    return app.extensions["provisioner.store"]
