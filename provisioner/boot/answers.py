"""What the installer's own HTTP requests get: the answer file, the two installer scripts and the result report.

Every decision about those requests lives here, so the web views only parse the request and turn the Reply into
a response (like boot.service for boot configs): which attempt a token names (after letting queued boot-config
records land), whether this client may have it, an upgrade or a fresh-install answer file, closed, stale or
unknown tokens, and which script text. Script requests ALWAYS get 200 with a valid /bin/sh script, even for
stale or unknown tokens or a failing store: a failed GET of the installation-start script aborts the real
installer (docs/installer.md "Scripts: the installer's only callbacks").
"""

from __future__ import annotations

import logging
from typing import Protocol

from provisioner import packs, sites
from provisioner.boot import answerfile, answerfile_fresh, attempts, urls
from provisioner.boot.service import Reply
from provisioner.config import Config
from provisioner.model import Attempt
from provisioner.store import Store

log = logging.getLogger(__name__)

STAGE_START = answerfile.STAGE_START
STAGE_COMPLETE = answerfile.STAGE_COMPLETE
SETTLE_SECONDS = 5.0  # the longest a boot request waits for queued fetch records (the firmware retries anyway)

NOOP_SCRIPT = """#!/bin/sh
# provisioner: {why}; nothing to do.
exit 0
"""

START_SCRIPT = """#!/bin/sh
# provisioner: the installer for host {mac} (attempt {attempt}) is running; its boot window is now closed,
# so the next network boot of this host is a local boot.
exit 0
"""

# The 8.x installer runs Python 2 and the 9 line Python 3; curl/wget inside install.img are not guaranteed,
# Python is (the installer is written in it). The report must never fail the installer: always exit 0.
COMPLETE_SCRIPT = """#!/bin/sh
# provisioner: report the installer's result ($1: 0 = success, 1 = failure) for host {mac} (attempt {attempt}).
url='{report_url}'
code="${{1:-unknown}}"
for py in python3 python /usr/bin/python3 /usr/bin/python; do
  if command -v "$py" >/dev/null 2>&1; then
    "$py" - "$url" "$code" <<'PY' && exit 0
import sys
try:
    from urllib.request import urlopen
except ImportError:
    from urllib2 import urlopen
urlopen(sys.argv[1] + sys.argv[2], timeout=20).read()
PY
  fi
done
wget -q -O /dev/null "$url$code" 2>/dev/null || curl -fsS -o /dev/null "$url$code" 2>/dev/null
exit 0
"""


class Queue(Protocol):
    """The boot-config record queue (eventwriter.EventWriter): drain() lets what is queued land in the store."""

    def drain(self, timeout: float = ...) -> bool: ...


def _text(body: str | bytes, status: int = 200, mimetype: str = "text/plain") -> Reply:
    return Reply(status, body, mimetype)


def _settle(store: Store, token: str, client: str | None, bind: bool, queue: Queue | None) -> Attempt | None:
    """The token's attempt, read after letting queued boot-config records land if it is not bound yet.

    The TFTP thread queues its fetch records (eventwriter.DecisionStore), the binding among them, so an
    installer quicker than the queue must not be refused for it. Waits only while the attempt has no booting
    address recorded at all (and only with attempt_client_binding): once bound, a foreign client is refused at once.
    """
    attempt = attempts.attempt_by_token(store, token)
    if bind and queue is not None and attempt is not None and attempt.boot_client is None and \
            not attempts.is_booting_host(store, attempt, client):
        queue.drain(timeout=SETTLE_SECONDS)
        attempt = attempts.attempt_by_token(store, token)
    return attempt


