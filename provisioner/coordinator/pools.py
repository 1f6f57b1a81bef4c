"""Pools: XAPI connection details (password encrypted at rest, kept out of output) and host discovery.

The password is stored encrypted (provisioner.credentials, key file next to the database). A row written in plain
text by an older version is still read, and encrypted in place the first time it is read (connect()).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner import credentials, xapi_tls

from provisioner.model import BOOT_METHODS, Host, ValidationError, normalize_mac
from provisioner.store import NotFoundError, PoolRecord, Store
from provisioner.coordinator import wiring
from provisioner.xapi import DEFAULT_TIMEOUT, PoolDriver, XenApiDriver


def add_pool(store: Store, name: str, url: str, username: str, password: str, *, fingerprint: str | None = None,
             ca_pem: str | None = None, trust_source: str | None = None) -> PoolRecord:
    """Register (or update) a pool's master URL, credentials and certificate trust; the returned record's
    as_dict() has no password. An https URL needs exactly one of `fingerprint` (a pinned SHA-256, any of the
    usual spellings) or `ca_pem` (a CA's PEM text); `trust_source` says how the pin was obtained (for the event)."""
    Host.from_fields({"mac": "00:00:00:00:00:01", "name": "check", "pool": name})  # same name rules as hosts
    check_url(url)
    if not username or not password:
        raise ValidationError("username and password are required", "password")
    trust = check_trust(url, fingerprint, ca_pem)
    return store.add_pool(name, url, username, credentials.encrypt(_data_dir(store), password),
                          tls_fingerprint=trust.fingerprint, tls_ca=trust.ca_pem,
                          trust_source=trust_source or (trust.kind if trust.kind != "system" else None))


def check_trust(url: str, fingerprint: str | None, ca_pem: str | None) -> xapi_tls.Trust:
    """The Trust for `url` (docs/xapi.md "TLS"): for https exactly one of a fingerprint or a CA; for http none
    (there is no certificate; the caller warns that the password travels in clear, plain_http_warning)."""
    given = [x for x in (fingerprint, ca_pem) if x]
    https = urllib.parse.urlsplit(url).scheme == "https"
    if not https:
        if given:
            raise ValidationError("an http:// URL has no certificate to trust: use https:// with --fingerprint "
                                  "or --ca-file", "url")
        return xapi_tls.Trust()
    if len(given) != 1:
        raise ValidationError("an https pool needs exactly one way to trust its self-signed certificate: "
                              "--fingerprint SHA256, --ca-file FILE or --trust-on-first-use "
                              "(REST: \"fingerprint\" or \"ca_pem\")", "fingerprint")
    try:
        if fingerprint:
            return xapi_tls.Trust(fingerprint=xapi_tls.normalize_fingerprint(fingerprint))
        return xapi_tls.Trust(ca_pem=xapi_tls.check_ca_pem(ca_pem or ""))
    except ValueError as exc:
        raise ValidationError(str(exc), "fingerprint" if fingerprint else "ca_pem") from None


def plain_http_warning(url: str) -> str | None:
    """http:// is allowed (xapi also answers on port 80) but the password then crosses the network in clear."""
    if urllib.parse.urlsplit(url).scheme == "http":
        return ("warning: http:// sends the pool password in clear text over the network; XenServer serves XAPI "
                "over https too (use https:// with --fingerprint or --ca-file)")
    return None


def set_trust(store: Store, name: str, *, fingerprint: str | None = None, ca_pem: str | None = None,
              trust_source: str | None = None) -> PoolRecord:
    """`pools trust`: replace how the pool's certificate is trusted (after a reinstall or a new certificate)."""
    pool = get_pool(store, name)
    trust = check_trust(pool.url, fingerprint, ca_pem)
    return store.set_pool_trust(name, tls_fingerprint=trust.fingerprint, tls_ca=trust.ca_pem,
                                trust_source=trust_source or trust.kind)


def peek_certificate(url: str, *, timeout: float = 10.0) -> dict[str, str]:
    """For trust-on-first-use: the certificate the server at `url` presents (fingerprint and what it claims:
    subject, issuer, names), read without sending anything. ValidationError when there is none to read."""
    try:
        cert = xapi_tls.fetch_certificate(url, timeout)
    except ValueError as exc:
        raise ValidationError(str(exc), "url") from None
    except OSError as exc:
        raise ValidationError(f"could not read the certificate of {url}: {exc}", "url") from None
    return {"fingerprint": cert.fingerprint, "fingerprint_colons": xapi_tls.colons(cert.fingerprint),
            **credentials.describe_certificate(cert.der)}


def check_certificate(url: str, *, fingerprint: str | None = None, ca_pem: str | None = None,
                      timeout: float = 5.0) -> str | None:
    """Before a pool is stored: one TLS handshake with its master, checked with the trust given (nothing is sent).
    ValidationError naming the fix when the certificate is refused; a warning (str) when the master does not answer
    (stored anyway: it may be down); None when it presented a trusted certificate or the URL is http."""
    trust = check_trust(url, fingerprint, ca_pem)
    if trust.kind == "system":
        return None
    try:
        xapi_tls.handshake(url, trust, timeout)
    except OSError as exc:
        why = xapi_tls.explain(exc, url)
        if why:
            raise ValidationError(why, "fingerprint" if fingerprint else "ca_pem") from None
        return f"warning: could not check the certificate of {url} now ({exc}); it is checked at every connection"
    return None


def trust_of(pool: PoolRecord) -> xapi_tls.Trust:
    return xapi_tls.Trust(fingerprint=pool.tls_fingerprint or None, ca_pem=pool.tls_ca or None)


def set_boot_method(store: Store, name: str, method: str) -> PoolRecord:
    """The pool's default boot method, for its hosts whose own boot_method is unset (model.BOOT_METHODS)."""
    if method not in BOOT_METHODS:
        raise ValidationError(f"{method!r} is not one of {', '.join(BOOT_METHODS)}", "boot_method")
    return store.set_pool_boot_method(name, method)


def check_url(url: Any) -> str:
    """A pool master URL: http(s), and no user:password@ in it (the URL is stored, evented and shown in clear)."""
    if not isinstance(url, str):
        raise ValidationError(f"expected a URL string, got {type(url).__name__}", "url")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket; not echoed, it may hold a password
        raise ValidationError("is not a valid http(s) URL", "url") from None
    if "@" in parts.netloc:
        # Never echo the URL here: the error is printed and returned, and it may be the password.
        raise ValidationError("must not contain credentials (user:password@host): give the user name as "
                              "username (--username) and the password in the password file (--password-file, "
                              "PROVISIONER_POOL_PASSWORD, or \"password\" in the REST body)", "url")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"{url[:200]!r} is not an http(s) URL", "url")
    return url


