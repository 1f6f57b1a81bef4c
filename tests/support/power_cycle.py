"""One power cycle of a simulated host, handed to a QEMU VM: the XAPI simulator's external boot command.

The simulator (provisioner/simulator/machine.py) runs this with MAC and FIRMWARE in the environment each time
a host of the rolling-upgrade scenario enters its firmware (host.reboot). Like the real host, the VM
network-boots with that MAC; when the installer stand-in ran (answer file, both scripts exit 0, power off),
the installer's reboot boots the VM again, until a boot ends on the local disk. Prints the version the stand-in
read from the media's .treeinfo as JSON (the host comes back at it), or nothing when no install succeeded.
Each boot is appended as a JSON line to <workdir>/power-cycles.jsonl for the test to check and report.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import e2e_lab

MAX_BOOTS = 3  # install, then local; a third boot would mean the installer was served again (reinstall loop)


def records_file(workdir: Path) -> Path:
    return workdir / "power-cycles.jsonl"


def power_cycle(mac: str, firmware: str, workdir: Path, *, install_timeout: float, local_timeout: float) -> dict:
    """Boot until a boot ends locally (or fails); returns the cycle's record, version included."""
    dashes = mac.replace(":", "-")
    done = records_file(workdir)
    cycle = 1 + sum(1 for line in (done.read_text().splitlines() if done.exists() else [])
                    if json.loads(line)["mac"] == mac)
    record: dict = {"mac": mac, "cycle": cycle, "boots": [], "version": None}
    for number in range(1, MAX_BOOTS + 1):
        boot = e2e_lab.start_vm(f"rolling-{dashes}-c{cycle}-b{number}", mac, firmware, workdir)
        try:
            # An install boot powers off by itself; a local boot stops at the firmware's "no bootable device".
            outcome = e2e_lab.wait_boot(boot, install_timeout if number == 1 else local_timeout)
        finally:
            boot.process.stop()
        console = boot.process.text()
        version = e2e_lab.standin_version(console) if outcome == "installed" else None
        record["boots"].append({"name": boot.name, "number": number, "outcome": outcome, "started": boot.started,
                                "ended": time.time(), "console_log": str(boot.process.log_path),
                                "version": version})
        if outcome != "installed":
            break
        record["version"] = version
    with open(done, "a") as out:
        out.write(json.dumps(record) + "\n")
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True, help="the lab's network namespace (its tap, dnsmasq, server)")
    parser.add_argument("--workdir", required=True, type=Path, help="console logs and power-cycles.jsonl")
    parser.add_argument("--install-timeout", type=float, default=600.0)
    parser.add_argument("--local-timeout", type=float, default=180.0)
    args = parser.parse_args()
    e2e_lab.NETNS = args.netns  # the test process's namespace (e2e_lab names it after that process's pid)
    record = power_cycle(os.environ["MAC"].lower(), os.environ.get("FIRMWARE") or "bios",
                         args.workdir, install_timeout=args.install_timeout, local_timeout=args.local_timeout)
    print(json.dumps(record["version"]) if record["version"] else "", end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
