"""Each simulated host's XAPI server certificate, as xapi's gencert makes it (docs/xapi.md "TLS").

A real host serves XAPI over HTTPS with /etc/xensource/xapi-ssl.pem, a self-signed certificate gencert makes at
first boot: RSA 2048 bits, subject and issuer CN = the host name, a SubjectAltName with that name (DNS) and the
host's management IP, valid 3650 days (xen-api ocaml/gencert/selfcert.ml `host`, `selfsign`, `sans`). A fresh
install makes a new one (a new disk, a new first boot); an upgrade keeps it (host-installer upgrade.py
`buildRestoreList` restores etc/xensource/xapi-ssl.pem). One deviation, so that a client on Python 3.11 can name
the certificate itself as its CA file (`--ca-file`): basicConstraints CA:TRUE and subject/authority key
identifiers, which OpenSSL wants of a trust anchor; the fingerprint pin does not care either way.

The only simulator module importing `cryptography`; it knows nothing of the product.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from .hosts import SimHost

KEY_BITS = 2048  # selfcert.ml `host`: let length = 2048
VALID_DAYS = 3650  # selfcert.ml `host`: let expire_days = 3650
XAPI_CIPHERS = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"  # Tls_policy.Openssl.default_ciphers
XAPI_CURVE = "secp384r1"  # Tls_policy.Openssl.default_curve


@dataclass(frozen=True)
class HostCert:
    """One certificate and its key, in PEM; `fingerprint`: SHA-256 of the DER certificate, lower-case hex."""

    cert_pem: bytes
    key_pem: bytes
    fingerprint: str
    name: str

    def server_context(self) -> ssl.SSLContext:
        """A server-side TLS context presenting this certificate (ssl only loads chains from files), with the TLS
        policy xapi writes into its stunnel's configuration (docs/xapi.md "TLS"): TLS 1.2 only, xapi's two
        ciphers in the server's order, the secp384r1 curve; sessions resumable (stunnel's default session cache
        and tickets: xapi's configuration sets neither off)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # sslVersion = TLSv1.2
        ctx.set_ciphers(XAPI_CIPHERS)
        ctx.set_ecdh_curve(XAPI_CURVE)
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE  # options = CIPHER_SERVER_PREFERENCE
        with tempfile.TemporaryDirectory(prefix="sim-cert-") as tmp:
            path = Path(tmp) / "xapi-ssl.pem"  # key then certificate, as gencert writes the file
            path.write_bytes(self.key_pem + b"\n" + self.cert_pem)
            ctx.load_cert_chain(path)
        return ctx

    def colon_fingerprint(self) -> str:
        """As `openssl x509 -fingerprint -sha256` prints it: AB:CD:..."""
        return ":".join(self.fingerprint[i:i + 2] for i in range(0, len(self.fingerprint), 2)).upper()


def make_cert(name: str, addresses: list[str]) -> HostCert:
    """A new key and self-signed certificate for host `name` reachable at `addresses` (IPs; others become DNS)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt: list[x509.GeneralName] = [x509.DNSName(name)]
    for address in dict.fromkeys(addresses):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            alt.append(x509.DNSName(address))
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    der = cert.public_bytes(serialization.Encoding.DER)
    return HostCert(cert.public_bytes(serialization.Encoding.PEM),
                    key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()),
                    hashlib.sha256(der).hexdigest(), name)


_CERTS: "weakref.WeakKeyDictionary[SimHost, HostCert]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def addresses_of(h: SimHost) -> list[str]:
    """The addresses a client may use for the host: its own and loopback (the simulator listens on 127.0.0.x)."""
    return [h.address, "127.0.0.1"]


def cert_of(h: SimHost) -> HostCert:
    """The host's certificate, made at its first boot (the first time it is asked for) and kept until renew()."""
    with _LOCK:
        found = _CERTS.get(h)
        if found is None:
            found = _CERTS[h] = make_cert(h.name, addresses_of(h))
        return found


def renew(h: SimHost) -> HostCert:
    """A fresh install: the new system makes a new certificate at its first boot (its old one is gone)."""
    with _LOCK:
        found = _CERTS[h] = make_cert(h.name, addresses_of(h))
        return found


def replace(h: SimHost, cert: HostCert) -> None:
    """Injected: the host's certificate replaced by hand (`xe host-install-server-certificate`, a new CA...)."""
    with _LOCK:
        _CERTS[h] = cert
