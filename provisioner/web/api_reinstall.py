"""REST for the lab reinstall-and-join flow under /api/v1 (same bearer token and JSON errors as api.py).

POST checks everything and commits the flow (or resumes the host's flow in progress), then the server's flow
service (coordinator/service.py, set by `serve`) drives it on a background thread and the call answers 202 at
once; GET follows it (steps and progress lines). The root password goes in as a crypt(3) hash only (or comes from
the server's PROVISIONER_ROOT_PASSWORD_HASH) and never comes out: no response, event or progress line carries it.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify

from provisioner.config import secret_from_env
from provisioner.coordinator import pools as coord_pools
from provisioner.coordinator import reinstall as coord_reinstall
from provisioner.coordinator.reinstall_plan import ReinstallRefused
from provisioner.model import normalize_mac
from provisioner.store import NotFoundError
from provisioner.web import api
from provisioner.web.access import get_flows, get_store, json_error

bp = Blueprint("api_reinstall", __name__, url_prefix="/api/v1")
api.register_common_errors(bp)  # bearer token; 400/404/409; XapiUnreachable 502; SecretError 500
FIELDS = {"pool": str, "media": str, "confirm": str, "forget": bool, "root_password_hash": str, "host_url": str,
          "accept_data_loss": bool, "fix_before_join": bool}


@bp.errorhandler(ReinstallRefused)
def _refused(exc: ReinstallRefused):
    return json_error(409, "reinstall refused, nothing changed", problems=exc.problems, data_loss=exc.data_loss)


def _body() -> dict:
    return api.typed_body(FIELDS, ("pool", "media"))


@bp.post("/hosts/<mac>/reinstall")
def start_reinstall(mac: str):
    """Check, commit and drive a reinstall (202); refusals are 409 with every problem, nothing changed."""
    store, body = get_store(), _body()
    found = coord_reinstall.start(
        store, mac, body["pool"], body["media"], confirm=body.get("confirm"), forget=bool(body.get("forget")),
        root_password_hash=body.get("root_password_hash") or secret_from_env("PROVISIONER_ROOT_PASSWORD_HASH"),
        host_url=body.get("host_url"), connect=lambda name: coord_pools.connect(store, name),
        accept_data_loss=bool(body.get("accept_data_loss")), fix_before_join=bool(body.get("fix_before_join")))
    flows = get_flows()
    if flows is None:  # an app under another WSGI server: the committed flow waits for `serve`
        return json_error(503, "this server has no flow service: the reinstall is committed and the next "
                               "`provisioner serve` drives it", reinstall=found.as_dict())
    flows.drive_reinstall(found.id)  # one driver per flow: a flow driven here already is left to its thread
    return (jsonify(reinstall=found.as_dict(), data_lost=store.data_lost(found)), 202,
            {"Location": f"/api/v1/hosts/{found.mac}/reinstall"})


@bp.get("/hosts/<mac>/reinstall")
def show_reinstall(mac: str):
    """The host's reinstalls (newest first), the progress lines of the newest and the disks it wipes."""
    store = get_store()
    canonical = normalize_mac(mac)
    if store.get_host(canonical) is None:
        raise NotFoundError(f"no host with MAC {canonical} is registered")
    found = coord_reinstall.status(store, canonical)
    lines = [e["details"].get("line") for e in store.events(mac=canonical, kind="reinstall.progress")
             if found and e["details"].get("reinstall") == found[0].id]
    return jsonify(reinstalls=[r.as_dict() for r in found], progress=lines,
                   data_lost=store.data_lost(found[0]) if found else [])


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
