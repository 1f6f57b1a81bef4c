"""What a TFTP request is served from: the caller's decision hook, a media tree, or a real file under tftp_root.

Each comes back as an open read-only descriptor (a sealed memfd for rendered bytes), so the worker that moves
the bytes can never open a path itself (workers.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import Callable

from provisioner.tftp import guard
from provisioner.tftp.guard import Refused

log = logging.getLogger(__name__)

Resolve = Callable[[str, str], "bytes | None"]
MediaFile = Callable[[str], "Path | None"]


def open_for(name: str, ip: str, root: Path, resolve: Resolve, media_file: MediaFile | None) -> tuple[int, int, str]:
    """(descriptor, size, source) for normalized `name`: the decision hook first, always; then media trees;
    then the real file under `root`. Raises Refused (the hook failed, outside the root, not found, not a file)."""
    try:
        data = resolve(name, ip)
        path = None if data is not None or media_file is None else media_file(name)
    except Exception as err:
        log.exception("TFTP hook failed for %s from %s", name, ip)
        raise Refused(guard.R_HOOK, 0, "internal error") from err
    if data is not None:
        return sealed_memfd(bytes(data)), len(data), "dynamic"  # in memory, never under tftp_root
    source = "media" if path is not None else "static"
    if path is None:
        path = guard.confine(root, name)
    try:
        # O_NONBLOCK: opening a FIFO placed in the tree must not hang the loop.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise Refused(guard.R_NOT_FOUND, 1, "file not found") from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise Refused(guard.R_NOT_FILE, 1, "file not found")
    return fd, info.st_size, source


def sealed_memfd(data: bytes) -> int:
    """A read-only in-memory file holding `data` (a rendered config), positioned at its start, for a worker.

    Sealed against writes and resizing, so what the worker sends is exactly what the decision rendered.
    """
    fd = os.memfd_create("tftp-dynamic", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
