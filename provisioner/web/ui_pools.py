"""Dashboard views of pools and runs: overview, one pool, start / abort / resume (with a confirmation step),
the media list, and the small JSON the pages poll for live progress. Views only translate."""

from __future__ import annotations

from flask import flash, jsonify, redirect, request, url_for

from provisioner.coordinator import report, runner, steps
from provisioner.coordinator.plan import make_plan
from provisioner.model import ValidationError
from provisioner.store import StoreError
from provisioner.web import ui_view
from provisioner.web.access import get_config, get_flows, get_store, json_error, running_run_ids
from provisioner.web.ui_base import bp, page
from provisioner.xapi import XapiError, XapiUnreachable

ACTIONS = ("start", "abort", "resume")
_ACTION_ERRORS = (StoreError, ValidationError, ValueError, XapiUnreachable, XapiError, OSError)


@bp.get("/")
def index():
    ids = running_run_ids()
    pools = [ui_view.pool_view(get_store(), name, ids) for name in ui_view.pool_names(get_store())]
    return page("pools.html", pools=pools, media=get_store().list_media(), service=get_flows() is not None)


@bp.get("/pools/<name>")
def pool(name: str):
    view = ui_view.pool_view(get_store(), name, running_run_ids(), history=10)
    if not view["registered"] and not view["hosts"] and not view["runs"]:
        return page("message.html", 404, title="Not found", message=f"no pool named {name!r}")
    current = view["runs"][0] if view["runs"] else None
    events = ui_view.run_events(get_store(), current["id"]) if current else []
    return page("pool.html", pool=view, run=current, events=events, media=get_store().list_media(),
                service=get_flows() is not None)


def _plan_or_error(name: str, media: str, consent: tuple[str, ...] = ()):
    """The prechecks a start would run (no side effect), or the reason they could not be read."""
    service = get_flows()
    try:
        driver = service.connect(get_store(), name)
    except _ACTION_ERRORS as exc:
        return None, ui_view.scrub(str(exc))
    try:
        plan = make_plan(get_store(), name, media, driver, config=get_config(), consent=consent)
        checks = [dict(c.as_dict(), message=ui_view.scrub(c.message), fix=ui_view.scrub(c.fix), blocking=plan.blocks(c))
                  for c in plan.checks]  # docs/prechecks.md
        return {"hosts": plan.hosts, "problems": [ui_view.scrub(p) for p in plan.problems], "checks": checks}, None
    except _ACTION_ERRORS as exc:
        return None, ui_view.scrub(f"could not read the pool: {exc}")
    finally:
        close = getattr(driver, "close", None)
        if close is not None:
            close()


@bp.get("/pools/<name>/confirm")
def confirm(name: str):
    """The confirmation step of start / abort / resume: what will happen, and one POST button."""
    action = request.args.get("action", "")
    if action not in ACTIONS:
        return page("message.html", 400, title="Unknown action", message=f"no action {action!r} on a pool")
    if action != "abort" and get_flows() is None:
        return page("message.html", 409, title="No run service",
                    message="This web process does not run upgrades: start and resume need `provisioner serve`.")
    media_name = request.args.get("media", "")
    context = {"pool": name, "action": action, "media": media_name, "plan": None, "error": None,
               "stop_on_failure": request.args.get("stop_on_failure") == "1",
               "consent": sorted({c.upper() for c in request.args.getlist("consent") if c})}  # docs/prechecks.md
    if action == "start":
        if get_store().get_media(media_name) is None:
            return page("message.html", 400, title="Pick the media", message=f"no media named {media_name!r}")
        context["plan"], context["error"] = _plan_or_error(name, media_name, tuple(context["consent"]))
    else:
        active = get_store().list_runs(name, active_only=True)
        if not active:
            return page("message.html", 409, title="Nothing to " + action, message=f"pool {name} has no run in progress")
        context["run"] = ui_view.run_view(report.run_report(get_store(), active[0].id), running_run_ids())
        context["destructive"] = [step.name for step in steps.TABLE if step.destructive]
    return page("confirm_run.html", **context)


@bp.post("/pools/<name>/<action>")
def act(name: str, action: str):
    if action not in ACTIONS:
        return page("message.html", 404, title="Not found", message=f"no action {action!r} on a pool")
    back = url_for("ui.pool", name=name)
    if request.form.get("confirmed") != "yes":  # only the confirmation page sends this
        return redirect(url_for("ui.confirm", name=name, action=action, media=request.form.get("media", "")), 303)
    service = get_flows()
    try:
        if action == "abort":
            run = service.abort(name) if service is not None else runner.request_abort(get_store(), name)
            flash(f"Abort requested for run {run.id}: it stops before its next destructive step.", "info")
        elif service is None:
            flash("This web process does not run upgrades: start and resume need `provisioner serve`.", "error")
        elif action == "start":
            run = service.start(name, request.form.get("media", ""),
                                stop_on_failure=request.form.get("stop_on_failure") == "1",
                                consent=tuple(c for c in request.form.getlist("consent") if c))
            flash(f"Run {run.id} started.", "info")
        else:
            run = service.resume(name)
            flash(f"Run {run.id} resumed from its last committed step.", "info")
    except _ACTION_ERRORS as exc:
        flash(ui_view.scrub(f"Could not {action} pool {name}: {exc}"), "error")
    return redirect(back, 303)


@bp.get("/status.json")
def status_json():
    """Live progress of every pool's newest run (what the pages poll)."""
    return jsonify(ui_view.status(get_store(), running_run_ids()))


@bp.get("/runs/<run_id>/events.json")
def run_events_json(run_id: str):
    """A run's events after event id `since` (the pool page appends them as they come)."""
    since = request.args.get("since", "0")
    if not since.isdigit():
        return json_error(400, "since: must be a non-negative integer")
    return jsonify(events=ui_view.run_events(get_store(), run_id, since=int(since), last=500))


@bp.get("/media")
def media():
    return page("media.html", media=get_store().list_media())
