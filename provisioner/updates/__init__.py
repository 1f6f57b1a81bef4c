"""Update repositories (issue 20): offline update bundles imported into the data dir and mirrors registered by
URL, checked at `updates add` and served over HTTP like media trees (docs/updates.md).

Modules: repo (reading and checking yum metadata, pure), signature (gpgv), checks (product and signature
decisions), bundle (safe unpacking and the all-or-nothing import), mirror (registering a URL). This module is the
service the CLI and REST call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisioner.boot import urls
from provisioner.config import Config
from provisioner.model import Media
from provisioner.store import ConflictError, NotFoundError, Store, UpdateRepo
from provisioner.updates.bundle import BundleError
from provisioner.updates.checks import ProductMismatch, Unsigned
from provisioner.updates.mirror import MirrorError
from provisioner.updates.repo import RepoError

__all__ = ["BundleError", "MirrorError", "ProductMismatch", "RepoError", "Unsigned", "add", "describe", "remove",
           "is_url", "bundle_file", "repo_dir"]


def is_url(source: str) -> bool:
    return source.strip().lower().startswith(("http://", "https://"))


def add(store: Store, config: Config, name: str, source: str, *, product_version: str | None = None,
        allow_unsigned: bool = False, check: bool = True) -> UpdateRepo:
    """`updates add NAME PATH|URL`: import the bundle at PATH, or register the mirror at URL (see the modules)."""
    from provisioner.updates import bundle, mirror  # the two ways in, each with its own checks

    name = Media.check_name(name)  # same rules as media names: it is a URL path segment
    if store.get_update_repo(name) is not None:
        raise ConflictError(f"update repository {name!r} already exists")
    if is_url(source):
        return mirror.register_mirror(store, config, name, source, product_version=product_version,
                                      allow_unsigned=allow_unsigned, check=check)
    if not check:
        raise BundleError("--no-check is for mirror URLs only: a bundle is always read and checked at import")
    return bundle.import_bundle(store, config, name, Path(source).expanduser(), product_version=product_version,
                                allow_unsigned=allow_unsigned)


def remove(store: Store, config: Config, name: str) -> UpdateRepo:
    """`updates remove NAME`: the record first (refused while a run uses it), then an imported bundle's files."""
    from provisioner.updates import bundle

    removed = store.remove_update_repo(name)
    bundle.remove_files(config, removed)
    return removed


def get(store: Store, name: str) -> UpdateRepo:
    found = store.get_update_repo(name)
    if found is None:
        raise NotFoundError(f"no update repository named {name!r} (see `provisioner updates list`)")
    return found


def bundle_file(record: UpdateRepo) -> Path | None:
    """The imported .xsbundle file (what is PUT to a pool master's /bundle), or None for a mirror."""
    return Path(record.path) / record.bundle_file if record.kind == "bundle" and record.path else None


def repo_dir(record: UpdateRepo) -> Path | None:
    """The unpacked repository tree of an imported bundle, or None for a mirror."""
    from provisioner.updates.bundle import REPO_DIR

    return Path(record.path) / REPO_DIR if record.kind == "bundle" and record.path else None


def describe(config: Config, record: UpdateRepo) -> dict[str, Any]:
    """The record plus where a pool gets it: repo_url (a yum base URL: ours for a bundle, the mirror's own) and
    bundle_url (the .xsbundle file over HTTP, bundles only)."""
    data = record.as_dict()
    if record.kind == "bundle":
        data["repo_url"] = urls.updates_repo(config.base_url, record.name)
        data["bundle_url"] = urls.updates_bundle(config.base_url, record.name)
    else:
        data["repo_url"], data["bundle_url"] = record.url, None
    return data
