"""The web dashboard under /ui/ (server-rendered Jinja templates through Flask, a few lines of vanilla JS).

Pages: pools with their runs' live progress and start / abort / resume (each with a confirmation step), the host
registry (add, edit, remove, all-or-nothing CSV import with every bad line shown), one host's attempts and
timeline, and the media. Login with the API token; see ui_base for the session, CSRF and headers.
"""

from __future__ import annotations

from flask import Flask, redirect


def init_app(app: Flask) -> None:
    from provisioner.web import ui_hosts, ui_pools  # noqa: F401  (their views attach to the blueprint)
    from provisioner.web import ui_audit  # noqa: F401  (the audit trail page)
    from provisioner.web.ui_base import bp, init_session

    init_session(app)
    app.register_blueprint(bp)
    app.add_url_rule("/", "dashboard_root", lambda: redirect("/ui/", 302))
