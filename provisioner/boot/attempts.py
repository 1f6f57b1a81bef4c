"""Installer attempts: arm / disarm a host, and the installer's signals that close and finish a window.

One attempt = one arming of one host for one media. Its token (secrets.token_urlsafe) goes into the
answer-file and script URLs; the installation-start script GET closes the window (the earliest reliable
"the installer is running" signal, docs/installer.md "Scripts: the installer's only callbacks"), the
installation-complete GET reports 0/1. Every change is a compare-and-set in the store with its event row; every fetch is
an `attempt.fetch` event, so the timeline of a boot can be read back from the event log.

Binding (issue 15 finding 7): the boot config is readable by anyone who knows the MAC (that is PXE), so the
token in it is no secret on the LAN. The answer file, the scripts and the report are therefore honoured only
for the booting host: the FIRST address that fetched this attempt's boot config, or the host's registered IP
(see admits()). Anything else is refused without consuming the one-shot and is an `attempt.foreign_client`
event (at most FOREIGN_EVENTS_PER_ATTEMPT per attempt). An attacker who fetches the boot config before the
host does, or spoofs its address, still wins: README "Trust model".
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from provisioner import states
from provisioner.boot import policy, urls
from provisioner.config import Config
from provisioner.media import media_generation
from provisioner.model import (
    ATTEMPT_TOKEN, Attempt, BootDecision, Host, Media, ValidationError, disk_problem, normalize_mac,
)
from provisioner.store import AttemptChange, NotFoundError, Store

log = logging.getLogger(__name__)
TOKEN_BYTES = 24  # 32 URL-safe characters, 192 bits: not guessable, and short enough for a kernel command line
BOOT_CONFIG_KINDS = ("config", "ipxe")
"""Fetch kinds that are a boot config (TFTP config or iPXE script): the proof that a host network-booted."""
FETCH_KINDS = ("config", "ipxe", "hypervisor", "kernel", "install.img", "answerfile", "complete-script", "file")
FOREIGN = "attempt.foreign_client"
# A thief holding a token can loop on it: the operator must see it happen, not get 10^6 rows for it.
FOREIGN_EVENTS_PER_ATTEMPT = 20


@dataclass(frozen=True)
class Outcome:
    """Result of an installer signal: the attempt (None for an unknown token) and whether THIS call changed it."""

    attempt: Attempt | None
    changed: bool
    note: str


def _fields(attempt: Attempt) -> dict[str, Any]:
    """The `extra` of a log line about the attempt's host (provisioner.logs shows them)."""
    return {"mac": attempt.mac, "attempt": attempt.id, "run": attempt.run_id}


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _client(client: Any) -> str | None:
    return None if client is None else str(client)[:64]


def address(client: Any) -> str | None:
    """A client address in one spelling: '::ffff:10.0.0.5' (a dual-stack socket) and '10.0.0.5' are one host."""
    if client is None:
        return None
    text = str(client).strip()[:64]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return text
    mapped = getattr(parsed, "ipv4_mapped", None)
    return str(mapped or parsed)


def _token_ok(token: Any) -> bool:
    return isinstance(token, str) and bool(ATTEMPT_TOKEN.fullmatch(token))


def _unknown_token(store: Store, token: Any, what: str, client: Any) -> None:
    # Log only a prefix: a near-miss of a real token must not end up readable in the dashboard.
    shown = token[:6] + "..." if isinstance(token, str) else f"<{type(token).__name__}>"
    store.add_event("attempt.unknown_token", details={"what": what, "client": _client(client), "token": shown})


# --- arming (operator / coordinator) ---


MAX_WINDOW_SECONDS = 30 * 86400
"""The longest arming window: past it a datetime overflows, and no install waits that long for its host."""


def arm(store: Store, config: Config, mac: str, media_name: str, *, run_id: str | None = None,
        window_seconds: int | None = None) -> Attempt:
    """Arm `mac` to get the installer of `media_name` on its next network boot(s); returns the new attempt.

    The host must be registered and have a boot disk (the upgrade answer file names it), the media must
    exist, and a XenServer 9 media needs a UEFI host (its installer refuses legacy BIOS). An older ARMED
    attempt of the host is EXPIRED (explicit re-arm); arming while an installer runs is refused.
    """
    canonical = normalize_mac(mac)
    _, media = check_armable(store, canonical, media_name)
    problem = urls.boot_base_problem(config.base_url)
    if problem:  # the host would boot and get a local boot: refuse before anyone reboots it
        raise ValidationError(problem, "public_url")
    window_until = None
    if window_seconds is not None:
        if isinstance(window_seconds, bool) or not isinstance(window_seconds, int) or \
                not 0 < window_seconds <= MAX_WINDOW_SECONDS:
            raise ValidationError(f"must be a whole number of seconds from 1 to {MAX_WINDOW_SECONDS} (30 days), "
                                  f"got {window_seconds!r}", "window")
        moment = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=window_seconds)
        window_until = moment.isoformat(timespec="milliseconds")
    attempt = store.arm_attempt(canonical, media.name, new_token(), max_runs=config.attempts_per_arming,
                                run_id=run_id, window_until=window_until)
    log.info("host %s armed for %s (attempt %d)", canonical, media.name, attempt.id, extra=_fields(attempt))
    return attempt


