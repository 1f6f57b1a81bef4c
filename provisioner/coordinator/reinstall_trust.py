"""The reinstall flow's trust in the freshly installed host's certificate (docs/xapi.md "TLS").

A fresh install makes a new self-signed certificate at the host's first boot (xen-api gencert), so no fingerprint
the operator could give beforehand would match, and the pool's own trust is for its master, not for this host.
Before the flow sends the host a password (its first login at WAIT_XAPI, then pool.join with the master's
credentials) it reads the certificate the host presents, pins its SHA-256 fingerprint in the reinstall's row and
an event (`reinstall.certificate_pinned`), and from then on talks to it only over connections that present exactly
that certificate. This is trust on first use over the network the flow itself just installed the host on: it
protects everything after that first contact (a host swapped or a certificate changed later is refused), not that
first contact itself. An http:// host URL has no certificate: the password then travels in clear.
"""

from __future__ import annotations

import urllib.parse
from typing import Callable

from provisioner import credentials
from provisioner.store import Store
from provisioner.store.reinstalls import Reinstall
from provisioner.xapi_tls import Trust, colons, fetch_certificate

FETCH_TIMEOUT = 10.0


def new_host_trust(store: Store, r: Reinstall, say: Callable[[str], None]) -> Trust | None:
    """How the flow trusts the host at r.host_url: its pinned certificate (pinned now if it is the first contact);
    None while the host presents no certificate yet (not answering); Trust() for an http URL."""
    if urllib.parse.urlsplit(r.host_url).scheme != "https":
        return Trust()
    if r.host_fingerprint:
        return Trust(fingerprint=r.host_fingerprint)
    try:
        cert = fetch_certificate(r.host_url, FETCH_TIMEOUT)
    except OSError:
        return None  # still installing or booting: the caller waits
    seen = credentials.describe_certificate(cert.der)
    store.set_reinstall_step(r.id, None, host_fingerprint=cert.fingerprint)
    store.add_event("reinstall.certificate_pinned", mac=r.mac, details={
        "reinstall": r.id, "url": r.host_url, "fingerprint": cert.fingerprint, "subject": seen.get("subject", ""),
        "how": "trust on first use: the first certificate the freshly installed host presented"})
    say(f"{r.host_name}: pinned the new host's certificate SHA-256 {colons(cert.fingerprint)} "
        f"({seen.get('subject', '')}), before sending it any password")
    return Trust(fingerprint=cert.fingerprint)
