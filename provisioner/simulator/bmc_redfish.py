"""Redfish BMCs in front of simulated machines (docs/power.md "The simulator's BMC fronts"): the real sushy-tools
emulator (`sushy-emulator --fake`) as a process on loopback, one fake system per target, with basic
authentication from an htpasswd file (bcrypt digests: the only kind the emulator reads).

Two directions keep the emulator and the targets in step:
- the emulator -> the target: the fake driver's external notifier PUTs the whole system record to
  EXTERNAL_NOTIFICATION_URL on every change (fakedriver.py `_update` -> `_send_external_notification`); our
  endpoint applies a new `pending_power` (a Reset just accepted) and a new boot device or mode to the target;
- the target -> the emulator: the fake driver keeps its systems in a SQLite file in SUSHY_EMULATOR_STATE_DIR
  (memoize.PersistentDict: pickled records, re-read on every request, shared between processes by design); a
  sync thread writes the target's own power state there (a host that shut down by itself reads "Off"), drops the
  driver's pending power change (its random 1-11 s delay; the target's own timing rules instead) and clears a
  boot override the target consumed.

A target without override support refuses it: the front takes the override back out of the record, so the
client's read-back shows it was not kept (the fake driver answers the PATCH 204 before it notifies).

Gaps of the fake driver (docs/power.md "The simulator's BMC fronts"): ForceOff and GracefulShutdown both become a
pending "Off" (the front applies a hard power-off); BootSourceOverrideEnabled is ignored and always reads
"Continuous" (the front sets every override once, which is all the product asks for); its allowable targets
always include Pxe, so a BMC without override support is only seen when the override does not stick.
"""

from __future__ import annotations

import http.server
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt

from provisioner import netports

_NETWORK_TARGETS = {"Pxe": "network", "UefiHttp": "network", "Cd": "cd"}


@dataclass
class _System:
    target: Any
    uuid: str
    name: str
    mac: str
    applied: tuple = (None, None)  # (boot_device, boot_mode) last applied to the target
    power: str = ""                # the power state last written to the emulator
    extra: dict = field(default_factory=dict)