def get_pool(store: Store, name: str) -> PoolRecord:
    pool = store.get_pool(name)
    if pool is None:
        raise NotFoundError(f"no pool named {name!r} (see `provisioner pools add`)")
    return pool


def _data_dir(store: Store) -> Path:
    return Path(store.data_dir)  # the key file lives with the database it protects


def pool_password(store: Store, name: str) -> str:
    """The pool's password in clear, for the login only (credentials.SecretError when the key file is missing)."""
    pool = get_pool(store, name)
    if credentials.is_encrypted(pool.password):
        return credentials.decrypt(_data_dir(store), pool.password)
    # a plain-text row from before encryption at rest: encrypt it now, then use it
    store.add_pool(pool.name, pool.url, pool.username, credentials.encrypt(_data_dir(store), pool.password),
                   tls_fingerprint=pool.tls_fingerprint, tls_ca=pool.tls_ca)
    store.add_event("pool.password_encrypted", details={"pool": name})
    return pool.password


def connect(store: Store, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> XenApiDriver:
    """A driver logged in lazily with the pool's stored credentials (built by wiring.driver)."""
    pool = get_pool(store, name)
    return wiring.driver(pool.url, pool.username, pool_password(store, name), timeout=timeout,
                         trust=trust_of(pool))


@dataclass
class Discovery:
    """What `pools discover` did: hosts added, already registered as XAPI says, and conflicts left alone."""

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "unchanged": self.unchanged, "conflicts": self.conflicts}


def discover(store: Store, name: str, driver: PoolDriver, *, firmware: str = "bios") -> Discovery:
    """Register every XAPI host by its management PIF MAC; report, never overwrite, staff-registered conflicts.

    XAPI has no field for the boot disk (PRIMARY_DISK lives in dom0's /etc/xensource-inventory), so added
    hosts have none: the plan lists them until the operator sets it.
    """
    get_pool(store, name)
    result = Discovery()
    for h in driver.hosts():
        if not h.mac:
            result.conflicts.append(f"{h.name}: XAPI shows no management PIF MAC")
            continue
        mac = normalize_mac(h.mac)
        known = store.get_host(mac)
        if known is not None:
            if (known.pool, known.name) == (name, h.name):
                result.unchanged.append(h.name)
            else:
                result.conflicts.append(f"{h.name} ({mac}): registered as {known.name} in pool {known.pool}")
            continue
        same_name = [x for x in store.list_hosts(pool=name) if x.name == h.name]
        if same_name:
            result.conflicts.append(f"{h.name}: registered with MAC {same_name[0].mac}, XAPI says {mac}")
            continue
        store.add_host(Host.from_fields({"mac": mac, "name": h.name, "pool": name, "firmware": firmware}))
        result.added.append(h.name)
    store.add_event("pool.discovered", details={"pool": name, **result.as_dict()})
    return result
