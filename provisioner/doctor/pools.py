"""Doctor checks on the registered pools: TLS trust of each coordinator's certificate and its clock against ours
(docs/deploy.md "doctor"). Without registered pools both are skipped, saying why."""

from __future__ import annotations

import calendar
import ssl
import time
import urllib.parse

from provisioner import xapi_tls
from provisioner.coordinator import pools as pool_service
from provisioner.doctor.findings import Finding, fail, ok, skip, warn
from provisioner.store import Store
from provisioner.xapi import XapiError, XapiUnreachable

TIMEOUT = 5.0
# XAPI's session and task timestamps, TLS certificate validity and the run's "host back up" waits compare our
# clock with the hosts'; a few seconds is NTP noise, minutes are a broken time source
CLOCK_WARN_S = 30
CLOCK_FAIL_S = 300
NTP_FIX = ("run NTP on this server and on the pool (systemd-timesyncd or chrony here; `xe host-param-list` "
           "shows the hosts' NTP settings) so both follow one time source")


def tls_trust(store: Store) -> list[Finding]:
    found = store.list_pools()
    if not found:
        return [skip("tls.pools", "no pool registered")]
    results = []
    for pool in found:
        if urllib.parse.urlsplit(pool.url).scheme != "https":
            results.append(warn("tls.pools", f"pool {pool.name} is reached over {pool.url}: its password crosses "
                                "the network in clear", f"re-add the pool with its https:// URL and trust it: "
                                f"{xapi_tls.TRUST_FIX}"))
            continue
        try:
            got = xapi_tls.handshake(pool.url, pool_service.trust_of(pool), TIMEOUT)
        except (xapi_tls.TrustFailure, ssl.SSLCertVerificationError) as exc:
            results.append(fail("tls.pools", f"pool {pool.name}: " + (xapi_tls.explain(exc, pool.url) or str(exc)),
                                xapi_tls.TRUST_FIX.replace("NAME", pool.name)))
        except OSError as exc:
            results.append(warn("tls.pools", f"pool {pool.name} ({pool.url}) does not answer ({exc})",
                                f"check that {pool.url} is the pool coordinator and reachable from this server"))
        else:
            results.append(ok("tls.pools", f"pool {pool.name}: certificate {xapi_tls.colons(got)[:23]}... trusted "
                              f"({pool.as_dict()['trust']})"))
    return results


def _epoch(value) -> float:
    """XAPI datetimes are UTC dateTime.iso8601 ('20260101T00:00:00Z', docs/xapi.md "Wire format")."""
    text = str(getattr(value, "value", value)).rstrip("Z")
    return calendar.timegm(time.strptime(text, "%Y%m%dT%H:%M:%S"))


def clock(store: Store) -> list[Finding]:
    found = store.list_pools()
    if not found:
        return [skip("clock", "no pool registered to compare this server's clock with")]
    results = []
    for pool in found:
        try:
            driver = pool_service.connect(store, pool.name, timeout=TIMEOUT)
        except Exception as exc:  # credentials.SecretError, ...: the pool check is what reports it
            results.append(skip("clock", f"pool {pool.name}: cannot log in ({exc})"))
            continue
        try:
            master = driver.call("pool.get_master", driver.call("pool.get_all")[0])
            before = time.time()
            theirs = _epoch(driver.call("host.get_servertime", master))
            ours = (before + time.time()) / 2
        except (XapiError, XapiUnreachable, ValueError) as exc:
            results.append(skip("clock", f"pool {pool.name}: cannot read its coordinator's clock ({exc})"))
            continue
        finally:
            driver.close()
        skew = theirs - ours
        text = f"pool {pool.name}'s coordinator clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} ours"
        if abs(skew) > CLOCK_FAIL_S:
            results.append(fail("clock", text, NTP_FIX))
        elif abs(skew) > CLOCK_WARN_S:
            results.append(warn("clock", text, NTP_FIX))
        else:
            results.append(ok("clock", text))
    return results