class RedfishFront:
    """The emulator serving every added target; add() before start(), stop() at the end."""

    def __init__(self, username: str, password: str, state_dir: Path | None = None, sync_seconds: float = 0.05):
        self._username, self._password = username, password
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="sim-redfish-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._systems: dict[str, _System] = {}
        self._sync_seconds = sync_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._process: subprocess.Popen | None = None
        self._notifier: http.server.ThreadingHTTPServer | None = None
        self.port = 0
        self.notifications = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, target: Any, mac: str, name: str | None = None, boot_mode: str = "UEFI") -> str:
        """Serve `target` as a system whose interface has `mac`; its system id (the emulator's uuid) back."""
        uuid = f"00000000-0000-4000-8000-{mac.replace(':', '').lower():0>12}"
        self._systems[uuid] = _System(target, uuid, name or f"sim-{mac}", mac, extra={"boot_mode": boot_mode})
        return uuid

    # --- process ---

    def start(self, timeout: float = 30.0) -> "RedfishFront":
        self._notifier = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._notifier.serve_forever, name="sim-redfish-notify", daemon=True).start()
        self.port = netports.free_port()  # below the ephemeral range: no client socket takes it first
        digest = bcrypt.hashpw(self._password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.state_dir / "htpasswd").write_text(f"{self._username}:{digest}\n")
        systems = [{"uuid": s.uuid, "name": s.name, "external_notifier": True,
                    "power_state": "On" if s.target.power_state() == "On" else "Off",
                    "boot_mode": s.extra["boot_mode"], "nics": [{"mac": s.mac, "ip": "127.0.0.1"}]}
                   for s in self._systems.values()]
        for s in self._systems.values():
            s.power = "On" if s.target.power_state() == "On" else "Off"
        config = {
            "SUSHY_EMULATOR_LISTEN_IP": "127.0.0.1", "SUSHY_EMULATOR_LISTEN_PORT": self.port,
            "SUSHY_EMULATOR_FAKE_DRIVER": True, "SUSHY_EMULATOR_FAKE_SYSTEMS": systems,
            "SUSHY_EMULATOR_STATE_DIR": str(self.state_dir), "SUSHY_EMULATOR_AUTH_FILE": str(self.state_dir / "htpasswd"),
            "EXTERNAL_NOTIFICATION_URL": f"http://127.0.0.1:{self._notifier.server_address[1]}/notify",
        }
        conf = self.state_dir / "emulator.conf"
        conf.write_text("".join(f"{key} = {value!r}\n" for key, value in config.items()))
        log = open(self.state_dir / "emulator.log", "wb")
        emulator = Path(sys.executable).with_name("sushy-emulator")
        self._process = subprocess.Popen([str(emulator), "--config", str(conf), "--fake"], stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sushy-emulator did not start (see {self.state_dir / 'emulator.log'})")
            time.sleep(0.1)
        threading.Thread(target=self._sync_loop, name="sim-redfish-sync", daemon=True).start()
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/redfish/v1/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answers (the root may want authentication)
        except OSError:
            return False

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._notifier is not None:
            self._notifier.shutdown()
            self._notifier.server_close()

    # --- emulator -> target ---

    def notified(self, record: dict) -> bool:
        """Apply one fake-driver notification (the whole system record) to its target; False when the target
        refused the boot override (a BMC without override support: the front takes it back out of the record,
        so a read-back shows the override was not kept)."""
        with self._lock:
            self.notifications += 1
            system = self._systems.get(record.get("uuid", ""))
            if system is None:
                return True
            pending = record.get("pending_power")
            if pending:
                self._apply_power(system.target, pending.get("power_state", ""))
                power = "On" if system.target.power_state() == "On" else "Off"
                # at once, before the Reset answers: the driver wrote "Off" for a restart and a pending state
                self._edit(system, lambda r: r.update(power_state=power, pending_power=None) or True)
            boot = (record.get("boot_device"), record.get("boot_mode"))
            if boot == system.applied:
                return True
            device = _NETWORK_TARGETS.get(boot[0] or "")
            if device and not system.target.supports_override():
                self._edit(system, lambda r: r.pop("boot_device", None))
                system.applied = (None, boot[1])
                return False
            if device:
                system.target.set_boot_override(device, once=True, uefi=boot[1] == "UEFI")
            elif system.target.supports_override():
                system.target.set_boot_override(None)
            system.applied = boot
            return True

    @staticmethod
    def _apply_power(target: Any, state: str) -> None:
        if state == "On":
            target.power_on()
        elif state == "Off":
            target.power_off(graceful=False)  # the fake driver does not keep ForceOff apart from GracefulShutdown
        elif "Restart" in state:
            target.reset()

    # --- target -> emulator ---

    def _edit(self, system: _System, change) -> None:
        """Read-modify-write one record of the fake driver's state file under a write lock (BEGIN IMMEDIATE: the
        emulator's own writes wait, and retry, meanwhile)."""
        db = sqlite3.connect(self.state_dir / "fakedriver.sqlite", timeout=5, isolation_level=None)
        try:
            db.execute("begin immediate")
            key = pickle.dumps(system.uuid)
            row = db.execute("select value from cache where key=?", (key,)).fetchone()
            if row is not None:
                record = pickle.loads(row[0])
                if change(record):
                    db.execute("insert or replace into cache values (?, ?)", (key, pickle.dumps(record)))
            db.execute("commit")
        finally:
            db.close()

    def _sync_loop(self) -> None:
        while not self._stop.wait(self._sync_seconds):
            try:
                self.sync()
            except sqlite3.Error:
                continue  # the emulator holds the file this instant; the next tick writes it

    def sync(self) -> None:
        """Write each target's own power state and consumed override into the emulator's records."""
        with self._lock:
            for system in self._systems.values():
                power = "On" if system.target.power_state() == "On" else "Off"
                consumed = bool(_NETWORK_TARGETS.get(system.applied[0] or "")) and \
                    system.target.boot_override()[0] is None

                def change(record: dict, power: str = power, consumed: bool = consumed) -> bool:
                    changed = record.get("power_state") != power or bool(record.get("pending_power"))
                    record.update(power_state=power, pending_power=None)
                    if consumed and record.get("boot_device") == system.applied[0]:
                        record.pop("boot_device", None)
                        changed = True
                    return changed

                self._edit(system, change)
                if consumed:
                    system.applied = (None, system.applied[1])
                system.power = power


def _handler(front: RedfishFront) -> type:
    class Notified(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 -- http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                kept = front.notified(json.loads(body))
            except (ValueError, TypeError):
                self.send_response(400)
            else:
                self.send_response(204 if kept else 409)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    return Notified
