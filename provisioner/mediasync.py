"""Media trees at every site (issue 22, docs/sites.md "Media at every site").

The server that imports a media records the tree's manifest (every regular file: path, size, SHA-256) and its own
copy as ready. Every other server, at start and on each heartbeat, looks for media rows it has no ready copy of
and fetches every file of the manifest from a server that has it ready, over the HTTP route the trees are
already served on (/media/NAME/...), into a dot-named temporary directory, checks each file's size and SHA-256
against the manifest and the whole tree with the installer's own checks (media.tree_problems), and renames it into
data_dir/media/NAME. The copy's state in the store goes syncing -> ready, or failed with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Iterator

from provisioner import sites
from provisioner.boot import urls
from provisioner.config import Config
from provisioner.media import MediaError, manifest, tree_problems
from provisioner.model import Media
from provisioner.paths import real_path_under
from provisioner.staging import staged_tree
from provisioner.store import MediaCopy, Server, Store

log = logging.getLogger(__name__)

CHUNK = 1 << 20
FETCH_TIMEOUT_S = 60  # per read: a stalled source fails this copy (retried at the next serve start)

Fetch = Callable[[str], Iterator[bytes]]
"""Fetch(url) -> the body's chunks; raises OSError (urllib.error.URLError is one) on any failure."""


def http_fetch(url: str) -> Iterator[bytes]:
    """GET `url`, yielding the body in chunks (urllib: plain http:// between servers, as the hosts fetch it)."""
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 (our servers' URLs)
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                return
            yield chunk


def _local_tree_ok(media: Media, files: list[tuple[str, int, str]]) -> bool:
    """The recorded tree is readable here, complete, and its files have the manifest's sizes (no re-hash: cheap)."""
    tree = Path(media.path)
    if not tree.is_dir() or tree_problems(media):
        return False
    for rel, size, _ in files:
        real = real_path_under(str(tree), rel)
        if real is None or not os.path.isfile(real) or os.path.getsize(real) != size:
            return False
    return True


def reconcile(store: Store, config: Config, *, retry_failed: bool = False, fetch: Fetch = http_fetch
              ) -> list[MediaCopy]:
    """Give this server a ready copy of every media it lacks; the copies recorded now. A failed copy is retried
    only with `retry_failed` (serve start), so a broken source does not fill the event log every heartbeat."""
    me = sites.server_id(config)
    done = []
    for media in store.list_media():
        mine = store.media_copy(media.name, me)
        if mine is not None and (mine.state == "ready" or (mine.state == "failed" and not retry_failed)):
            continue
        files = store.media_manifest(media.name)
        if not store.media_copies(media.name) and _local_tree_ok(media, files):
            # imported before sites (no copy recorded anywhere): the first server that can read the tree records
            # its manifest and takes it as its copy. Any other tree is fetched over HTTP into this server's own
            # data_dir, even on the machine that holds the original (docs/sites.md "Media at every site").
            if not files:
                store.set_media_manifest(media.name, manifest(Path(media.path)))
            done.append(store.set_media_copy(media.name, me, config.site, "ready", media.path))
            continue
        source = _source(store, media.name, me)
        if source is None:
            log.warning("media %s: no copy here and no other server has it ready; waiting", media.name)
            continue
        done.append(sync(store, config, media, source, fetch=fetch))
    return done


def _source(store: Store, name: str, me: str) -> Server | None:
    """A server that is up and has a ready copy of media `name` (the most recently seen)."""
    ready = {c.server for c in store.media_copies(name) if c.state == "ready" and c.server != me}
    return next((s for s in store.list_servers() if s.server in ready and sites.is_up(s)), None)


def sync(store: Store, config: Config, media: Media, source: Server, *, fetch: Fetch = http_fetch
         ) -> MediaCopy:
    """Fetch media's tree from `source` into data_dir/media/NAME, checked against the manifest; the copy's record."""
    me = sites.server_id(config)
    root = (Path(config.data_dir).expanduser() / "media").resolve()
    target = root / media.name
    store.set_media_copy(media.name, me, config.site, "syncing", str(target))
    log.info("media %s: fetching the tree from %s (site %s) into %s", media.name, source.public_url, source.site,
             target)
    try:
        files = store.media_manifest(media.name)
        if not files:
            raise MediaError(f"the store has no manifest of media {media.name}: the server that has it records it "
                             "when it starts (`provisioner serve` of this version there)")
        if target.exists() or target.is_symlink():
            raise MediaError(f"{target} already exists and is not a complete copy of media {media.name}: move it "
                             "away and restart serve to fetch it again")
        root.mkdir(parents=True, exist_ok=True)
        with staged_tree(root, media.name, target) as work:
            _fetch_all(work, source.public_url, media.name, files, fetch)
            problems = tree_problems(dataclasses.replace(media, path=str(work)))
            if problems:
                raise MediaError("; ".join(problems))
    except (MediaError, OSError, ValueError) as exc:
        log.error("media %s: copying it from %s failed: %s", media.name, source.public_url, exc)
        return store.set_media_copy(media.name, me, config.site, "failed", str(target),
                                    error=f"from {source.server}: {exc}"[:500])
    return store.set_media_copy(media.name, me, config.site, "ready", str(target))


def _fetch_all(work: Path, base_url: str, name: str, files: Iterable[tuple[str, int, str]], fetch: Fetch) -> None:
    for rel, size, sha256 in files:
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or ".." in parts or rel.startswith("/"):
            raise MediaError(f"the manifest names {rel!r}, which is not a path inside the tree")
        out = work.joinpath(*parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        digest, got = hashlib.sha256(), 0
        with open(out, "wb") as handle:
            for chunk in fetch(urls.media_file(base_url, name, rel)):
                got += len(chunk)
                if got > size:
                    raise MediaError(f"{rel}: the source sent more than the manifest's {size} bytes")
                digest.update(chunk)
                handle.write(chunk)
        if got != size or digest.hexdigest() != sha256:
            raise MediaError(f"{rel}: got {got} bytes with sha256 {digest.hexdigest()[:16]}..., the manifest says "
                             f"{size} bytes, {sha256[:16]}...")
        os.chmod(out, 0o644)

