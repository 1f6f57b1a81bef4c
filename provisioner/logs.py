"""Logging setup: plain text or one JSON object per line, with the host fields (mac, attempt, run) of a record.

Code that logs about a host passes them as `extra` (or uses host_log()), so every such line names its MAC
and attempt. A line from a library that has no mac field but names exactly one MAC (sushy's DEBUG dump of a
Redfish system lists its NIC's MAC) gets that MAC as its field. Whatever the format, the API token and the per-attempt tokens in boot URLs (answer file,
scripts, report) are masked before a line is written: a DEBUG log of an HTTP client must not leak them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import sys
from typing import IO, Any

from provisioner.model import TOKEN_PATHS

HOST_FIELDS = ("mac", "attempt", "run")
MASK = "***"
# /boot/answerfile/<token>, /boot/script/<token>/..., /boot/report/<token>/... (provisioner.boot.urls)
_BOOT_TOKEN = re.compile(f"({TOKEN_PATHS})" + r"[A-Za-z0-9_%-]{6,}")
_OURS = "_provisioner_handler"
_MAC = re.compile(r"\b(?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}\b")


def _named_mac(record: logging.LogRecord, message: str) -> None:
    """A record with no mac field whose message names exactly one MAC: that MAC becomes its field."""
    if getattr(record, "mac", None) is None:
        named = {m.lower() for m in _MAC.findall(message)}
        if len(named) == 1:
            record.mac = named.pop()


class _Redactor:
    """Masks the API token and boot-URL tokens in a formatted line."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        self.secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return _BOOT_TOKEN.sub(r"\1" + MASK, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the host fields present, exception."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.redactor = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        _named_mac(record, data["message"])
        for name in HOST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        for key in ("message", "exception", "stack"):  # before encoding: JSON escapes could hide a secret
            if key in data:
                data[key] = self.redactor.redact(data[key])
        return self.redactor.redact(json.dumps(data, default=str))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [mac=... attempt=...]`."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = _Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        _named_mac(record, record.getMessage())
        fields = [f"{name}={getattr(record, name)}" for name in HOST_FIELDS if getattr(record, name, None) is not None]
        if fields:
            first, sep, rest = text.partition("\n")  # after the message, before a traceback
            text = f"{first} [{' '.join(fields)}]{sep}{rest}"
        return self.redactor.redact(text)


class _StderrHandler(logging.StreamHandler):
    """Writes to the current sys.stderr (looked up at each line, so a swapped stderr is followed)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def setup_logging(config: Any, *, stream: IO[str] | None = None) -> logging.Handler:
    """Configure the root logger from config.log_level and config.log_json; calling it again replaces
    the handler it installed before. Returns the handler (to stderr, or to `stream`)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    secrets = (getattr(config, "api_token", "") or "",)
    handler.setFormatter(JsonFormatter(secrets) if config.log_json else TextFormatter(secrets))
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(config.log_level)
    return handler


def host_log(logger: logging.Logger, mac: str | None, attempt: int | None = None,
             run: str | None = None) -> logging.LoggerAdapter:
    """A logger whose every line carries the host's MAC (and attempt and run when known)."""
    return logging.LoggerAdapter(logger, {"mac": mac, "attempt": attempt, "run": run})
