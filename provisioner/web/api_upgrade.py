"""REST for pools and upgrade runs under /api/v1 (same bearer token and JSON errors as api.py).

Runs are driven by the server's FlowService (access.get_flows(), set by `serve`): a start returns
at once (202) and the run goes on in the server; GET /runs/<id> follows it. Pool passwords go in, never out.
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify, request

from provisioner.coordinator import carry as coord_carry
from provisioner.coordinator import plan as coord_plan
from provisioner.coordinator import pools as coord_pools
from provisioner.coordinator import runner as coord_runner
from provisioner.coordinator import wave_facts as coord_wave_facts
from provisioner.coordinator import waves as coord_waves
from provisioner.coordinator.service import RUN_OPTIONS, ProgressReader
from provisioner.model import ValidationError
from provisioner.web import api
from provisioner.web.access import get_config, get_flows, get_store, json_error, running_run_ids
from provisioner.xapi import XapiError

bp = Blueprint("api_upgrade", __name__, url_prefix="/api/v1")
api.register_common_errors(bp)  # bearer token; 400/404/409; XapiUnreachable 502; SecretError 500


@bp.errorhandler(XapiError)
def _xapi_failure(exc: XapiError):
    return json_error(502, f"XAPI refused: {' '.join(map(str, exc.details))}")


class NoRunService(RuntimeError):
    """The app runs without `serve`'s FlowService (e.g. under another WSGI server): it cannot drive runs."""


@bp.errorhandler(NoRunService)
def _no_service(exc: NoRunService):
    return json_error(503, str(exc))


def _runs():
    runs = get_flows()
    if runs is None:
        raise NoRunService("this server has no run service: upgrade runs are driven by `provisioner serve`")
    return runs


