"""Boot endpoints: iPXE scripts, per-attempt answer files, installer scripts and the result report.

Views only translate: parse the request, make one call into boot/ (service.ipxe_script for the per-MAC iPXE
answer; answers.answer_file, installer_script and report for the installer's own requests), and turn its Reply
into a response. Every decision (which attempt, upgrade or fresh answer file, stale tokens, which script)
is made there, not here.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, request

from provisioner.boot import answers, service, urls
from provisioner.boot.service import Reply
from provisioner.web.access import get_config, get_events, get_store

bp = Blueprint("boot", __name__, url_prefix=urls.BOOT_PREFIX)


def _text(reply: Reply) -> Response:
    response = Response(reply.body, status=reply.status, mimetype=reply.mimetype)
    response.headers["Cache-Control"] = "no-store"  # every boot must ask again: one-shot answers
    return response


@bp.get("/answerfile/<token>")
def answer_file(token: str):
    """The attempt's answer file, once (boot.answers.answer_file decides which, or why not)."""
    store, config, client = get_store(), get_config(), request.remote_addr
    return _text(answers.answer_file(store, config, token, client, get_events()))


@bp.get("/script/<token>/<stage>")
def installer_script(token: str, stage: str):
    """installation-start closes the window; installation-complete returns a script that reports $1."""
    store, config, client = get_store(), get_config(), request.remote_addr
    return _text(answers.installer_script(store, config, token, stage, client, get_events()))


@bp.get("/report/<token>/<code>")
def report(token: str, code: str):
    """Called by the installation-complete script with the installer's exit code (0 or 1)."""
    return _text(answers.report(get_store(), get_config(), token, code, request.remote_addr, get_events()))


@bp.get("/ipxe")
@bp.get("/ipxe/<path:_mac>")
def ipxe(_mac: str = ""):
    """iPXE script for the MAC in the path (${net0/mac:hexhyp}) or ?mac=; local boot unless armed."""
    store, config = get_store(), get_config()
    return _text(service.ipxe_script(store, config, request.full_path, request.path, request.remote_addr))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