def check_armable(store: Store, mac: str, media_name: Any) -> tuple[Host, Media]:
    """The host and media of an arming, or the reason there can be none (no disk, XS 9 media on BIOS, ...)."""
    host = store.get_host(mac)
    if host is None:
        raise NotFoundError(f"no host with MAC {mac} is registered")
    media = store.get_media(media_name) if isinstance(media_name, str) else None
    if media is None:
        raise NotFoundError(f"no media named {media_name!r} (see `provisioner media list`)")
    if not host.disk:
        raise ValidationError(
            f"host {host.name} ({mac}) has no boot disk recorded; the answer file must name it "
            "(XenCenter reads PRIMARY_DISK from /etc/xensource-inventory): set it with "
            "`provisioner hosts update MAC --disk /dev/disk/by-id/...`", "disk")
    problem = disk_problem(host.disk)  # the answer-file validator's own rule: refuse now, not at the installer's GET
    if problem:
        raise ValidationError(
            f"host {host.name} ({mac}): boot disk {host.disk!r} {problem}; the answer file would be refused: fix it "
            "with `provisioner hosts update MAC --disk /dev/disk/by-id/...`", "disk")
    if media_generation(media) == "xs9" and host.firmware != "uefi":
        raise ValidationError(
            f"media {media.name} is XenServer {media.product_version}, whose installer refuses legacy BIOS; "
            f"host {host.name} ({mac}) is registered as {host.firmware}", "firmware")
    return host, media


def arm_fresh_install(store: Store, reinstall_id: int) -> Attempt:
    """Arm the FRESH-INSTALL attempt of a reinstall: once per reinstall, ever, and one answer file (max_runs=1)
    whatever attempts_per_arming says; its start script closes the window like any other attempt's."""
    found = store.get_reinstall(reinstall_id)
    if found is None:
        raise NotFoundError(f"no reinstall {reinstall_id}")
    check_armable(store, found.mac, found.media)
    attempt = store.arm_reinstall_attempt(reinstall_id, new_token(), max_runs=1)[1]
    log.info("host %s armed for a FRESH INSTALL of %s (attempt %d, reinstall %d)", found.mac, found.media,
             attempt.id, reinstall_id, extra=_fields(attempt))
    return attempt


def disarm(store: Store, mac: str, *, reason: str = "operator") -> list[Attempt]:
    """Cancel the host's live attempt(s) (ARMED or STARTED -> DISARMED); [] when nothing was live."""
    canonical = normalize_mac(mac)
    if store.get_host(canonical) is None:
        raise NotFoundError(f"no host with MAC {canonical} is registered")
    changed = store.disarm_attempts(canonical, details={"reason": str(reason)[:200]})
    for attempt in changed:
        log.info("host %s disarmed (attempt %d): %s", canonical, attempt.id, reason, extra=_fields(attempt))
    return changed


def current_attempt(store: Store, mac: str) -> Attempt | None:
    """The host's newest attempt (any state), or None."""
    return store.current_attempt(normalize_mac(mac))


def attempt_by_token(store: Store, token: str) -> Attempt | None:
    return store.attempt_by_token(token) if _token_ok(token) else None


def decide_for(store: Store, mac: str, *, now: _dt.datetime | None = None) -> BootDecision:
    """Load the host and its newest attempt, then ask the pure policy.decide(). `mac` must be canonical: the MAC
    the firmware asks with, the host's own or its boot MAC (a bond member or provisioning NIC: store.host_for_boot);
    the decision names the host's MAC either way."""
    host = store.host_for_boot(mac)
    attempt = store.current_attempt(host.mac) if host is not None else None
    return policy.decide(host.mac if host is not None else mac, host, attempt, now=now)


# --- binding: only the booting host may use an attempt's token ---


def booting_addresses(store: Store, attempt: Attempt) -> set[str]:
    """Where the attempt's installer may fetch from: its first boot-config fetcher and the host's registered IP.

    Kernel, xen and install.img fetches join an attempt only when they come from one of these two
    (record_file_fetch), so they add no address of their own.
    """
    host = store.get_host(attempt.mac)
    return {shown for shown in (address(attempt.boot_client), address(host.ip if host else None)) if shown}


