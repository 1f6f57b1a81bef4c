"""Every URL a booting host is given, built in one place (pure; the web routes mirror these paths)."""

from __future__ import annotations

import urllib.parse

MEDIA_PREFIX = "/media"
BOOT_PREFIX = "/boot"
TFTP_FILES_PREFIX = "/tftp"
UPDATES_PREFIX = "/updates"
UPDATES_REPO_DIR = "repo"  # /updates/NAME/repo/...: the unpacked yum tree of a bundle
UPDATES_BUNDLE_FILE = "bundle.xsbundle"  # /updates/NAME/bundle.xsbundle: the bundle file itself

# Every URL of an installer boot line (answer file, scripts, media files) is fetched by firmware, a loader or the
# installer, none of which can be relied on to trust our certificate (docs/boot-urls.md): plain http:// only.
HTTPS_REFUSED = ("public_url is https://, which cannot go into an installer boot line: the loaders and the installer "
                 "cannot be relied on to verify our certificate (their trust store is unknown); set public_url to an "
                 "http:// URL (e.g. http://10.0.0.5)")


def boot_base_problem(base_url: str) -> str | None:
    """Why `base_url` cannot be given to a booting installer (None: it can)."""
    return None if urllib.parse.urlsplit(base_url).scheme == "http" else HTTPS_REFUSED


def media_tree(base_url: str, media_name: str) -> str:
    """The directory holding the media's .treeinfo: the installer's <source type="url">."""
    return f"{base_url.rstrip('/')}{MEDIA_PREFIX}/{urllib.parse.quote(media_name, safe='')}/"


def media_file(base_url: str, media_name: str, relpath: str) -> str:
    """A file of the media tree (boot/xen.gz, boot/vmlinuz, install.img, ...)."""
    return media_tree(base_url, media_name) + urllib.parse.quote(relpath.lstrip("/"))


PACKS_PART = "packs"  # /media/<media>/packs/<pack>/: a pack of that media (packs.py refuses a name the tree has)


def pack_tree(base_url: str, media_name: str, pack_name: str) -> str:
    """The directory holding a pack's update.xml: an extra <source> or a <driver-source> (docs/packs.md)."""
    return f"{media_tree(base_url, media_name)}{PACKS_PART}/{urllib.parse.quote(pack_name, safe='')}/"


def pack_sources(base_url: str, packs) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(extra <source> URLs of the supplemental packs, <driver-source> URLs of the driver disks) among `packs`
    (model.Pack records), in their order."""
    extra = tuple(pack_tree(base_url, p.media, p.name) for p in packs if p.kind == "pack")
    drivers = tuple(pack_tree(base_url, p.media, p.name) for p in packs if p.kind == "driver")
    return extra, drivers


def answerfile(base_url: str, token: str) -> str:
    """The per-attempt answer file (served once; 404 once the attempt's window is closed)."""
    return f"{base_url.rstrip('/')}{BOOT_PREFIX}/answerfile/{urllib.parse.quote(token, safe='')}"


def script(base_url: str, token: str, stage: str) -> str:
    """The per-attempt installer script for `stage` ('installation-start' or 'installation-complete')."""
    return f"{base_url.rstrip('/')}{BOOT_PREFIX}/script/{urllib.parse.quote(token, safe='')}/{stage}"


def report(base_url: str, token: str) -> str:
    """Where the installation-complete script reports its exit code (appended as the last path part)."""
    return f"{base_url.rstrip('/')}{BOOT_PREFIX}/report/{urllib.parse.quote(token, safe='')}/"


def updates_repo(base_url: str, name: str) -> str:
    """An imported update bundle's yum repository (a pool's remote repository binary_url; ends with "/")."""
    return f"{base_url.rstrip('/')}{UPDATES_PREFIX}/{urllib.parse.quote(name, safe='')}/{UPDATES_REPO_DIR}/"


def updates_bundle(base_url: str, name: str) -> str:
    """An imported update bundle's .xsbundle file (what is uploaded to a pool master's PUT /bundle)."""
    return f"{base_url.rstrip('/')}{UPDATES_PREFIX}/{urllib.parse.quote(name, safe='')}/{UPDATES_BUNDLE_FILE}"
