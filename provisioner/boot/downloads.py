"""Media downloads by hosts that have no attempt of ours: the host-plugin boot method (docs/host-plugin.md).

In host-plugin mode the host's dom0 (`prepare_host_upgrade.py main`) downloads install.img, boot/vmlinuz and
boot/xen.gz (and reads .treeinfo and repodata/repomd.xml) from our media URL, and after its reboot the installer
reads the repository from it: no token in any URL, no attempt, so attempts.record_file_fetch() finds nothing.
The web's fetch callback (web/app.py) hands every such media fetch to Downloads.record(), which finds the host by
the client's address and writes one `host_plugin.download` event per host, per kind of file, per `main` (the
run's `host_plugin.main` event), per phase (before the reboot: `main` in dom0; after it: the installer): the
repository's hundreds of files are one event, its first.

Which hosts are watched: those with a `host_plugin.main` event in an active run. A client address is theirs when
it is the address that event recorded (the host's XAPI address), the host's registered `ip`, or, through the
kernel's neighbour table (/proc/net/arp, IPv4 on the same link), an address whose MAC is the host's management or
boot MAC (the installer may get another address by DHCP than dom0 had). Anything else is ignored.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from provisioner import states
from provisioner.boot.attempts import address
from provisioner.store import Store

log = logging.getLogger(__name__)

PLUGIN_MAIN = "host_plugin.main"
"""Written by coordinator/hostplugin.py before `main` runs: {url, address}; it opens a download window."""
EVENT = "host_plugin.download"
"""{what, path, client, media, bytes, main, phase}: the host fetched this kind of file, the first of its kind in its
phase: MAIN (dom0, `main` before host.reboot: its test_repo GETs and its downloads) or INSTALLER (after the reboot
was sent: the installer booted from the plugin's entry reads the repository)."""
MAIN, INSTALLER = "main", "installer"
REBOOTED = f"step.{states.STEP_WAIT_DOWN}"  # the run's step event once host.reboot was sent (store/runs.py)
KINDS = {"install.img": "install.img", "boot/vmlinuz": "vmlinuz", "boot/xen.gz": "xen.gz"}
REPOSITORY = "repository"  # every other file of the media tree (.treeinfo, repodata/, Packages/)
ARP_REREAD = 0.1  # seconds between re-reads of the neighbour table for an address it did not have
RELOAD = 5.0  # seconds between full re-reads of the watched hosts (runs that ended)
ARP = Path("/proc/net/arp")


def kind_of(path: str) -> str:
    return KINDS.get(str(path).lstrip("/"), REPOSITORY)


def neighbours(table: Path = ARP) -> dict[str, str]:
    """IPv4 address -> MAC from the kernel's neighbour table (complete entries only); {} when unreadable."""
    found = {}
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:  # IP address, HW type, Flags, HW address, Mask, Device
        parts = line.split()
        if len(parts) >= 4 and parts[2] != "0x0" and parts[3] != "00:00:00:00:00:00":
            found[parts[0]] = parts[3].lower()
    return found


@dataclass(frozen=True)
class Watched:
    mac: str
    run_id: str
    main: int  # the id of its latest host_plugin.main event in that run


class Downloads:
    """The web process's watch: client address -> watched host, re-read from the store when a new `main` is
    recorded (looked for on every media fetch) and every RELOAD seconds, and the download kinds already
    recorded per `main` (so a repository of 600 packages writes one event)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic,
                 neighbour_table: Callable[[], dict[str, str]] = neighbours):
        self.store, self.clock, self.neighbour_table = store, clock, neighbour_table
        self.lock = threading.Lock()
        self.by_address: dict[str, Watched] = {}
        self.by_mac: dict[str, Watched] = {}
        self.arp: dict[str, str] = {}
        self.loaded = self.arp_read = float("-inf")
        self.last_main = 0  # every host_plugin.main up to this event id is loaded
        self.recorded: set[tuple[int, str, str]] = set()  # (main event id, phase, kind)
        self.rebooted: set[int] = set()  # main event ids whose host has been rebooted since

    def record(self, *, path: str, client_ip: Any, media: str, bytes: int = 0) -> bool:
        """Write the event when this is the first fetch of its kind by a watched host since its `main`."""
        client = address(client_ip)
        if client is None:
            return False
        what = kind_of(path)
        with self.lock:
            watched = self._lookup(client)
            if watched is None:
                return False
            phase = self._phase(watched)
            if (watched.main, phase, what) in self.recorded:
                return False
            self.recorded.add((watched.main, phase, what))
        self.store.add_event(EVENT, mac=watched.mac, run_id=watched.run_id, details={
            "what": what, "path": str(path)[:200], "client": client, "media": media, "bytes": bytes,
            "main": watched.main, "phase": phase})
        return True

    def _phase(self, watched: Watched) -> str:
        """INSTALLER once the run moved the host to WAIT_DOWN after this `main` (host.reboot sent), else MAIN."""
        if watched.main not in self.rebooted:
            try:
                if not self.store.events(mac=watched.mac, run_id=watched.run_id, kind=REBOOTED,
                                         since_id=watched.main, limit=1):
                    return MAIN
            except Exception:
                log.exception("could not read whether %s was rebooted", watched.mac)
                return MAIN
            self.rebooted.add(watched.main)
        return INSTALLER

    def _lookup(self, client: str) -> Watched | None:
        now = self.clock()
        try:
            if now - self.loaded >= RELOAD:
                self._load(now)
            else:  # a `main` just recorded is followed at once by its downloads: look for one on every fetch
                last = self.store.last_event_id()  # (cheap: the rows since the previous fetch are scanned)
                if self.store.events(kind=PLUGIN_MAIN, since_id=self.last_main, limit=1):
                    self._load(now)
                else:
                    self.last_main = max(self.last_main, last)
        except Exception:  # the download is served whatever happens here (files.py: a callback never fails it)
            log.exception("could not read the hosts whose media downloads are watched")
        found = self.by_address.get(client)
        if found is None and self.by_mac:
            if client not in self.arp and now - self.arp_read >= ARP_REREAD:  # a new (DHCP) address: read again
                self.arp, self.arp_read = self.neighbour_table(), now
            found = self.by_mac.get(self.arp.get(client, ""))
        return found

    def _load(self, now: float) -> None:
        """Re-read the watched hosts: the latest host_plugin.main of each host in each active run."""
        self.loaded = now
        self.last_main = max(self.last_main, self.store.last_event_id())  # read first: a later main is found next
        by_address, by_mac = {}, {}
        for run in self.store.list_runs(active_only=True):
            for event in self.store.events(run_id=run.id, kind=PLUGIN_MAIN, limit=100_000):
                self.last_main = max(self.last_main, event["id"])
                watched = Watched(event["mac"], run.id, event["id"])
                host = self.store.get_host(watched.mac)
                for mac in {watched.mac, *([host.netboot_mac] if host is not None else [])}:
                    by_mac[mac] = watched
                for addr in (event["details"].get("address"), host.ip if host is not None else None):
                    if addr:
                        by_address[address(addr)] = watched
        self.by_address, self.by_mac = by_address, by_mac
        mains = {w.main for w in by_mac.values()}
        self.recorded = {key for key in self.recorded if key[0] in mains}
        self.rebooted &= mains
