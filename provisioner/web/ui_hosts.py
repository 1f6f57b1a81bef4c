"""Dashboard views of the host registry (add, edit, remove, CSV import) and of one host (attempts, timeline).
Views only translate; the rules are registry.py's, so the form refuses exactly what the CLI and the API refuse."""

from __future__ import annotations

from flask import flash, jsonify, redirect, request, url_for

from provisioner import registry
from provisioner.model import (BMC_KINDS, BOOT_METHODS, FIRMWARES, HOST_FIELDS, ValidationError, disk_warning,
                               normalize_mac)
from provisioner.store import ConflictError, NotFoundError
from provisioner.web import ui_view
from provisioner.web.access import get_config, get_store, json_error
from provisioner.web.ui_base import bp, page

MAX_IMPORT_BYTES = 5 * 1024 * 1024


def _form_values() -> dict[str, str]:
    """The host fields of the form (never the BMC password: _form_password)."""
    # a form without a site field (an older page) leaves the host's site as it is
    return {f: request.form.get(f, "") for f in HOST_FIELDS if f != "site" or f in request.form}


def _form_password() -> dict[str, str]:
    """The BMC password field: blank keeps the stored one (the form never shows it)."""
    given = request.form.get(registry.PASSWORD_FIELD, "")
    return {registry.PASSWORD_FIELD: given} if given else {}


def _hosts_page(status: int = 200, *, problems=None, import_error=None):
    hosts = get_store().list_hosts(pool=request.args.get("pool") or None)
    return page("hosts.html", status, hosts=hosts, problems=problems, import_error=import_error,
                pool_filter=request.args.get("pool", ""))


def _form_page(status: int, *, mode: str, values: dict, mac: str | None = None, errors=None):
    return page("host_form.html", status, mode=mode, values=values, mac=mac, errors=errors or {},
                firmwares=FIRMWARES, boot_methods=BOOT_METHODS, bmc_kinds=BMC_KINDS,
                password_set=bool(mac and (found := get_store().get_host(mac)) and found.bmc_password_set))


def _errors_of(exc: Exception) -> dict[str, str]:
    """Field -> message for an inline error ('' for the form as a whole)."""
    if isinstance(exc, ValidationError) and exc.field:
        return {exc.field: str(exc).removeprefix(f"{exc.field}: ")}
    return {"": str(exc)}


@bp.get("/hosts")
def hosts():
    return _hosts_page()


@bp.route("/hosts/new", methods=["GET", "POST"])
def host_new():
    if request.method == "GET":
        return _form_page(200, mode="add", values={"firmware": "bios"})
    values = _form_values()
    try:
        host = registry.add_host(get_store(), {**{k: (v if v.strip() else None) for k, v in values.items()},
                                               **_form_password()}, site=get_config().site)
    except (ValidationError, ConflictError) as exc:
        return _form_page(400 if isinstance(exc, ValidationError) else 409, mode="add", values=values,
                          errors=_errors_of(exc))
    flash(f"Host {host.name} ({host.mac}) registered in pool {host.pool}.", "info")
    if disk_warning(host.disk):
        flash(disk_warning(host.disk), "warning")
    if registry.site_warning(get_store(), host.site):
        flash(registry.site_warning(get_store(), host.site), "warning")
    return redirect(url_for("ui.host", mac=host.mac), 303)


@bp.route("/hosts/<mac>/edit", methods=["GET", "POST"])
def host_edit(mac: str):
    host = registry.get_host(get_store(), mac)
    if request.method == "GET":
        values = {k: ("" if v is None else str(v)) for k, v in host.as_dict().items() if k in HOST_FIELDS}
        values["multipath"] = "yes" if host.multipath else ""
        return _form_page(200, mode="edit", values=values, mac=host.mac)
    values = {**_form_values(), "mac": host.mac}
    changes = {**{k: (v if v.strip() else None) for k, v in values.items() if k != "mac"}, **_form_password()}
    try:
        updated = registry.update_host(get_store(), host.mac, changes)
    except (ValidationError, ConflictError) as exc:
        return _form_page(400 if isinstance(exc, ValidationError) else 409, mode="edit", values=values,
                          mac=host.mac, errors=_errors_of(exc))
    flash(f"Host {updated.name} ({updated.mac}) saved.", "info")
    return redirect(url_for("ui.host", mac=updated.mac), 303)


@bp.route("/hosts/<mac>/remove", methods=["GET", "POST"])
def host_remove(mac: str):
    host = registry.get_host(get_store(), mac)
    if request.method == "GET" or request.form.get("confirmed") != "yes":
        return page("confirm_remove.html", host=host)
    registry.remove_host(get_store(), host.mac)
    flash(f"Host {host.name} ({host.mac}) removed; any live installer window of it was closed.", "info")
    return redirect(url_for("ui.hosts"), 303)


@bp.post("/hosts/import")
def hosts_import():
    """All-or-nothing CSV import; every bad line is listed next to the form and nothing is imported."""
    if (request.content_length or 0) > MAX_IMPORT_BYTES:
        return _hosts_page(413, import_error=f"the upload is larger than {MAX_IMPORT_BYTES // 1024 // 1024} MiB")
    upload = request.files.get("csv")
    raw = upload.read(MAX_IMPORT_BYTES + 1) if upload is not None and upload.filename else b""
    if not raw:
        raw = request.form.get("csv_text", "").encode()
    if not raw.strip():
        return _hosts_page(400, import_error="choose a CSV file (or paste its text) first")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _hosts_page(400, import_error="the file is not UTF-8 text: save the CSV as UTF-8 and upload it again")
    try:
        added = registry.import_csv(get_store(), text, source="dashboard", site=get_config().site)
    except registry.ImportRejected as exc:
        return _hosts_page(422, problems=exc.as_list())
    flash(f"Imported {len(added)} host(s).", "info")
    return redirect(url_for("ui.hosts"), 303)


@bp.get("/hosts/<mac>")
def host(mac: str):
    """One host: its record, its attempts (ids only: tokens are never shown) and its timeline."""
    try:
        canonical = normalize_mac(mac)
    except ValidationError as exc:
        raise NotFoundError(str(exc)) from None
    record = get_store().get_host(canonical)
    since = request.args.get("since", "0")
    since = int(since) if since.isdigit() else 0
    rows, more = ui_view.host_timeline(get_store(), canonical, since=since)
    if record is None and not rows:
        raise NotFoundError(f"no host with MAC {canonical} is registered, and no event names it")
    return page("host.html", mac=canonical, host=record, attempts=get_store().list_attempts(canonical), rows=rows,
                more=more, since=since, last_id=rows[-1]["id"] if rows else since,
                disk_warning=disk_warning(record.disk) if record else None)


@bp.get("/hosts/<mac>/timeline.json")
def host_timeline_json(mac: str):
    """Timeline rows after event id `since` (the host page appends them as they come)."""
    since = request.args.get("since", "0")
    if not since.isdigit():
        return json_error(400, "since: must be a non-negative integer")
    try:
        canonical = normalize_mac(mac)
    except ValidationError as exc:
        return json_error(404, str(exc))
    rows, more = ui_view.host_timeline(get_store(), canonical, since=int(since), limit=500)
    return jsonify(events=rows, more=more)