def is_booting_host(store: Store, attempt: Attempt, client: Any) -> bool:
    """Read-only: is `client` one of the attempt's booting_addresses()?"""
    shown = address(client)
    return shown is not None and shown in booting_addresses(store, attempt)


def admits(store: Store, attempt: Attempt, what: str, client: Any, *, bind: bool = True) -> bool:
    """May `client` fetch this attempt's answer file or scripts, or report for it? With `bind` (config key
    `attempt_client_binding`) only a booting address may; a refusal is an `attempt.foreign_client` event."""
    if not bind or is_booting_host(store, attempt, client):
        return True
    shown = address(client)
    seen = store.count_attempt_events(attempt, FOREIGN, cap=FOREIGN_EVENTS_PER_ATTEMPT)
    if seen < FOREIGN_EVENTS_PER_ATTEMPT:
        last = seen + 1 == FOREIGN_EVENTS_PER_ATTEMPT
        store.add_event(FOREIGN, mac=attempt.mac, run_id=attempt.run_id, details={
            "attempt": attempt.id, "what": what, "client": shown, "bound_to": attempt.boot_client,
            "why": "not the address that fetched this attempt's boot config, nor the host's registered IP",
            **({"note": "further refusals for this attempt are not logged"} if last else {})})
        log.warning("%s for host %s (attempt %d) refused to %s: bound to %s", what, attempt.mac, attempt.id, shown,
                    attempt.boot_client or "no boot-config fetch yet", extra=_fields(attempt))
    return False


def _foreign(store: Store, token: str, what: str, client: Any, bind: bool) -> Attempt | None:
    """The attempt of `token` when `client` is refused for it (the event is written), else None."""
    if not bind:
        return None
    attempt = store.attempt_by_token(token)
    if attempt is None or admits(store, attempt, what, client):
        return None
    return attempt


# --- fetches and installer signals (boot endpoints) ---


def answerfile_allowed(store: Store, token: str, *, now: _dt.datetime | None = None) -> bool:
    """Read-only: would the answer file for `token` be served now? (True only while its window is open.)"""
    attempt = attempt_by_token(store, token)
    return attempt is not None and policy.window_open(attempt, now)[0]


def claim_answerfile(store: Store, token: str, client: Any, *, now: _dt.datetime | None = None,
                     bind: bool = True) -> Attempt | None:
    """Atomically check the window and count one installer run; the attempt to render for, or None (=> 404).

    Use this rather than answerfile_allowed() + record_fetch(): two fetches racing cannot both pass the cap.
    A refusal (closed window, stale or unknown token, a client other than the booting host) is an event;
    a refused client does not consume the run.
    """
    if not _token_ok(token):
        _unknown_token(store, token, "answerfile", client)
        return None
    if _foreign(store, token, "answerfile", client, bind) is not None:
        return None

    def decide(attempt: Attempt) -> AttemptChange:
        is_open, why = policy.window_open(attempt, now)
        if not is_open:
            return AttemptChange(event="attempt.refused", details={"what": "answerfile", "client": _client(client),
                                                                   "why": why})
        return AttemptChange(updates={"runs": attempt.runs + 1}, event="attempt.fetch", details={
            "what": "answerfile", "client": _client(client), "run": attempt.runs + 1, "max_runs": attempt.max_runs})

    attempt, change = store.change_attempt(token=token, decide=decide)
    if attempt is None:
        _unknown_token(store, token, "answerfile", client)
        return None
    if change is not None and change.event == "attempt.fetch":
        return attempt
    log.warning("answer file refused to %s for host %s (attempt %d): %s", _client(client), attempt.mac, attempt.id,
                change.details.get("why") if change else "no change", extra=_fields(attempt))
    return None


def record_fetch(store: Store, token_or_attempt: str | Attempt, what: str, client: Any,
                 **details: Any) -> Attempt | None:
    """Log one fetch (`what` in FETCH_KINDS) on the attempt's timeline as an `attempt.fetch` event.

    "answerfile" goes through claim_answerfile() (it counts a run); the return value is then None when it
    was refused. For other kinds this only logs, and returns the attempt (None for an unknown token).
    """
    if what not in FETCH_KINDS:
        raise ValueError(f"unknown fetch kind {what!r} (one of {', '.join(FETCH_KINDS)})")
    if what == "answerfile":
        token = token_or_attempt.token if isinstance(token_or_attempt, Attempt) else token_or_attempt
        return claim_answerfile(store, token, client)
    attempt = (token_or_attempt if isinstance(token_or_attempt, Attempt)
               else attempt_by_token(store, token_or_attempt))
    if attempt is None:
        _unknown_token(store, token_or_attempt, what, client)
        return None
    boot = what in BOOT_CONFIG_KINDS and attempt.state in states.ATTEMPT_LIVE and client is not None
    extra = {k: (v if isinstance(v, (int, float, bool)) or v is None else str(v)[:200]) for k, v in details.items()}
    store.add_fetch_event(attempt, {"attempt": attempt.id, "state": attempt.state, "what": what,
                                    "client": _client(client), **extra},
                          boot_client=address(client) if boot else None)
    return attempt


