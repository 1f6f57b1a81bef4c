"""The firmware mode a host really boots in, as our own boot server saw it (docs/prechecks.md FIRMWARE_MISMATCH,
BOOT_PARTITION_NOT_ESP).

XAPI shows neither the mode a host booted in nor its boot partition's type. What we have is evidence: each config
a host's firmware fetched for an attempt is an `attempt.fetch` event naming its loader, and pxelinux is asked for
by BIOS firmware only, GRUB (grub.cfg-01-<mac>) by UEFI firmware only (boot/filenames.py; iPXE says neither here).
An installation made by an installer booted on BIOS has a BIOS boot partition, not an EFI System Partition
(host-installer backend.py before 70a19fb: `ID_BIOS_BOOT` unless target_boot_mode is UEFI), and an upgrade keeps
the partition it finds, so the loader of the host's last succeeded attempt tells how its install boots.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner import states
from provisioner.store import Store

FIRMWARE_OF_LOADER = {"pxelinux": "bios", "grub": "uefi"}
FETCH = "attempt.fetch"


@dataclass(frozen=True)
class Seen:
    latest: str | None  # the firmware of the newest boot-config fetch we served this host
    installed: str | None  # the firmware its last succeeded attempt's installer was booted by


def seen(store: Store, mac: str) -> Seen:
    """What our boot server saw of `mac`'s firmware (None where it saw nothing telling)."""
    events, since = [], 0
    while True:
        batch = store.events(mac=mac, kind=FETCH, since_id=since)
        events += batch
        if len(batch) < 1000:
            break
        since = batch[-1]["id"]
    told = [(e["details"].get("attempt"), FIRMWARE_OF_LOADER.get(str(e["details"].get("loader"))))
            for e in events]
    told = [(attempt, firmware) for attempt, firmware in told if firmware]
    succeeded = {a.id for a in store.list_attempts(mac) if a.state == states.SUCCEEDED}
    installed = [firmware for attempt, firmware in told if attempt in succeeded]
    return Seen(told[-1][1] if told else None, installed[-1] if installed else None)
