"""SHA-crypt ($5$ SHA-256, $6$ SHA-512) in pure Python: check and make the root-password hashes of fresh installs.

The installer writes `<root-password type="hash">` with `chpasswd -e` (docs/installer.md "Fresh-install answer files"),
so a crypt(3) string is all a fresh-install answer file ever carries. Python's `crypt` module is deprecated (PEP 594,
gone in 3.13) and passlib is unmaintained, so this follows Ulrich Drepper's public specification "Unix crypt using
SHA-256 and SHA-512" (the algorithm of glibc and `openssl passwd -5/-6`) with hashlib only; the spec's test vectors are
in tests/test_cryptpw.py. Never log or echo the values handled here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROUNDS_DEFAULT, ROUNDS_MIN, ROUNDS_MAX = 5000, 1000, 999_999_999
SALT_MAX = 16
_SCHEMES = {"5": (hashlib.sha256, 43), "6": (hashlib.sha512, 86)}
_HASH = re.compile(r"\$(?P<scheme>[56])\$(?:rounds=(?P<rounds>[0-9]{1,9})\$)?(?P<salt>[^$:\n]{0,16})"
                   r"\$(?P<digest>[./0-9A-Za-z]+)")
# The byte order in which the final digest is encoded (three bytes -> four characters), from the spec.
_ORDER = {
    "5": [(0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5), (6, 16, 26),
          (27, 7, 17), (18, 28, 8), (9, 19, 29)],
    "6": [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
          (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
          (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)],
}


def _b64(b2: int, b1: int, b0: int, count: int) -> str:
    word = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(count):
        out.append(ALPHABET[word & 0x3F])
        word >>= 6
    return "".join(out)


def _repeat(block: bytes, length: int) -> bytes:
    return (block * (length // len(block) + 1))[:length]


def _digest(scheme: str, password: bytes, salt: bytes, rounds: int) -> str:
    new, _ = _SCHEMES[scheme]
    size = new().digest_size
    b = new(password + salt + password).digest()
    ctx = new(password + salt)
    ctx.update(_repeat(b, len(password)))
    n = len(password)
    while n > 0:
        ctx.update(b if n & 1 else password)
        n >>= 1
    a = ctx.digest()
    p = _repeat(new(password * len(password)).digest(), len(password))
    s = _repeat(new(salt * (16 + a[0])).digest(), len(salt))
    c = a
    for i in range(rounds):
        ctx = new(p if i & 1 else c)
        if i % 3:
            ctx.update(s)
        if i % 7:
            ctx.update(p)
        ctx.update(c if i & 1 else p)
        c = ctx.digest()
    text = "".join(_b64(c[x], c[y], c[z], 4) for x, y, z in _ORDER[scheme])
    if size == 64:
        return text + _b64(0, 0, c[63], 2)
    return text + _b64(0, c[31], c[30], 3)


def crypt(password: str, setting: str) -> str:
    """crypt(3) for $5$/$6$ settings such as "$6$salt", "$6$rounds=10000$salt" or a whole hash (its salt is used)."""
    found = re.fullmatch(r"\$([56])\$(?:rounds=([0-9]{1,9})\$)?([^$:\n]*)(?:\$.*)?", setting, re.S)
    if found is None:
        raise ValueError("not a $5$ or $6$ crypt setting")
    scheme, rounds_text, salt = found.group(1), found.group(2), found.group(3)[:SALT_MAX]
    rounds = ROUNDS_DEFAULT if rounds_text is None else min(max(int(rounds_text), ROUNDS_MIN), ROUNDS_MAX)
    digest = _digest(scheme, password.encode("utf-8"), salt.encode("utf-8"), rounds)
    prefix = f"${scheme}$" + (f"rounds={rounds}$" if rounds_text is not None else "")
    return f"{prefix}{salt}${digest}"


def hash_password(password: str, *, scheme: str = "6", rounds: int | None = None) -> str:
    """A new hash with a random 16-character salt (what `openssl passwd -6` prints)."""
    salt = "".join(secrets.choice(ALPHABET) for _ in range(SALT_MAX))
    return crypt(password, f"${scheme}$" + (f"rounds={rounds}$" if rounds else "") + salt)


def hash_problem(text: object) -> str | None:
    """Why `text` cannot be a root-password hash (None when it can). Never quotes the value: it may be a password."""
    if not isinstance(text, str) or not text:
        return "is empty"
    if text != text.strip():
        return "has surrounding whitespace"
    found = _HASH.fullmatch(text)
    if found is None:
        if text.startswith("$") and text[1:3] in ("1$", "2a", "2b", "2y", "y$", "7$", "gy"):
            return ("is a crypt hash of a scheme this server cannot check; use SHA-512 crypt "
                    "(`openssl passwd -6`)")
        return ("is not a SHA-512 or SHA-256 crypt(3) hash ($6$salt$... from `openssl passwd -6`); never give the "
                "plain-text password")
    if len(found.group("digest")) != _SCHEMES[found.group("scheme")][1]:
        return "has a digest of the wrong length for its scheme"
    return None


def verify(password: str, hashed: str) -> bool:
    """True when `password` matches the $5$/$6$ hash (constant-time compare); False for anything else."""
    if hash_problem(hashed) is not None or not isinstance(password, str):
        return False
    return hmac.compare_digest(crypt(password, hashed).encode(), hashed.encode())