def answer_file(store: Store, config: Config, token: str, client: str | None, queue: Queue | None) -> Reply:
    """The attempt's answer file, once: 404 (and an event) for a closed, unknown or stale token.

    An upgrade file for every attempt, except the attempt a lab reinstall armed: that one alone gets the
    fresh-install file (answerfile_fresh), rendered with the reinstall's root-password hash, which is then dropped.
    """
    bind = config.attempt_client_binding
    found = _settle(store, token, client, bind, queue)
    if found is not None and not attempts.admits(store, found, "answerfile", client, bind=bind):
        # Not the booting host (issue 15 finding 7): refused without consuming the one-shot, so the host still gets it.
        return _text("this answer file is bound to the host that fetched its boot config; see the event log\n", 403)
    if not attempts.answerfile_allowed(store, token):
        attempts.claim_answerfile(store, token, client)  # records why it was refused
        return _text("no answer file for this token: its installer window is closed or it is unknown\n", 404)
    attempt = found  # not None: answerfile_allowed said yes
    host, media = store.get_host(attempt.mac), store.get_media(attempt.media)
    reinstall = store.reinstall_for_attempt(attempt.id)  # only a reinstall's own attempt gets a fresh install
    try:
        if host is None or media is None:
            raise answerfile.AnswerfileError("the host or the media of this attempt is no longer registered")
        config = sites.boot_config(store, config, host)  # the host's site's URLs (docs/sites.md)
        # the media's supplemental packs and driver disks that apply to this host (docs/packs.md)
        extra, drivers = urls.pack_sources(config.base_url, packs.packs_for(store, media.name, host))
        if reinstall is None:
            body = answerfile.render_upgrade(config, host, media, token, extra, drivers).encode("utf-8")
        else:
            body = answerfile_fresh.render_for_reinstall(config, host, media, attempt, reinstall, extra,
                                                         drivers).encode("utf-8")
    except answerfile.AnswerfileError as exc:
        # Refuse rather than serve anything doubtful; the run is not counted, the operator sees the event.
        store.add_event("answerfile.refused", mac=attempt.mac, run_id=attempt.run_id,
                        details={"attempt": attempt.id, "client": client, "error": str(exc)[:500]})
        return _text("answer file refused by the server's validator; see the event log\n", 500)
    if attempts.claim_answerfile(store, token, client, bind=bind) is None:  # lost a race with another fetch
        return _text("no answer file for this token\n", 404)
    if reinstall is not None:  # served once: the root-password hash is not kept any longer than needed
        store.clear_reinstall_hash(reinstall.id)
    return _text(body, mimetype="application/xml")


def installer_script(store: Store, config: Config, token: str, stage: str, client: str | None,
                     queue: Queue | None) -> Reply:
    """installation-start closes the window; installation-complete returns a script that reports $1.

    Whatever the store does (disk full, read-only, locked), the installer still gets 200 and a valid script:
    a failed script GET aborts the real installer (docs/installer.md "Scripts: the installer's only callbacks").
    The failure is logged instead."""
    try:
        return _script(store, config, token, stage, client, queue)
    except Exception as exc:
        log.error("installer script %r for token %s... served without recording it: %s: %s",
                  stage[:64], token[:6], type(exc).__name__, exc)
    if stage == STAGE_COMPLETE:
        try:  # a read may still work when writes do not: then the result can still be reported
            attempt = attempts.attempt_by_token(store, token)
        except Exception:
            attempt = None
        if attempt is not None:
            return _text(COMPLETE_SCRIPT.format(mac=attempt.mac, attempt=attempt.id,
                                                report_url=urls.report(config.base_url, token)))
    return _text(NOOP_SCRIPT.format(why="the server could not record this step (see its log)"))


def _script(store: Store, config: Config, token: str, stage: str, client: str | None, queue: Queue | None) -> Reply:
    bind = config.attempt_client_binding
    found = _settle(store, token, client, bind, queue)
    if stage == STAGE_START:
        outcome = attempts.start_script_fetched(store, token, client, bind=bind)
        if outcome.changed:
            return _text(START_SCRIPT.format(mac=outcome.attempt.mac, attempt=outcome.attempt.id))
        return _text(NOOP_SCRIPT.format(why=outcome.note.replace("\n", " ")))
    if stage == STAGE_COMPLETE:
        if found is not None and not attempts.admits(store, found, "complete-script", client, bind=bind):
            return _text(NOOP_SCRIPT.format(why="not the booting host of this attempt"))
        attempt = attempts.record_fetch(store, token, "complete-script", client)
        if attempt is None:
            return _text(NOOP_SCRIPT.format(why="unknown token"))
        config = sites.boot_config(store, config, store.get_host(attempt.mac))  # the host's site's report URL
        return _text(COMPLETE_SCRIPT.format(mac=attempt.mac, attempt=attempt.id,
                                            report_url=urls.report(config.base_url, token)))
    store.add_event("boot.bad_script_stage", details={"stage": stage[:64], "client": client})
    return _text(NOOP_SCRIPT.format(why="unknown script stage"))


def report(store: Store, config: Config, token: str, code: str, client: str | None, queue: Queue | None) -> Reply:
    """The installation-complete script's report of the installer's exit code (0 or 1)."""
    bind = config.attempt_client_binding
    _settle(store, token, client, bind, queue)
    outcome = attempts.complete_reported(store, token, code, client, bind=bind)
    return _text(outcome.note + "\n")
