"""Simulated PXE machines against the real runtime, shared by test_simulator_machine.py and
test_simulator_fresh.py: a boot server with three registered hosts (BIOS, UEFI, OTHER) and media MEDIA, an
event recorder for the machines' on_event hook, and a clock that only records its sleeps."""

from __future__ import annotations

import time

from helpers import make_media_tree
from provisioner import demo, media, registry
from provisioner.runtime import Runtime
from provisioner.store import Store

BIOS, UEFI, OTHER = "52:54:00:5a:00:01", "52:54:00:5a:00:02", "52:54:00:5a:00:03"
MEDIA = "xs-8.4"


def wait_for(predicate, timeout: float = 60.0) -> None:
    """Poll `predicate` (real time) until it holds; AssertionError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def until(what: str, check, seconds: float = 60.0, interval: float = 0.2):
    """Poll check() (real time) until it returns something true, and return that; AssertionError naming `what` after
    `seconds` (a generous bound for a loaded machine, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {seconds} s: {what}")


class RecordingClock:
    """A simulated clock that only records how long it was asked to sleep."""

    def __init__(self):
        self.slept = []

    def sleep(self, seconds):
        self.slept.append(seconds)


class Events:
    def __init__(self):
        self.seen = []
        self.hooks = []

    def __call__(self, kind, mac, details):
        self.seen.append((kind, mac, details))
        for hook in self.hooks:
            hook(kind, mac, details)

    def kinds(self, kind, mac=None):
        return [d for k, m, d in self.seen if k == kind and (mac is None or m == mac)]


def sim_server(tmp_path, *, pxelinux_http=True):
    """A started Runtime with MEDIA imported and the three hosts registered: (config, store, runtime)."""
    config = demo.demo_config(tmp_path).replace(pxelinux_http=pxelinux_http)
    (config.tftp_root / "grubx64.efi").write_bytes(b"MZ site grub\n")  # what iPXE on UEFI chains to
    (config.tftp_root / "pxelinux.0").write_bytes(b"site pxelinux\n")  # and iPXE on BIOS
    store = Store(config.db_path)
    media.import_media(store, config, MEDIA, make_media_tree(tmp_path / "tree"))
    for mac, name, firmware in ((BIOS, "h-bios", "bios"), (UEFI, "h-uefi", "uefi"), (OTHER, "h-other", "bios")):
        registry.add_host(store, {"mac": mac, "name": name, "pool": "p", "disk": f"/dev/disk/by-id/{name}",
                                  "firmware": firmware})
    return config, store, Runtime(config, store).start()


# The version a simulated install reports (the media of make_media_tree)
VERSION = {"product_name": "XenServer", "product_version": "8.4.0", "platform_name": "XCP",
           "platform_version": "3.4.0", "build_number": "12345"}
