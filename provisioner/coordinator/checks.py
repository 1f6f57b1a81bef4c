"""One precheck finding: a stable code, what was found, and how to fix it (docs/prechecks.md).

The plan (plan.py) collects these; `upgrade plan`, its `--json` and the dashboard show each with its code, message
and fix. Levels: "error" blocks the run; "consent" blocks it unless the operator gave the consent the fix names
(then the run does what the message says); "warning" is shown and does not block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ERROR = "error"
CONSENT = "consent"
WARNING = "warning"
LEVELS = (ERROR, CONSENT, WARNING)


@dataclass(frozen=True)
class Check:
    code: str  # upper-case identifier, stable across versions (scripts match on it), e.g. "PV_GUEST"
    message: str  # what was found, in the operator's terms
    fix: str  # what to do about it (a command, a setting, or the consent flag)
    host: str = ""  # the host's name; "" for the pool as a whole
    level: str = ERROR

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"precheck level {self.level!r} is not one of {', '.join(LEVELS)}")
        if not self.code or not self.code.replace("_", "").isalnum() or self.code.upper() != self.code:
            raise ValueError(f"precheck code {self.code!r} must be upper-case letters, digits and '_'")

    @property
    def blocking(self) -> bool:
        return self.level != WARNING

    def line(self) -> str:
        """One line: '<host>: <message> [<CODE>] (fix: <fix>)'."""
        where = f"{self.host}: " if self.host else ""
        return f"{where}{self.message} [{self.code}] (fix: {self.fix})"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "level": self.level, "host": self.host, "message": self.message, "fix": self.fix}
