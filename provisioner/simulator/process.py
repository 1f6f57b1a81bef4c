"""`python -m provisioner.simulator.process`: one power cycle of a simulated machine as a separate process.

It is set up from the same environment an external_command gets (machine.Machine._external, external.py) and
answers the same way: the JSON version an install put on the disk on stdout (empty when unchanged), or exit
EXIT_NO_SYSTEM when the disk holds no bootable system (installer_breaks). Its firmware boot order is $BOOT_ORDER
(a bootorder.SPECS name; unset: the Machine default, BIOS disk first, docs/simulator.md "Firmware boot order"),
fresh in every process: what one power cycle changes in it (a Once override used, the UEFI installer's entry put
first) is not carried to the next.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from provisioner.simulator.external import EXIT_NO_SYSTEM
from provisioner.simulator.errors import NoBootableSystem
from provisioner.simulator.machine import Machine


def main(environ: Mapping[str, str] = os.environ) -> int:
    """One power cycle (docs/simulator.md "Host power and boot states") of the machine the environment describes; prints
    its version or nothing."""
    host, _, port = environ["TFTP_ADDR"].rpartition(":")
    machine = Machine(environ["MAC"], (host, int(port)), http_base=environ.get("HTTP_BASE") or None,
                      loader=environ.get("LOADER") or "pxelinux", firmware=environ.get("FIRMWARE") or None,
                      install_seconds=float(environ.get("INSTALL_SECONDS", "600")),
                      failures=json.loads(environ.get("FAILURES") or "{}"),
                      boot_order=environ.get("BOOT_ORDER") or None)
    machine.disk_broken = bool(environ.get("DISK_BROKEN"))  # the parent's Machine remembers it between cycles
    try:
        version = machine.power_on()
    except NoBootableSystem:
        return EXIT_NO_SYSTEM
    print(json.dumps(version) if version is not None else "", end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
