"""The simulated pool a bench drives, registered as an operator would: the pool added with its master's pinned
certificate, its hosts discovered through XAPI, each given the boot disk the answer file names."""

from __future__ import annotations

from provisioner import registry
from provisioner.coordinator import pools


def register_pool(store, sim, pool: str, password: str) -> None:
    """`pool add` + `pool discover` against the simulator `sim`, then a disk for every discovered host."""
    pools.add_pool(store, pool, sim.master_url(), "root", password, fingerprint=sim.master_fingerprint())
    driver = pools.connect(store, pool, timeout=5)
    try:
        pools.discover(store, pool, driver)
    finally:
        driver.close()
    for h in store.list_hosts(pool=pool):
        registry.update_host(store, h.mac, {"disk": f"/dev/disk/by-id/scsi-{h.name}"})