def _fields(body: dict, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    for name in required:
        if not isinstance(body.get(name), str) or not body[name]:
            raise ValidationError(f"{name} is required (a string)", name)
    return body


def _report(run_id: str, reader: ProgressReader | None = None) -> dict:
    """The run report with per-host elapsed / ETA seconds (progress.run_view) and whether this server drives it."""
    view = (reader or ProgressReader(get_store())).view(run_id)
    return {**view, "running_here": run_id in running_run_ids()}


@bp.get("/pools")
def list_pools():
    return jsonify(pools=[p.as_dict() for p in get_store().list_pools()])


@bp.post("/pools")
def add_pool():
    """An https pool needs "fingerprint" (a pinned SHA-256, e.g. from POST /pools/certificate after the operator
    compared it) or "ca_pem" (a CA's PEM text), docs/xapi.md "TLS"."""
    body = _fields(api.json_body(), {"name", "url", "username", "password", "fingerprint", "ca_pem"},
                   ("name", "url", "password"))
    trust = {"fingerprint": _opt(body, "fingerprint"), "ca_pem": _opt(body, "ca_pem")}
    coord_pools.check_url(body["url"])
    warnings = [w for w in (coord_pools.plain_http_warning(body["url"]),
                            coord_pools.check_certificate(body["url"], **trust)) if w]  # a refused one: 400
    record = coord_pools.add_pool(get_store(), body["name"], body["url"], body.get("username") or "root",
                                  body["password"], **trust)
    return jsonify(pool=record.as_dict(), warnings=warnings), 201, {"Location": f"/api/v1/pools/{record.name}"}


def _opt(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", name)
    return value or None


@bp.post("/pools/certificate")
def peek_certificate():
    """Trust-on-first-use over REST: the certificate an https URL presents (SHA-256 fingerprint, subject, names),
    read without sending anything; the client shows it, and on confirmation sends the fingerprint with POST /pools
    or POST /pools/<name>/trust."""
    body = _fields(api.json_body(), {"url"}, ("url",))
    coord_pools.check_url(body["url"])
    return jsonify(certificate=coord_pools.peek_certificate(body["url"]))


@bp.post("/pools/<name>/trust")
def trust_pool(name: str):
    """Change how the pool's certificate is trusted: exactly one of "fingerprint" or "ca_pem"."""
    body = _fields(api.json_body(), {"fingerprint", "ca_pem"})
    trust = {"fingerprint": _opt(body, "fingerprint"), "ca_pem": _opt(body, "ca_pem")}
    warnings = [w for w in (coord_pools.check_certificate(coord_pools.get_pool(get_store(), name).url, **trust),)
                if w]  # a certificate the new trust refuses: 400
    return jsonify(pool=coord_pools.set_trust(get_store(), name, **trust).as_dict(), warnings=warnings)


@bp.patch("/pools/<name>")
def update_pool(name: str):
    """The pool's settings that are not its connection: its hosts' default boot method."""
    body = _fields(api.json_body(), {"boot_method"}, ("boot_method",))
    return jsonify(pool=coord_pools.set_boot_method(get_store(), name, body["boot_method"]).as_dict())


@bp.post("/pools/<name>/discover")
def discover_pool(name: str):
    body = _fields(request.get_json(silent=True) or {}, {"firmware"})
    store = get_store()
    driver = coord_pools.connect(store, name)
    try:
        found = coord_pools.discover(store, name, driver, firmware=body.get("firmware") or "bios")
    finally:
        driver.close()
    return jsonify(discovery=found.as_dict())


@bp.get("/pools/<name>/plan")
def plan_pool(name: str):
    media = request.args.get("media")
    if not media:
        raise ValidationError("media is required (?media=NAME)", "media")
    options = {}
    for key in ("disable_ha_wlb", "migrate_back", "power_cycle", "stop_pinned_vms"):
        value = request.args.get(key, "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise ValidationError(f"{key} must be true or false", key)
        options[key] = value in ("true", "1")
    options["consent"] = tuple(c for c in request.args.getlist("consent") if c)
    options["updates"] = request.args.get("updates") or None
    waves = {key: request.args.get(key) or None for key in ("parallel", "max_failures", "group_tag_prefix")}
    _check_waves(waves)
    store = get_store()
    driver = coord_pools.connect(store, name)
    try:
        plan = coord_plan.make_plan(store, name, media, driver, config=get_config(), **options)
        found = coord_wave_facts.plan_of(plan, driver, waves["parallel"], waves["max_failures"],
                                         waves["group_tag_prefix"], disable_ha_wlb=options["disable_ha_wlb"])
        return jsonify(plan={**plan.as_dict(), **({"waves": found.as_dict()} if found else {})})
    finally:
        driver.close()


def _check_waves(options: dict) -> None:
    """parallel: N or "auto"; max_failures: K or "P%"; group_tag_prefix: a string (docs/waves.md)."""
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError(f"{key} must be a string or a number", key)
        try:
            if key == "parallel":
                coord_waves.parse_parallel(value)
            elif key == "max_failures":
                coord_waves.parse_max_failures(value, 1)
            elif not isinstance(value, str) or not value:
                raise ValueError("group_tag_prefix must be a non-empty tag prefix such as 'rack:'")
        except ValueError as exc:
            raise ValidationError(str(exc), key) from None


@bp.post("/pools/<name>/upgrade")
def start_upgrade(name: str):
    body = _fields(api.json_body(), {"media"} | RUN_OPTIONS, ("media",))
    options = {k: v for k, v in body.items() if k in RUN_OPTIONS}
    for key, value in options.items():
        if key == "consent":
            if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                raise ValidationError("consent must be a list of precheck codes", key)
            options[key] = tuple(value)
        elif key == "host_up_timeout":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 60 <= value <= 86_400:
                raise ValidationError("host_up_timeout must be a number of seconds from 60 to 86400", key)
            options[key] = float(value)
        elif key in ("parallel", "max_failures", "group_tag_prefix"):
            _check_waves({key: value})
        elif key == "updates":
            if value is not None and (not isinstance(value, str) or not value):
                raise ValidationError("updates must be the name of an update repository (`updates list`)", key)
        elif not isinstance(value, bool):
            raise ValidationError(f"{key} must be true or false", key)
    run = _runs().start(name, body["media"], **options)
    return jsonify(run=_report(run.id)), 202, {"Location": f"/api/v1/runs/{run.id}"}


@bp.post("/pools/<name>/upgrade/resume")
def resume_upgrade(name: str):
    run = _runs().resume(name)
    return jsonify(run=_report(run.id)), 202, {"Location": f"/api/v1/runs/{run.id}"}


@bp.post("/pools/<name>/upgrade/abort")
def abort_upgrade(name: str):
    run = coord_runner.request_abort(get_store(), name)  # whoever drives the run stops at its next step
    return jsonify(run=_report(run.id))


@bp.post("/pools/<name>/upgrade/mark-failed")
def mark_failed_upgrade(name: str):
    """The operator's decision: fail this host the run is waiting on (its installer past every timer)."""
    host = _fields(api.json_body(), {"host"}, ("host",))["host"]
    found = coord_runner.request_mark_failed(get_store(), name, host)  # the waiting step fails it at its next look
    return jsonify(run=_report(coord_runner.active_run(get_store(), name).id), host=found.name)


@bp.post("/pools/<name>/upgrade/restore-settings")
def restore_settings(name: str):
    """Put back now what ended runs left off (HA, WLB, VM auto_poweron); 409 while a run of the pool is active."""
    store = get_store()
    driver = coord_pools.connect(store, name)
    try:
        return jsonify(restore=coord_carry.restore(store, name, driver))
    finally:
        driver.close()


@bp.get("/runs")
def list_runs():
    reader = ProgressReader(get_store())
    return jsonify(runs=[_report(r.id, reader) for r in get_store().list_runs(request.args.get("pool"))])


@bp.get("/runs/<run_id>")
def show_run(run_id: str):
    return jsonify(run=_report(run_id))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
