"""Imported update bundles over HTTP, like media trees (web/files.py serve_file: HEAD, Range, no listings):
/updates/NAME/bundle.xsbundle (the file a pool master takes at PUT /bundle) and /updates/NAME/repo/... (its
unpacked yum repository, a remote repository a pool can sync from). No token: pools fetch them as they are."""

from __future__ import annotations

from flask import Blueprint, Flask, Response

from provisioner.boot import urls
from provisioner.web.access import get_store, json_error
from provisioner.web.files import serve_file

bp = Blueprint("updates_files", __name__)
_METHODS = ["GET", "HEAD"]


@bp.route(f"{urls.UPDATES_PREFIX}/<name>/<path:relpath>", methods=_METHODS)
def updates_file(name: str, relpath: str) -> Response:
    record = get_store().get_update_repo(name)
    if record is None or record.kind != "bundle" or not record.path:
        return json_error(404, "not found")
    # only the bundle file and the repository tree: never the directory's other entries
    if relpath != urls.UPDATES_BUNDLE_FILE and not relpath.startswith(urls.UPDATES_REPO_DIR + "/"):
        return json_error(404, "not found")
    return serve_file(record.path, relpath, kind="updates", name=name)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
