"""The operator text of a remedy (docs/remedies.md), per class and per boot method, written from the Facts and
what the attempt's events prove (remedy_facts.py); describe_error puts an XAPI error in words.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from provisioner import states
from provisioner.coordinator.remedy_facts import (AT_TARGET, INSTALLER_FAILED_INTACT, NOT_NETWORK_BOOTED,
                                                  NOTHING_CHANGED, OPERATOR_MARKED, STILL_INSTALLING, UNKNOWN,
                                                  Facts, Seen, reenabled)

def _clock(ts: str) -> str:
    """An event's ISO time as HH:MM:SS (UTC, as stored)."""
    return ts[11:19] if len(ts) >= 19 else ts


def _mib(value: Any) -> str:
    mib = int(value) / 2 ** 20
    return f"{mib / 1024:.1f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def describe_error(error: Sequence[str], vm_names: Mapping[str, str] | None = None) -> str:
    """An XAPI error in words: HOST_NOT_ENOUGH_FREE_MEMORY [needed, available] says how much memory is short
    (docs/xapi.md "Error codes and their parameters": [needed, available] for start/migrate, [vm] inside evacuation
    plans); VM refs become names."""
    names = vm_names or {}
    if not error:
        return ""
    code, params = str(error[0]), [names.get(str(p), str(p)) for p in error[1:]]
    sizes = [int(p) for p in params if p.isdigit()]
    if code == "HOST_NOT_ENOUGH_FREE_MEMORY" and len(sizes) == 2:  # [needed, free] (assess adds them to a plan's)
        needed, free = sizes
        which = ", ".join(p for p in params if not p.isdigit())
        head = (f"{code}{f' ({which})' if which else ''}: needs {_mib(needed)}, {_mib(free)} free on the best "
                "other host")
        short = (f"short by {_mib(needed - free)}" if needed > free else "memory XAPI reserves for VMs starting or "
                 "migrating (or for HA) leaves too little")
        return f"{head}, {short}; suspend or shut down some VMs, or add memory / a host"
    if code == "HOST_NOT_ENOUGH_FREE_MEMORY":
        return (f"{code} ({', '.join(params)}): no other enabled host has enough free memory for it; suspend or "
                "shut down some VMs, or add memory / a host")
    if code == "VM_REQUIRES_SR":
        return f"{code} ({', '.join(params)}): it has a disk on a storage repository no other host sees (local SR)"
    if code == "NO_HOSTS_AVAILABLE":
        return f"{code}: no other host can run it (none enabled at this version or higher)"
    return f"{code} ({', '.join(params)})" if params else code


def seen_text(seen: Seen) -> str:
    if not seen.answered:
        return "the pool master does not answer (or XAPI no longer knows the host)"
    return (f"live={seen.live} enabled={seen.enabled} version={seen.version} build={seen.build}"
            + (" (the target)" if seen.at_target else " (not the target)"))


def _retry(facts: Facts) -> str:
    return (f"then run `provisioner upgrade start {facts.pool} --media {facts.media}` again: hosts already at the "
            f"target are skipped and {facts.name} is tried again (`upgrade resume` continues a run but never retries "
            "a failed host)")


def _master_stop(facts: Facts) -> str:
    return ("The run stopped with no member touched (vendor rule: never go on after a master failure). "
            if facts.role == "master" else "")


def _keep(facts: Facts) -> str:
    if facts.role == "master":
        return (f"Do NOT restore {facts.name} from its backup partition: it holds the backup of the PREVIOUS upgrade "
                "(restoring it rolls dom0 and the pool database back in time).")
    return f"Do NOT forget or reinstall {facts.name}: it is healthy, and a fresh install wipes its local SR."


def _state_now(facts: Facts) -> str:
    now = facts.now
    if now is None or not now.answered:
        return "XAPI does not answer about it now"
    if not now.live:
        return "it is not running now: power it on and it boots its old system" + (
            " (its attempt is disarmed)" if facts.attempt_id is not None else "")
    enabled = ("enabled again" + (" (the run re-enabled it: host.enable)" if reenabled(facts) else "")
               if now.enabled else f"still disabled (`xe host-enable uuid={facts.uuid}`)")
    return f"it runs its old system ({now.version} build {now.build}), {enabled}"


def _blocker(facts: Facts) -> str:
    why = facts.reason.split(":", 1)[1].strip() if ":" in facts.reason else facts.reason
    if facts.step == states.STEP_CHECK and "not live" in why:
        return "the host was not live at its turn, so the run did not touch it"
    if facts.blockers:
        return "VMs that cannot move: " + "; ".join(f"VM {vm}: {describe_error(err)}"
                                                    for vm, err in sorted(facts.blockers.items()))
    if facts.error:
        return f"XAPI refused: {describe_error(facts.error)}"
    return why


