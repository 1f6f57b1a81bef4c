"""The `provisioner` command line (click). Thin: parse, call one service function, format.

Each command group lives in its own module; importing them here registers them on `main`.
"""

from provisioner.cli import hosts, services, upgrade  # noqa: F401  (registers the commands)
from provisioner.cli import reinstall  # noqa: F401,E402  (registers `provisioner reinstall`)
from provisioner.cli import states  # noqa: F401,E402  (registers `provisioner states`)
from provisioner.cli import bmc  # noqa: F401,E402  (registers `provisioner bmc`, `provisioner hosts netboot`)
from provisioner.cli import pools  # noqa: F401,E402  (registers `provisioner pools add` and `pools trust`)
from provisioner.cli import updates  # noqa: F401,E402  (registers `provisioner updates`)
from provisioner.cli import dhcp  # noqa: F401,E402  (registers `provisioner dhcp-config`)
from provisioner.cli import access  # noqa: F401,E402  (registers `provisioner tokens`, `audit`, `webhooks`)
from provisioner.cli import doctor  # noqa: F401,E402  (registers `provisioner doctor`)
from provisioner.cli import db  # noqa: F401,E402  (registers `provisioner db migrate`, `db copy`)
from provisioner.cli.base import main

__all__ = ["main"]
