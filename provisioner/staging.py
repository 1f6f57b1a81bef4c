"""Importing a tree under the data dir without ever leaving a half-written one (media, packs, update bundles).
Standard library only."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def staged_tree(root: Path, name: str, target: Path) -> Iterator[Path]:
    """A dot-named temporary directory in `root` to fill; when the block ends normally it is made 0755 (mkdtemp makes
    it 0700; the tree is served over HTTP) and renamed to `target`; on any error it is removed (a crash leaves only
    the dot-named directory)."""
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
    try:
        yield work
        os.chmod(work, 0o755)
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


@contextmanager
def removed_on_error(target: Path) -> Iterator[None]:
    """Remove the tree just renamed to `target` if the block (recording it in the store) fails: nothing refers to it
    yet."""
    try:
        yield
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