def text(cls: str, facts: Facts, seen: dict[str, Any]) -> str:
    name, stop = facts.name, _master_stop(facts)
    if cls == AT_TARGET and facts.step == states.STEP_CONVERGE:  # docs/converge.md
        return (f"the host is at the target version but not at the run's update level: carry out its pending "
                f"guidances (xe host-param-get uuid={facts.uuid} param-name=pending-guidances), apply the updates "
                f"(xe host-apply-updates uuid={facts.uuid} hash=...), then enable it "
                f"(xe host-enable uuid={facts.uuid}), plug its storage and start its VMs listed in this report")
    if cls == AT_TARGET:
        return (f"the host is at the target version: enable it (xe host-enable uuid={facts.uuid}), plug its storage "
                "and start its VMs listed in this report")
    if cls == NOTHING_CHANGED:
        return (f"nothing was changed on {name}: it failed at {facts.step} before its reboot ({_blocker(facts)}); "
                f"{_state_now(facts)}. {stop}Fix that, {_retry(facts)}. {_keep(facts)}")
    plugin = facts.boot.startswith("host-plugin")  # hostplugin.py: no attempt; our HTTP server saw its downloads
    entered = (f"it entered the installer (host-plugin: after its reboot it read the repository from our HTTP "
               f"server at {_clock(seen['entered'])}; this mode has no start script and no report)"
               if plugin and seen.get("entered") else "")
    if cls == NOT_NETWORK_BOOTED and plugin:
        staged = (f"its dom0 downloaded {', '.join(seen['main_downloads'])} during main, but after the reboot it read "
                  "nothing from our HTTP server" if seen.get("main_downloads") else
                  "no download of our media from its address was seen")
        return (f"{name} did not enter the installer (host-plugin; {staged}): its bootloader did not take the "
                f"plugin's one-shot upgrade entry, or the installer stopped before writing anything; "
                f"{_state_now(facts)}. Nothing on its "
                f"disk changed. {stop}Look at its console on the next reboot and at /boot/installer and the bootloader "
                f"default in its dom0, or use another boot method; {_retry(facts)}. {_keep(facts)}")
    if cls == NOT_NETWORK_BOOTED:
        how = ("it fetched its boot config but never the answer file: a boot file failed to load or the loader fell "
               "back to the disk" if seen["boot"] else "no boot config was fetched on its attempt: it booted its disk")
        return (f"{name} did not reach the installer: {how}; {_state_now(facts)}. Nothing on its disk changed. "
                f"{stop}Its boot method is {facts.boot or 'unknown'}: check it and its boot order (network boot "
                f"before the disk, a BMC's one-time network boot override, the UEFI BootOrder, "
                f"the PXE / iPXE settings of its NIC), {_retry(facts)}. {_keep(facts)}")
    if cls == INSTALLER_FAILED_INTACT:
        if entered and seen["code"] is None and not seen["started"]:
            how = f"{entered}, and it came back at its old version"
        elif seen["code"] is not None:
            how = f"its installer reported exit code {seen['code']}"
        elif seen["started"]:
            how = "its installer started (start script seen) and did not report"
        else:
            how = ("the answer file was served but no start script ran: the installer refused the answer file or "
                   "stopped before touching the disk (it runs its start script before any disk write)")
        return (f"the installer ran on {name} and failed ({how}); {_state_now(facts)}: the old system is intact. "
                f"{stop}Find the cause (installer log, answer file, media), {_retry(facts)}. {_keep(facts)}")
    if cls == STILL_INSTALLING:
        head = (f"{name}: {entered}" if entered and not seen["started"]
                else f"{name}'s installer started and has not reported")
        return (f"{head}; the host is not back (it may still be installing: "
                f"watch its console). Start no other host meanwhile. While the run waits on it: `provisioner upgrade "
                f"mark-failed {facts.pool} {name}` if it is dead (a remedy follows from the evidence), or `provisioner "
                f"upgrade abort {facts.pool}`. If it comes back at its old version, its old system is intact: start "
                "again. Do NOT forget, reinstall or restore it while it may still be installing.")
    if cls == UNKNOWN and entered and OPERATOR_MARKED in facts.reason:
        return (f"{name}: {entered}, did not come back and was marked failed: whether its installer wrote the disk "
                f"is unknown. {stop}Look at the host (console, `xe host-list`) before doing anything: back at its "
                f"old version, it is intact ({_retry(facts)}); stuck or broken in the installer, it needs the failed-"
                "upgrade remedy (member: forget and reinstall; master: restore from its backup partition). Do NOT "
                "forget, reinstall or restore it on this report alone.")
    if cls == UNKNOWN:
        return (f"{name} failed at {facts.step} and what it is now is unknown (XAPI was not asked or did not answer). "
                f"{stop}Look at the host (console, `xe host-list`) before doing anything; `provisioner upgrade status "
                f"{facts.pool}` after the master answers again shows the remedy from evidence. Do NOT forget, "
                "reinstall or restore it on this report alone.")
    ran = (f"its installer reported exit code {seen['code']}" if seen["code"] is not None
           else "its installer started and never reported; marked failed by the operator")
    gone = f"{name} is gone after an installer run that got past its start ({ran}); {_gone_now(facts)}. "
    if facts.role == "master":
        return (gone + "The run stopped with no member touched (vendor rule). Restore the master from its backup "
                "partition (boot the installer from the same media and choose to restore). What the backup holds: "
                "the installer takes it after its checks and before writing the new root (host-installer "
                "backend.py prep sequence), and the start script runs before those checks, so it is this "
                "upgrade's backup only if the installer got past them; if not, the partition holds the PREVIOUS "
                "upgrade's backup and restoring it rolls dom0 and the pool database back in time (check the "
                "backup's version on the restore screen). Then start a new run.")
    return (gone + "A member whose upgrade failed is replaced (vendor rule): make sure it is off, then forget it, "
            f"reinstall it fresh and pool-join it as a new host: `provisioner reinstall {facts.mac} --pool "
            f"{facts.pool} --media {facts.media} --confirm {name} --forget --root-password-hash-file FILE` (FILE: "
            "`openssl passwd -6` of the pool password); add `--plan` first to see every VM disk on its local SR "
            "that the wipe loses (host.destroy removes only the host record): it refuses until `--accept-data-loss`.")


def _gone_now(facts: Facts) -> str:
    now = facts.now
    if now is None or not now.answered:
        return "XAPI does not answer about it"
    return "XAPI shows it not live" if not now.live else f"XAPI shows it at {now.version} build {now.build}"
