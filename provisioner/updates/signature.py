"""Verify a repository's repomd.xml.asc against the trusted key(s) in `updates_keyring` with gpgv (Debian's
OpenPGP verifier, a subprocess: docs/updates.md "What is checked").

XAPI configures its repositories with repo_gpgcheck=1 and the vendor key (repository_helpers.ml
write_yum_config), so an update repository is only usable with a valid detached signature of repodata/repomd.xml;
and repomd.xml carries the checksum of every other metadata file, which carry the packages' checksums. gpgv only
takes binary keyrings: an armored key file (what vendors publish, what XAPI's gpgkey_path holds) is de-armored
here first.
"""

from __future__ import annotations

import base64
import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

GPGV = "gpgv"
_TIMEOUT = 60


class SignatureError(ValueError):
    """The signature cannot be verified (bad signature, unknown key, no keyring, no gpgv); the message says why.
    tampered: the signature is a valid one of OTHER content (repomd.xml altered after signing)."""

    def __init__(self, message: str, *, tampered: bool = False):
        super().__init__(message)
        self.tampered = tampered


@dataclasses.dataclass(frozen=True)
class Verified:
    fingerprint: str  # the primary key that made the signature (VALIDSIG's last field), upper-case hex


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP packets of a keyring file: armored blocks decoded and concatenated, binary passed through."""
    if b"-----BEGIN PGP" not in data:
        return data
    out, body, inside, headers = [], [], False, False
    for raw in data.decode("ascii", "replace").splitlines():
        line = raw.strip()
        if line.startswith("-----BEGIN PGP"):
            inside, headers, body = True, True, []
        elif line.startswith("-----END PGP"):
            out.append(base64.b64decode("".join(body)))
            inside = False
        elif inside and headers:
            if not line:
                headers = False
            elif ":" not in line:  # no armor headers at all: this is already the body
                headers = False
                body.append(line)
        elif inside and not line.startswith("="):  # "=XXXX" is the CRC-24 line
            body.append(line)
    return b"".join(out)


def verify(keyring: Path | None, signature: bytes, data: bytes) -> Verified:
    """Verify `signature` (a detached signature, armored or binary) of `data` with the keys of `keyring`."""
    if keyring is None:
        raise SignatureError("updates_keyring is not set, so the signature cannot be checked: set updates_keyring to "
                             "the vendor's public key file (or pass --allow-unsigned, which is recorded)")
    if shutil.which(GPGV) is None:
        raise SignatureError(f"{GPGV} is not installed (Debian package gpgv): it verifies update signatures")
    try:
        keys = dearmor(Path(keyring).read_bytes())
    except OSError as exc:
        raise SignatureError(f"updates_keyring {keyring} cannot be read: {exc.strerror}") from None
    except ValueError:
        raise SignatureError(f"updates_keyring {keyring} is not an OpenPGP key file (bad armor)") from None
    with tempfile.TemporaryDirectory(prefix="provisioner-gpgv.") as tmp:
        work = Path(tmp)
        (work / "keyring.gpg").write_bytes(keys)
        (work / "repomd.xml.asc").write_bytes(signature)
        (work / "repomd.xml").write_bytes(data)
        try:
            proc = subprocess.run(
                [GPGV, "--homedir", str(work), "--status-fd", "1", "--keyring", str(work / "keyring.gpg"),
                 str(work / "repomd.xml.asc"), str(work / "repomd.xml")],
                capture_output=True, timeout=_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SignatureError(f"{GPGV} did not finish in {_TIMEOUT} s") from None
    status = proc.stdout.decode("utf-8", "replace").splitlines()
    valid = [line.split() for line in status if line.startswith("[GNUPG:] VALIDSIG ")]
    if proc.returncode == 0 and valid:
        return Verified(fingerprint=valid[0][-1].upper())
    tampered = any(line.startswith("[GNUPG:] BADSIG") for line in status)
    if any(line.startswith("[GNUPG:] NO_PUBKEY") or line.startswith("[GNUPG:] ERRSIG") for line in status):
        why = "it was made by a key that is not in updates_keyring"
    elif any(line.startswith("[GNUPG:] BADSIG") for line in status):
        why = "BAD signature: repomd.xml was altered after signing"
    else:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["gpgv failed"]
        why = why[0]
    raise SignatureError(f"repodata/repomd.xml.asc does not verify against updates_keyring {keyring}: {why}",
                         tampered=tampered)
