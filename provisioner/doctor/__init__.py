"""`provisioner doctor`: every setting a boot needs, checked as a booting host sees it, each verdict with its fix.

`serve` runs the same checks once it is listening and logs what is not ok (docs/deploy.md "doctor").
"""

from __future__ import annotations

from typing import Callable

from provisioner.config import Config
from provisioner.doctor import files, network, pools
from provisioner.doctor.findings import FAIL, OK, SKIP, STATUSES, WARN, Finding, fail
from provisioner.store import Store

__all__ = ["FAIL", "OK", "SKIP", "STATUSES", "WARN", "Finding", "run_checks", "worst"]


def _guarded(code: str, check: Callable[..., Finding | list[Finding]], *args) -> list[Finding]:
    """One check's findings; a check that cannot even run (a file this user may not read, ...) is a fail that
    says why, never a crash that hides the other checks."""
    try:
        found = check(*args)
    except OSError as exc:
        return [fail(code, f"the check could not run: {exc}", "run doctor as the service user; give that user read "
                     "access to the file named (docs/deploy.md)")]
    return found if isinstance(found, list) else [found]


def run_checks(config: Config, store: Store | None = None, *, probes: bool = True) -> list[Finding]:
    """Every check, in the order a host boots: DHCP, TFTP loaders, public_url, media; then this machine and pools.
    `probes=False` leaves out the ones that talk to the network (TFTP, HTTP, pools). Without `store`, the configured
    one is opened after the store check; when it cannot be (store.* says why) the checks needing it are left out."""
    results = _guarded("store.writable", files.store_ready, config)
    own = store is None
    if own and results[0].status != FAIL:
        store = Store.from_config(config)
    checks: list[tuple[str, Callable, tuple]] = []
    if store is not None:
        checks.append(("dhcp.snippet", network.dhcp_consistent, (config, store)))
    checks += [("loaders.missing", files.loaders_present, (config,)), ("loaders.mixed", files.loaders_one_build,
               (config,)), ("loaders.stray", files.no_stray_files, (config,))]
    if store is not None:
        checks.append(("public_url.loopback", network.public_url_for_hosts, (config, store)))
    if probes:
        checks += [("tftp.reachable", network.tftp_reachable, (config,)),
                   ("http.reachable", network.http_reachable, (config,))]
    if store is not None:
        checks.append(("media.incomplete", files.media_complete, (store, config)))
    checks.append(("disk.space", files.disk_space, (config,)))
    if probes and store is not None:
        checks += [("tls.pools", pools.tls_trust, (store,)), ("clock", pools.clock, (store,))]
    try:
        for code, check, args in checks:
            results += _guarded(code, check, *args)
    finally:
        if own and store is not None:
            store.close()
    return results


def worst(findings: list[Finding]) -> str:
    """fail if any check failed, else warn if any warned, else ok."""
    statuses = {f.status for f in findings}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK
