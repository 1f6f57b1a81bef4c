"""select.select() over poll(2), for libraries that call select.select() on their own sockets (pyghmi's IPMI
client and server, docs/power.md "Descriptors above 1023"). select(2) takes descriptors below FD_SETSIZE (1024)
only: in a process holding more than about a thousand descriptors (a boot server in a storm, a test run), a new
socket gets a higher number and select.select() raises ValueError, which in pyghmi ends its packet loop for the
rest of the process. poll(2) has no such limit. Same signature and result as select.select; no exceptional
set beyond what poll reports as an error (POLLERR, POLLNVAL are reported readable so the caller's read fails
as it would)."""

from __future__ import annotations

import select as _select
from types import SimpleNamespace
from typing import Any, Iterable

error = OSError

_READ = _select.POLLIN | _select.POLLPRI
_FAILED = _select.POLLERR | _select.POLLHUP | _select.POLLNVAL


def _fd(item: Any) -> int:
    return item if isinstance(item, int) else item.fileno()


def select(rlist: Iterable, wlist: Iterable, xlist: Iterable, timeout: float | None = None):
    """select.select(rlist, wlist, xlist, timeout) with any descriptor number."""
    rlist, wlist, xlist = list(rlist), list(wlist), list(xlist)
    poller = _select.poll()
    masks: dict[int, int] = {}
    for items, mask in ((rlist, _READ), (wlist, _select.POLLOUT), (xlist, _select.POLLPRI)):
        for item in items:
            fd = _fd(item)
            if fd < 0:
                raise ValueError("file descriptor cannot be a negative integer (%d)" % fd)
            masks[fd] = masks.get(fd, 0) | mask
    for fd, mask in masks.items():
        poller.register(fd, mask)
    events = dict(poller.poll(None if timeout is None else max(0.0, timeout) * 1000.0))
    readable = [i for i in rlist if events.get(_fd(i), 0) & (_READ | _FAILED)]
    writable = [i for i in wlist if events.get(_fd(i), 0) & (_select.POLLOUT | _FAILED)]
    exceptional = [i for i in xlist if events.get(_fd(i), 0) & _select.POLLPRI]
    return readable, writable, exceptional


def patch_module_select(module: Any) -> None:
    """Make `module`'s own `select.select(...)` calls go through poll (the module did `import select`; select()
    and select.error are all pyghmi uses of it)."""
    module.select = SimpleNamespace(select=select, error=OSError)
