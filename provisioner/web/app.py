"""create_app(): the Flask factory. Nothing here opens a socket, file or DB at import time."""

from __future__ import annotations

from flask import Flask, request

from provisioner.boot import attempts, downloads
from provisioner.config import Config, load_config
from provisioner.store import Store
from provisioner.web import access


def create_app(config: Config | None = None, store: Store | None = None) -> Flask:
    """Build the WSGI app for `config` (loaded from the usual sources when None)."""
    config = config or load_config()
    app = Flask("provisioner", static_folder=None)
    store = store or Store.from_config(config)
    access.install(app, config, store)
    app.json.sort_keys = False

    from provisioner.web import api, api_upgrade, boot, files

    watch = downloads.Downloads(store)

    def on_fetch(*, kind: str, name: str, path: str, client_ip, bytes: int) -> None:
        if kind != "media":
            return
        # kernel / install.img fetches join their attempt's timeline; a host-plugin host has no attempt: its
        # downloads are recorded per host and kind of file (boot/downloads.py)
        if attempts.record_file_fetch(store, path=path, client_ip=client_ip, media=name, bytes=bytes) is None:
            watch.record(path=path, client_ip=client_ip, media=name, bytes=bytes)

    access.set_on_fetch(app, on_fetch)

    api.init_app(app)
    api_upgrade.init_app(app)
    from provisioner.web import api_reinstall  # POST/GET /api/v1/hosts/<mac>/reinstall
    api_reinstall.init_app(app)
    boot.init_app(app)
    files.init_app(app)
    from provisioner.web import api_updates, updates_files  # update repositories: REST, and their files
    api_updates.init_app(app)
    updates_files.init_app(app)
    from provisioner.web import metrics, openapi  # /metrics (and request counting), /api/v1/openapi.json
    metrics.init_app(app)
    openapi.init_app(app)
    from provisioner.web import ui  # the dashboard under /ui/
    ui.init_app(app)
    from provisioner.web import api_audit, audit_hook  # GET /api/v1/audit; one audit row per action
    api_audit.init_app(app)
    audit_hook.init_app(app)

    @app.errorhandler(404)
    def _not_found(_exc):
        if not request.path.startswith("/api/"):  # firmware asking for something we do not serve
            access.get_store().add_event("http.not_found", details={
                "path": request.path[:200], "client": request.remote_addr})
        return access.json_error(404, "not found")

    @app.errorhandler(405)
    def _not_allowed(_exc):
        return access.json_error(405, "method not allowed")

    return app
