"""`provisioner doctor`: every setting a boot needs, checked as a booting host sees it, each verdict with its fix.

`serve` runs the same checks once it is listening and logs what is not ok (docs/deploy.md "doctor").
"""

from __future__ import annotations

from provisioner.config import Config
from provisioner.doctor import files, network, pools
from provisioner.doctor.findings import FAIL, OK, SKIP, STATUSES, WARN, Finding
from provisioner.store import Store

__all__ = ["FAIL", "OK", "SKIP", "STATUSES", "WARN", "Finding", "run_checks", "worst"]


def run_checks(config: Config, store: Store | None = None, *, probes: bool = True) -> list[Finding]:
    """Every check, in the order a host boots: DHCP, TFTP loaders, public_url, media; then this machine and pools.
    `probes=False` leaves out the ones that talk to the network (TFTP, HTTP, pools). Without `store`, the data
    dir's is opened after the store check; when it cannot be (store.* says why) the checks needing it are left out."""
    results = [files.store_ready(config)]
    own = store is None
    if own and results[0].status != FAIL:
        store = Store.from_config(config)
    try:
        if store is not None:
            results += network.dhcp_consistent(config, store)
        results += [files.loaders_present(config), files.loaders_one_build(config), files.no_stray_files(config)]
        if store is not None:
            results += network.public_url_for_hosts(config, store)
        if probes:
            results += [network.tftp_reachable(config), network.http_reachable(config)]
        if store is not None:
            results += files.media_complete(store)
        results.append(files.disk_space(config))
        if probes and store is not None:
            results += pools.tls_trust(store)
            results += pools.clock(store)
    finally:
        if own and store is not None:
            store.close()
    return results


def worst(findings: list[Finding]) -> str:
    """fail if any check failed, else warn if any warned, else ok."""
    statuses = {f.status for f in findings}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK
