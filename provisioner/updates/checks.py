"""The two decisions every update repository goes through at `updates add` (bundle or mirror): is it for the
right product, and is it signed by a trusted key (docs/updates.md "What is checked")."""

from __future__ import annotations

from provisioner.config import Config
from provisioner.model import version_tuple
from provisioner.store import Store
from provisioner.updates import repo, signature


class ProductMismatch(ValueError):
    """The repository updates another product version than the one it is meant for."""


class Unsigned(ValueError):
    """The repository has no (verifiable) signature and --allow-unsigned was not given."""


def release_of(version: str) -> tuple[int, ...]:
    """The release a version belongs to (major.minor): updates for 8.4.0 apply to every 8.4 host."""
    return version_tuple(version)[:2]


def check_product(store: Store, found: repo.RepoContent, wanted: str | None) -> None:
    """The repository's product version (its xenserver-release package) must be the one the operator names
    (--product-version), else that of an imported media; ProductMismatch otherwise."""
    have = found.product_version
    if wanted:
        if release_of(have) != release_of(wanted):
            raise ProductMismatch(f"wrong product: it updates XenServer {have} ({repo.RELEASE_PACKAGE} "
                                  f"{have}-{found.release}), not {wanted} as --product-version says")
        return
    media = sorted({m.product_version for m in store.list_media()}, key=version_tuple)
    if not media:
        raise ProductMismatch(f"it updates XenServer {have}, and there is no imported media to check that against: "
                              f"pass --product-version with the version of the hosts it is for (e.g. {have})")
    if not any(release_of(have) == release_of(v) for v in media):
        raise ProductMismatch(f"wrong product: it updates XenServer {have}, but the imported media are "
                              f"{', '.join(media)}; import the bundle for your version (or pass --product-version "
                              f"{have} if you mean to upgrade to it with media you import later)")


def check_signature(config: Config, asc: bytes | None, repomd: bytes, *, allow_unsigned: bool,
                    what: str) -> tuple[bool, str | None]:
    """(signed, signer fingerprint). A signature that does not match repomd.xml is always refused (altered
    metadata); a missing one, or one that cannot be checked (no keyring, unknown key), only with allow_unsigned."""
    if asc is None:
        if allow_unsigned:
            return False, None
        raise Unsigned(f"{what} is unsigned (no {repo.SIGNATURE}): XAPI checks update repositories with "
                       "repo_gpgcheck=1; get the signed bundle from the vendor, or pass --allow-unsigned (recorded)")
    try:
        return True, signature.verify(config.updates_keyring, asc, repomd).fingerprint
    except signature.SignatureError as exc:
        if allow_unsigned and not exc.tampered:
            return False, None
        raise Unsigned(f"{what}: {exc}") from None
