"""Secrets at rest (pool and BMC passwords): Fernet (AES-128-CBC + HMAC-SHA256) with a key file next to the database.

The key is made on first use in <data_dir>/secret.key (mode 0600, created atomically); the database only holds
`fernet:v1:<token>`, so a copy of provisioner.db without the key file reveals nothing. The only product module that
imports `cryptography` (pyca/cryptography: maintained, audited, and Fernet is made for exactly this); it also
reads the subject of a certificate an operator is asked to trust (describe_certificate, docs/xapi.md "TLS").
Never log or echo the values handled here.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography import x509
from cryptography.fernet import Fernet, InvalidToken

log = logging.getLogger(__name__)
KEY_FILE = "secret.key"
PREFIX = "fernet:v1:"


class SecretError(ValueError):
    """A stored secret cannot be read back (key file missing or not the one it was encrypted with)."""


def key_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / KEY_FILE


def is_encrypted(stored: str) -> bool:
    return stored.startswith(PREFIX)


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by other users (mode %o): chmod 600 it", path, stat.S_IMODE(mode))
    return path.read_bytes().strip()


POOL = ("pool password", "`provisioner pools add`")
BMC = ("BMC password", "`provisioner hosts bmc`")
"""What a secret is and how the operator enters it again: the `what` of decrypt()'s messages."""


def _key(data_dir: str | Path, *, create: bool, what: tuple[str, str] = POOL) -> bytes:
    path = key_path(data_dir)
    if path.exists():
        return _read_key(path)
    if not create:
        raise SecretError(f"the key file {path} is missing: the stored {what[0]} cannot be decrypted; "
                          f"restore the key file or enter the password again ({what[1]})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, Fernet.generate_key() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic: two first uses at once agree on one key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read_key(path)


def encrypt(data_dir: str | Path, plaintext: str) -> str:
    """The value to store for `plaintext` (the key file is created on first use)."""
    return PREFIX + Fernet(_key(data_dir, create=True)).encrypt(plaintext.encode()).decode("ascii")


def decrypt(data_dir: str | Path, stored: str, *, what: tuple[str, str] = POOL) -> str:
    """The plaintext of a value made by encrypt(); SecretError when it cannot be read. Not for plain values.
    `what` (POOL, BMC) names the secret and its remedy in the error."""
    if not is_encrypted(stored):
        raise SecretError("the value is not an encrypted secret")
    try:
        return Fernet(_key(data_dir, create=False, what=what)).decrypt(stored[len(PREFIX):].encode("ascii")).decode()
    except (InvalidToken, ValueError) as exc:
        if isinstance(exc, SecretError):
            raise
        raise SecretError(f"the stored {what[0]} does not decrypt with {key_path(data_dir)} (another "
                          f"server's key?): restore the right key file or enter the password again "
                          f"({what[1]})") from None


def describe_certificate(der: bytes) -> dict[str, str]:
    """Subject, issuer, validity end and SubjectAltName of a DER certificate, for the operator deciding whether to
    trust it (trust-on-first-use); values are what the certificate claims, nothing here is verified."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return {"subject": "(unreadable certificate)"}
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n.value) for n in alt]
    except x509.ExtensionNotFound:
        names = []
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat(), "alt_names": ", ".join(names)}
