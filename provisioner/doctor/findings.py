"""A doctor finding: one check's verdict (ok, warn, fail, skip), what it saw, and the fix (docs/deploy.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)


@dataclass(frozen=True)
class Finding:
    """`code` names the check (e.g. tftp.reachable); `fix` is what the operator does about a warn or a fail."""

    code: str
    status: str
    message: str
    fix: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")

    def as_dict(self) -> dict:
        return asdict(self)


def ok(code: str, message: str) -> Finding:
    return Finding(code, OK, message)


def warn(code: str, message: str, fix: str) -> Finding:
    return Finding(code, WARN, message, fix)


def fail(code: str, message: str, fix: str) -> Finding:
    return Finding(code, FAIL, message, fix)


def skip(code: str, why: str) -> Finding:
    return Finding(code, SKIP, why)
