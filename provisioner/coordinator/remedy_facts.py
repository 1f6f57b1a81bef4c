"""The vocabulary of remedies (docs/remedies.md): the classes, the Facts classify() reads, the Remedy it returns,
and what a host's events of the run prove (its installer attempt's fetches, start and report; the XAPI calls the run
sent). remedies.py classifies; remedy_text.py writes the operator text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from provisioner import states
from provisioner.boot import attempts, downloads

NOTHING_CHANGED = "nothing_changed"
"""Failed before its reboot (CHECK, DISABLE, EVACUATE, ARM, or a refused host.reboot): the host still runs its old
system, the run re-enabled it; fix the blocker and retry. Never forget, reinstall or restore."""
NOT_NETWORK_BOOTED = "not_network_booted"
"""Rebooted but never reached the installer (no boot config, or no answer file, fetched on its attempt): boot
order / boot method problem; its disk is untouched. Fix the boot path and retry."""
INSTALLER_FAILED_INTACT = "installer_failed_intact"
"""The installer ran (answer file served, start script seen or a complete report) and the host is back at its old
version (or, if the installer never got to its start script, nothing on the disk changed): retry, never destroy."""
BROKEN_AFTER_INSTALL = "broken_after_install"
"""The host is gone (not live, not answering) after an installer run that got past its start script and reported,
or that the operator marked failed: the only class that advises forget + reinstall (member) or restore (master)."""
AT_TARGET = "at_target"
"""At the target version but a later step (STORAGE, ENABLE, RESTORE, or the installer's own report) failed: enable
it, plug its storage, start its VMs; nothing to reinstall."""
STILL_INSTALLING = "still_installing"
"""The installer started and has not reported, the host is not back: it may still be installing. Wait, watch its
console, then abort or mark it failed; never start another host meanwhile."""
UNKNOWN = "unknown"
"""Failed after its reboot and XAPI could not be asked what the host is now (run_report() after a crash, or the pool
master did not answer): look at the host before doing anything."""

CLASSES = (NOTHING_CHANGED, NOT_NETWORK_BOOTED, INSTALLER_FAILED_INTACT, BROKEN_AFTER_INSTALL, AT_TARGET,
           STILL_INSTALLING, UNKNOWN)
DESTRUCTIVE = frozenset({BROKEN_AFTER_INSTALL})
"""The classes whose remedy forgets, reinstalls or restores the host (docs/remedies.md: the vendor's rule)."""
DOWN_OR_UNKNOWN = frozenset({BROKEN_AFTER_INSTALL, STILL_INSTALLING, UNKNOWN})
"""Classes in which the host is always down or in an unknown state (Remedy.host_down also covers a host of any
class that is not live now): the run must not start another host while one is."""

PRE_REBOOT = frozenset({states.STEP_CHECK, states.STEP_DISABLE, states.STEP_EVACUATE, states.STEP_ARM})
AFTER_TARGET = frozenset({states.STEP_CONVERGE, states.STEP_STORAGE, states.STEP_ENABLE, states.STEP_RESTORE})
OPERATOR_MARKED = "marked failed by the operator"
"""The reason prefix of a host the operator marked failed while its installer was running (mark-failed)."""
EVIDENCE_LIMIT = 24


@dataclass(frozen=True)
class Seen:
    """What XAPI showed of the host when it was assessed (None fields: the master did not answer)."""

    answered: bool
    live: bool = False
    version: str | None = None
    build: str | None = None
    enabled: bool | None = None
    at_target: bool = False


@dataclass(frozen=True)
class Facts:
    """Everything classify() looks at; built by assess() / from_store() (tests build it directly)."""

    name: str
    mac: str
    uuid: str
    role: str
    pool: str
    media: str
    step: str  # the step it failed at
    reason: str
    target: str  # "8.4.0 build 123"
    events: Sequence[Mapping[str, Any]] = ()  # this host's events of this run, oldest first (store rows)
    attempt_id: int | None = None
    now: Seen | None = None  # None: XAPI was not asked (run_report() fallback)
    blockers: Mapping[str, Sequence[str]] = field(default_factory=dict)  # VM name -> XAPI error (EVACUATE)
    error: Sequence[str] = ()  # the XAPI error (code, params) the step failed with, if any
    boot: str = ""  # its boot method, and its BMC when it has one ("redfish (BMC redfish http://...)")


@dataclass(frozen=True)
class Remedy:
    cls: str
    text: str
    evidence: list[dict[str, Any]]
    host_down: bool  # not live / not answering / unknown now: the run must not start another host

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed_step(reason: str | None) -> str:
    """The step a FAILED host failed at: the runner's reason is "<step>: <why>"."""
    head = (reason or "").split(":", 1)[0].strip()
    return head if head in states.HOST_STEPS else ""


def attempt_events(facts: Facts) -> list[Mapping[str, Any]]:
    return [e for e in facts.events if e["kind"].startswith("attempt.") and facts.attempt_id is not None
            and e["details"].get("attempt") == facts.attempt_id]


def installer_seen(facts: Facts) -> dict[str, Any]:
    """What the attempt's events prove: boot config / answer file fetched, start script seen, exit code; for a
    host-plugin host, when it entered the installer (its first media download after the reboot) and what its dom0
    downloaded during `main`."""
    found = attempt_events(facts)
    fetched = [e["details"].get("what") for e in found if e["kind"] == "attempt.fetch"]
    done = [e for e in found if e["kind"] in ("attempt.succeeded", "attempt.failed")]
    code = str(done[-1]["details"].get("code", "")) if done else None
    started = any(e["kind"] == "attempt.started" for e in found) or any(
        d["details"].get("start_seen") for d in done)
    # host-plugin (no attempt): our HTTP server's record of its media downloads (boot/downloads.py); a fetch after
    # the reboot was sent is the installer booted from the plugin's entry reading the repository
    plugin = [e for e in facts.events if e["kind"] == downloads.EVENT]
    entered = [e for e in plugin if e["details"].get("phase") == downloads.INSTALLER]
    return {"boot": any(w in attempts.BOOT_CONFIG_KINDS for w in fetched), "answerfile": "answerfile" in fetched,
            "started": started, "code": code, "fetched": fetched,
            "entered": entered[0]["ts"] if entered else None,
            "main_downloads": [e["details"].get("what") for e in plugin if e not in entered]}


def sent(facts: Facts, *methods: str) -> bool:
    return any(e["kind"] == "xapi.call" and e["details"].get("method") in methods and e["details"].get("ok")
               for e in facts.events)


def reenabled(facts: Facts) -> bool:
    failed_at = next((i for i, e in enumerate(facts.events) if e["kind"] == "step.failed"), len(facts.events))
    return any(e["kind"] == "xapi.call" and e["details"].get("method") == "host.enable" and e["details"].get("ok")
               for e in facts.events[:failed_at])
