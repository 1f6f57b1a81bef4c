"""REST for update repositories under /api/v1 (same bearer token and JSON errors as api.py; docs/updates.md).

POST takes what `updates add` takes: `source` is a bundle's path ON THE SERVER (bundles are up to 1 GiB, more than
a request body may be) or a mirror URL. A refused bundle or mirror is a 422 naming the problem; nothing is kept.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify

from provisioner import updates
from provisioner.web import api
from provisioner.web.access import get_config, get_store, json_error

bp = Blueprint("api_updates", __name__, url_prefix="/api/v1")
api.register_common_errors(bp)  # bearer token; 400/404/409
FIELDS = {"name": str, "source": str, "product_version": str, "allow_unsigned": bool, "check": bool}
REFUSED = (updates.BundleError, updates.MirrorError, updates.ProductMismatch, updates.Unsigned, updates.RepoError)


def _refused(exc: ValueError):
    return json_error(422, f"nothing imported: {exc}")


for _error in REFUSED:
    bp.register_error_handler(_error, _refused)


def _body() -> dict:
    return api.typed_body(FIELDS, ("name", "source"))


@bp.get("/updates")
def list_updates():
    config = get_config()
    return jsonify(updates=[updates.describe(config, r) for r in get_store().list_update_repos()])


@bp.post("/updates")
def add_updates():
    body = _body()
    added = updates.add(get_store(), get_config(), body["name"], body["source"],
                        product_version=body.get("product_version"), allow_unsigned=bool(body.get("allow_unsigned")),
                        check=body.get("check") is not False)
    return (jsonify(updates=updates.describe(get_config(), added)), 201,
            {"Location": f"/api/v1/updates/{added.name}"})


@bp.get("/updates/<name>")
def show_updates(name: str):
    return jsonify(updates=updates.describe(get_config(), updates.get(get_store(), name)))


@bp.delete("/updates/<name>")
def remove_updates(name: str):
    return jsonify(removed=updates.remove(get_store(), get_config(), name).as_dict())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
