"""Confining a client-chosen path to a served tree (TFTP root, media trees, HTTP files). Standard library only."""

from __future__ import annotations

import os
from pathlib import Path


def real_path_under(root: Path | str, relpath: str) -> str | None:
    """The realpath of `relpath` inside `root`, or None when it resolves outside (a symlink leading out included).

    `root` itself counts as inside. Callers refuse '..', absolute names and NUL first, each with their own message;
    this is the check that follows symlinks, which a prefix test on the joined path would miss.
    """
    root_real = os.path.realpath(root)
    parts = [part for part in relpath.split("/") if part not in ("", ".")]
    real = os.path.realpath(os.path.join(root_real, *parts))
    if real != root_real and not real.startswith(root_real.rstrip(os.sep) + os.sep):
        return None
    return real
