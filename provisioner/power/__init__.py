"""Boot control through a host's BMC (docs/power.md): `base` the BootControl Protocol and PowerError, `redfish`
(the only sushy importer), `ipmi` (the only pyghmi importer), `confirm` the one power-state confirm loop both
share, `netboot` the one-time network boot and power cycle built from them."""
