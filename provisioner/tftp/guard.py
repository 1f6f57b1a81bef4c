"""Pure TFTP safety rules (no sockets, no tftpy): file names, root confinement, options, caps, event budget.

server.py applies them; they live here so each rule is table-tested on its own. See
docs/tftp.md "Holes in tftpy" for the holes in tftpy that these rules close.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from provisioner.paths import real_path_under

# RFC 2348 allows 8..65464; we also cap at config.tftp_blksize_max (1468 = 1500-byte Ethernet MTU minus
# IP, UDP and TFTP headers), because tftpy never caps and an 8192-byte block becomes IP fragments that
# some PXE ROMs drop.
MIN_BLKSIZE = 8
RFC_MAX_BLKSIZE = 65464
DEFAULT_BLKSIZE = 512

# Reasons passed in on_event details["reason"]; one constant per refusal path.
R_WRITE = "write_request"  # every WRQ: this server is read-only
R_OUTSIDE = "path_outside_root"  # '..' components, or a symlink leading out of tftp_root
R_NOT_FOUND = "not_found"
R_NOT_FILE = "not_a_regular_file"  # directory, FIFO, device: opening a FIFO would block the loop
R_MALFORMED = "malformed_packet"
R_OPCODE = "unknown_opcode"  # not a TFTP opcode (0, 7 and up)
R_TOTAL_CAP = "too_many_sessions"
R_CLIENT_CAP = "too_many_sessions_from_client"
R_HOOK = "hook_failed"  # resolve() or media_file() raised: the client gets an error, the loop lives
R_UNAVAILABLE = "workers_unavailable"  # no worker process could take the transfer (all died or all full)


class Refused(Exception):
    """A request we will not serve; `reason` is one of the R_* constants, `code` the TFTP error code."""

    def __init__(self, reason: str, code: int, message: str):
        super().__init__(message)
        self.reason, self.code, self.message = reason, code, message


def normalize_name(raw: str) -> str:
    """The name relative to tftp_root: leading slashes dropped, '.' and '//' collapsed; '..' is refused.

    Firmware sends both 'pxelinux.0' and '/grub/grub.cfg'; like tftp-hpa with -s, an absolute name means
    'under the root', never a path on this machine.
    """
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Refused(R_OUTSIDE, 2, "path outside the TFTP root")
    if not parts:
        raise Refused(R_NOT_FOUND, 1, "file not found")
    return posixpath.join(*parts)


def confine(root: Path, name: str) -> Path:
    """The real path of `name` under `root`, refusing anything that resolves outside it (symlinks included)."""
    real = real_path_under(root, name)
    if real is None or real == os.path.realpath(root):
        raise Refused(R_OUTSIDE, 2, "path outside the TFTP root")
    return Path(real)


def negotiate(requested: dict[str, str], blksize_max: int) -> dict[str, str]:
    """The options we acknowledge, from the client's; tsize is filled in later by the caller.

    Like tftp-hpa: blksize below 8 or not a number is ignored (the transfer falls back to 512 bytes),
    blksize above the cap is lowered to the cap; options we do not implement are left out of the OACK.
    """
    accepted: dict[str, str] = {}
    for key, value in requested.items():
        key = key.lower()
        if key == "blksize":
            try:
                size = int(value.strip())
            except ValueError:
                continue
            if size >= MIN_BLKSIZE:
                accepted["blksize"] = str(min(size, blksize_max, RFC_MAX_BLKSIZE))
        elif key == "tsize":
            accepted["tsize"] = "0"
    return accepted


class SessionCaps:
    """Counts open sessions in total and per client IP, far below select()'s 1,024-descriptor limit.

    A full table is not an outage (issue 15 finding 2: 32 addresses x 16 unacknowledged RRQs stopped TFTP
    for everyone): when the total is reached, a request from an address holding fewer sessions than the
    holder of one of the oldest sessions still waiting for its first ACK evicts that session (admit()).
    So a flood from a few addresses only ever costs those addresses their share.
    """

    SCAN = 8  # how many of the oldest unacknowledged sessions admit() looks at (O(1) per request in a flood)

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self.open: Counter[str] = Counter()
        self.count = 0
        self.fresh: dict[int, str] = {}  # session id -> client IP, oldest first: DATA 1 not yet acknowledged
        self.last: dict[int, str] = {}  # session id -> client IP: all data out, only the client's last ACK awaited
        self.last_of: Counter[str] = Counter()

    def admit(self, ip: str) -> int | None:
        """None: there is room for a session from `ip`; else the id of a session to evict first. Raises Refused."""
        if self.open[ip] >= self.per_client:
            raise Refused(R_CLIENT_CAP, 3, "too many sessions from this client, retry later")
        if self.count < self.total:
            return None
        for n, (sid, holder) in enumerate(self.fresh.items()):
            if n >= self.SCAN:
                break
            if self.open[holder] > self.open[ip] + 1:  # +1: the requester would then hold one more
                return sid
        raise Refused(R_TOTAL_CAP, 0, "server busy, retry later")

    def opened(self, ip: str, sid: int = 0) -> None:
        self.open[ip] += 1
        self.count += 1
        if sid:
            self.fresh[sid] = ip

    def underway(self, sid: int) -> None:
        """The client acknowledged DATA 1 (or all data went out): the session can no longer be evicted."""
        self.fresh.pop(sid, None)

    def all_out(self, ip: str, sid: int) -> None:
        """All of the session's data went out: its place frees when the client's last ACK reaches the worker."""
        self.fresh.pop(sid, None)
        if sid not in self.last:
            self.last[sid] = ip
            self.last_of[ip] += 1

    def ending(self, reason: str, ip: str) -> int:
        """How many places that a `reason` refusal (R_CLIENT_CAP / R_TOTAL_CAP) of `ip` waits for may free any
        moment: sessions with all their data out, whose client's last ACK may be on its way."""
        return self.last_of[ip] if reason == R_CLIENT_CAP else len(self.last)

    def closed(self, ip: str, sid: int = 0) -> None:
        self.fresh.pop(sid, None)
        if self.last.pop(sid, None) is not None:
            self.last_of[ip] -= 1
            if self.last_of[ip] <= 0:
                del self.last_of[ip]
        self.count -= 1
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            del self.open[ip]