def start_script_fetched(store: Store, token: str, client: Any, *, bind: bool = True) -> Outcome:
    """The installer fetched its installation-start script: ARMED -> STARTED, closing the window.

    Compare-and-set in one transaction, so of two concurrent fetches exactly one changes the state. The
    HTTP layer answers 200 with a harmless script whatever this returns (a failed GET aborts the installer).
    A client other than the booting host changes nothing.
    """
    if not _token_ok(token):
        _unknown_token(store, token, "start", client)
        return Outcome(None, False, "unknown token")
    foreign = _foreign(store, token, "start", client, bind)
    if foreign is not None:
        return Outcome(foreign, False, "refused: not the booting host of this attempt")

    def decide(attempt: Attempt) -> AttemptChange:
        if attempt.state == states.ARMED:
            return AttemptChange(state=states.STARTED, details={"client": _client(client)})
        return AttemptChange(event="attempt.stale_token", details={"what": "start", "client": _client(client)})

    attempt, change = store.change_attempt(token=token, decide=decide)
    if attempt is None:
        _unknown_token(store, token, "start", client)
        return Outcome(None, False, "unknown token")
    if change.state == states.STARTED:
        log.info("installer started on host %s (attempt %d): window closed", attempt.mac, attempt.id,
                 extra=_fields(attempt))
        return Outcome(attempt, True, "window closed: the installer is running")
    return Outcome(attempt, False, f"attempt {attempt.id} is {attempt.state}: nothing to do")


def complete_reported(store: Store, token: str, code: Any, client: Any, *, bind: bool = True) -> Outcome:
    """The installation-complete script reported `code`: "0" -> SUCCEEDED, "1" -> FAILED.

    Any other code, or a report for an attempt that is already finished, is logged and changes nothing.
    A report on an ARMED attempt (start script never seen) still finishes it: an installer ran, so the
    window must close. A client other than the booting host changes nothing.
    """
    if not _token_ok(token):
        _unknown_token(store, token, "complete", client)
        return Outcome(None, False, "unknown token")
    foreign = _foreign(store, token, "report", client, bind)
    if foreign is not None:
        return Outcome(foreign, False, "refused: not the booting host of this attempt")
    text = str(code).strip()[:16]
    new = {"0": states.SUCCEEDED, "1": states.FAILED}.get(text)

    def decide(attempt: Attempt) -> AttemptChange:
        base = {"client": _client(client), "code": text}
        if new is None:
            return AttemptChange(event="attempt.report_ignored", details={**base, "why": "exit code is not 0 or 1"})
        if attempt.state not in states.ATTEMPT_LIVE:
            return AttemptChange(event="attempt.report_ignored",
                                 details={**base, "why": f"attempt is already {attempt.state}"})
        return AttemptChange(state=new, updates={"exit_code": int(text)},
                             details={**base, "start_seen": attempt.state == states.STARTED})

    attempt, change = store.change_attempt(token=token, decide=decide)
    if attempt is None:
        _unknown_token(store, token, "complete", client)
        return Outcome(None, False, "unknown token")
    if change.state is not None:
        log.log(logging.INFO if attempt.state == states.SUCCEEDED else logging.WARNING, "installer on host %s "
                "(attempt %d) reported %s: %s", attempt.mac, attempt.id, text, attempt.state, extra=_fields(attempt))
        return Outcome(attempt, True, f"installer reported {text}: {attempt.state}")
    return Outcome(attempt, False, change.details.get("why", "ignored"))


# Boot files of a media tree, by the path the loaders fetch; repository files (hundreds of RPMs) are not logged.
BOOT_FILE_KINDS = {"boot/xen.gz": "hypervisor", "boot/xen.efi": "hypervisor", "boot/vmlinuz": "kernel",
                   "install.img": "install.img"}


def record_file_fetch(store: Store, *, path: str, client_ip: Any, **details: Any) -> Attempt | None:
    """Put a kernel / hypervisor / install.img fetch (no token in its URL) on the timeline of the live
    attempt whose boot config went to the same client address; other files and clients are ignored."""
    what = BOOT_FILE_KINDS.get(str(path).lstrip("/"))
    if what is None or client_ip is None:
        return None
    attempt = store.live_attempt_for_client(address(client_ip))
    if attempt is None:
        return None
    return record_fetch(store, attempt, what, client_ip, path=path, **details)
