"""decide(): the ONE answer to "what does this MAC get right now?" for every boot path. Pure: no I/O.

TFTP names, GRUB configs, iPXE scripts and the answer-file gate all ask it (or window_open(), its core),
so no path can disagree with another: the reinstall loops of other tools (docs/firmware.md "Reinstall loops") came from
paths that did not read the same flag. The caller loads the host and its newest attempt.
"""

from __future__ import annotations

import datetime as _dt

from provisioner import states
from provisioner.model import BOOT_DEFAULT, BOOT_INSTALLER, BOOT_LOCAL, Attempt, BootDecision, Host

INSTALLER = BOOT_INSTALLER
LOCAL_BOOT = BOOT_LOCAL
DEFAULT = BOOT_DEFAULT


def _utc(value: _dt.datetime | str) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def window_open(attempt: Attempt, now: _dt.datetime | None = None) -> tuple[bool, str]:
    """(True, why) while `attempt` may still hand out the installer and its answer file; else (False, why).

    Open means: ARMED, fewer answer files served than its cap (each installer run fetches exactly one, so
    a run that dies before its start script cannot loop), and before its deadline if it has one.
    """
    if attempt.state != states.ARMED:
        return False, f"attempt {attempt.id} is {attempt.state}"
    if attempt.runs >= attempt.max_runs:
        return False, (f"attempt {attempt.id} used its {attempt.max_runs} installer run(s) (answer file served, "
                       "no start script seen): re-arm to try again")
    if attempt.window_until is not None:
        moment = _utc(now or _dt.datetime.now(_dt.timezone.utc))
        if moment >= _utc(attempt.window_until):
            return False, f"attempt {attempt.id} window closed at {attempt.window_until}"
    return True, f"attempt {attempt.id} armed for media {attempt.media}"


def decide(mac: str | None, host: Host | None, attempt: Attempt | None, *,
           now: _dt.datetime | None = None) -> BootDecision:
    """INSTALLER(attempt) for a known host with an open window; LOCAL_BOOT for any other known host;
    DEFAULT (a local boot as well) for an unknown MAC. `attempt` is the host's newest attempt, or None."""
    if host is None:
        return BootDecision(DEFAULT, mac, "unknown MAC: never an installer")
    if attempt is None:
        return BootDecision(LOCAL_BOOT, host.mac, "not armed", host=host)
    if attempt.mac != host.mac:  # a caller bug; fail towards the disk, never towards the installer
        return BootDecision(LOCAL_BOOT, host.mac, f"attempt {attempt.id} belongs to {attempt.mac}", host=host)
    is_open, why = window_open(attempt, now)
    return BootDecision(INSTALLER if is_open else LOCAL_BOOT, host.mac, why, host=host, attempt=attempt)