class Parked:
    """Requests over a cap that wait, at most PARK_SECONDS, for a place about to free (issue 17 finding 2).

    A client that got its last DATA sends the final ACK to its transfer's worker and, at once, its next RRQ to
    the listening port; the RRQ often reaches the deciding thread before the worker's report that the session
    ended, so the client would be refused over a place it no longer holds. Such a request waits here until a
    session ends (then it is decided again) or its time is up (then it is refused, with an ERROR packet). Only
    as many wait as there are places that may free (SessionCaps.ending), so a flood is still refused at once.
    """

    PARK_SECONDS = 0.2  # well under a PXE ROM's first retransmission (>= 1 s): the client sees no delay it acts on

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        # (ip, port) -> (deadline, request packet, our address it was sent to, the refusal, the file name)
        self.waiting: dict[tuple[str, int], tuple[float, bytes, str, Refused, str | None]] = {}

    def park(self, ip: str, port: int, data: bytes, reply_from: str, refusal: Refused, room: int,
             deadline: float | None = None, name: str | None = None) -> bool:
        """Park the request unless `room` (places that may free) is used up by requests already waiting for the
        same cap; True when it waits (a retransmission of one already waiting is absorbed)."""
        if (ip, port) in self.waiting:
            return True
        same = sum(1 for (other, _), (_, _, _, r, _) in self.waiting.items()
                   if r.reason == refusal.reason and (refusal.reason != R_CLIENT_CAP or other == ip))
        if same >= room:
            return False
        self.waiting[(ip, port)] = (self.clock() + self.PARK_SECONDS if deadline is None else deadline, data,
                                    reply_from, refusal, name)
        return True

    def take(self) -> list[tuple[str, int, float, bytes, str]]:
        """Every waiting request, to be decided again (a place freed): (ip, port, deadline, data, reply_from)."""
        out = [(ip, port, deadline, data, reply_from)
               for (ip, port), (deadline, data, reply_from, _, _) in self.waiting.items()]
        self.waiting.clear()
        return out

    def expired(self) -> list[tuple[str, int, str, Refused, str | None]]:
        """The requests whose time is up, removed, to refuse now: (ip, port, reply_from, refusal, name)."""
        now = self.clock()
        gone = [key for key, value in self.waiting.items() if value[0] <= now]
        return [(ip, port, *self.waiting.pop((ip, port))[2:]) for ip, port in gone]

    def next_deadline(self) -> float | None:
        return min((value[0] for value in self.waiting.values()), default=None)


class EventBudget:
    """Token bucket for refusal events, so a flood of bad packets cannot flood the events table.

    Refusals beyond the budget are counted per reason; each emitted event stands for `count` refusals
    (itself plus those suppressed before it), and flush() hands out what is still pending, so the
    counts of all events add up to the refusals seen.
    """

    def __init__(self, rate: float = 50.0, burst: int = 200, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens = float(burst)
        self.stamp = clock()
        self.suppressed: Counter[str] = Counter()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, reason: str) -> int | None:
        """None: drop this event (it is counted); otherwise emit it, standing for this many refusals."""
        self._refill()
        if self.tokens < 1.0:
            self.suppressed[reason] += 1
            return None
        self.tokens -= 1.0
        return 1 + self.suppressed.pop(reason, 0)

    def flush(self) -> dict[str, int]:
        """Pending suppressed counts per reason, as far as the budget allows one summary event each."""
        self._refill()
        out: dict[str, int] = {}
        for reason in list(self.suppressed):
            if self.tokens < 1.0:
                break
            self.tokens -= 1.0
            out[reason] = self.suppressed.pop(reason)
        return out


def log_extra(name: object, mac_of: Callable[[str], "str | None"] | None) -> dict[str, str | None]:
    """`extra` for a log line about a TFTP name: the host's MAC when `mac_of` finds one in it (logs.py).

    `mac_of` is the caller's (the TFTP server knows no boot file names); it must not fail a log line.
    """
    if mac_of is None or not name:
        return {"mac": None}
    try:
        mac = mac_of(str(name))
    except Exception:  # a log line must never fail on a hostile name
        mac = None
    return {"mac": mac}
