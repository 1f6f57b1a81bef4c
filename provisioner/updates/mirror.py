"""Register a remote update repository (a mirror URL XAPI can sync from: Repository.introduce's binary_url) without
downloading its packages (docs/updates.md "Mirrors").

Unless --no-check, its metadata is fetched now (repomd.xml, its signature, primary and updateinfo; each checked
against repomd.xml's checksums) and read and checked like a bundle's: product, signature, updates. Standard
library HTTP client (urllib): the product has no other use for an HTTP client library.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from provisioner.config import Config
from provisioner.store import Store, UpdateRepo
from provisioner.updates import checks, repo

_TIMEOUT = 20


class MirrorError(ValueError):
    """The URL is not a usable repository URL, or its metadata cannot be fetched or read; the message says why."""


def normalize_url(url: str) -> str:
    """http(s)://host[:port]/path/ (with the final slash yum joins repodata/ to); MirrorError for anything else."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MirrorError(f"{url!r} is not an http:// or https:// URL of a yum repository")
    if parts.username or parts.password:
        raise MirrorError("put no credentials in the mirror URL: it is stored, shown and given to the pool as is")
    if parts.query or parts.fragment:
        raise MirrorError(f"{url!r} has a query or fragment: give the repository's base URL (where repodata/ is)")
    if any(ch.isspace() for ch in url.strip()):
        raise MirrorError(f"{url!r} contains white space")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _fetch(url: str, limit: int, *, optional: bool = False) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as resp:  # noqa: S310 (scheme checked above)
            data = resp.read(limit + 1)
    except urllib.error.HTTPError as exc:
        if optional and exc.code == 404:
            return None
        raise MirrorError(f"GET {url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MirrorError(f"cannot fetch {url} ({reason}); check the URL, or pass --no-check to register it "
                          "without reading it") from None
    if len(data) > limit:
        raise MirrorError(f"{url} is larger than {limit} bytes: not repository metadata")
    return data


def read_mirror(url: str) -> tuple[repo.RepoContent, bytes, bytes | None]:
    """(content, repomd.xml, repomd.xml.asc or None) of the repository at `url`, metadata checksums verified."""
    repomd = _fetch(url + repo.REPOMD, repo.REPOMD_MAX)
    assert repomd is not None
    try:
        meta = repo.parse_repomd(repomd)
        raw = {}
        for kind in ("primary", "updateinfo"):
            entry = meta[kind]
            data = _fetch(url + urllib.parse.quote(entry.href), repo.METADATA_MAX)
            assert data is not None
            if repo.digest(entry.checksum_type, data) != entry.checksum:
                raise repo.RepoError(f"{entry.href} fails its {entry.checksum_type} checksum: the mirror is "
                                     "inconsistent (being updated?) or altered")
            raw[kind] = repo.decompress(entry.href, data)
        packages = repo.parse_primary(raw["primary"], meta["primary"].href)
        api_version, updates = repo.parse_updateinfo(raw["updateinfo"], meta["updateinfo"].href)
        found = repo.content(packages, api_version, updates)
    except repo.RepoError as exc:
        raise MirrorError(f"{url} is not a usable update repository: {exc}") from None
    asc = _fetch(url + repo.SIGNATURE, 1 << 20, optional=True)
    return found, repomd, asc


def register_mirror(store: Store, config: Config, name: str, url: str, *, product_version: str | None,
                    allow_unsigned: bool, check: bool) -> UpdateRepo:
    """Record the repository at `url` as update repository NAME (read and checked now unless check=False)."""
    url = normalize_url(url)
    if not check:
        record = UpdateRepo(name=name, kind="mirror", source=url, url=url, product_version=product_version,
                            signed=False, unsigned=allow_unsigned, checked=False, details={})
        return store.add_update_repo(record)
    found, repomd, asc = read_mirror(url)
    checks.check_product(store, found, product_version)
    signed, signer = checks.check_signature(config, asc, repomd, allow_unsigned=allow_unsigned, what=url)
    record = UpdateRepo(name=name, kind="mirror", source=url, url=url, product_version=found.product_version,
                        signed=signed, unsigned=not signed, checked=True,
                        details={**found.as_details(), "signer": signer})
    return store.add_update_repo(record)
