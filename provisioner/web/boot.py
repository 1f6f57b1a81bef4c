"""Boot endpoints: media trees and boot files over HTTP, answer files, installer scripts, iPXE."""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("boot", __name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
