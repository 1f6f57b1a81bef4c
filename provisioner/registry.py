"""The host registry service: what the CLI, REST API and dashboard call to add, import, change and remove hosts."""

from __future__ import annotations

import csv
import io
from typing import Any, Mapping

from provisioner.model import HOST_FIELDS, Host, ValidationError, normalize_mac
from provisioner.store import ConflictError, NotFoundError, Store

REQUIRED_COLUMNS = ("mac", "name", "pool")


class ImportRejected(ValueError):
    """A CSV import had bad rows; nothing was imported. `problems` is a list of (line number, message)."""

    def __init__(self, problems: list[tuple[int, str]]):
        self.problems = problems
        lines = "\n".join(f"  line {line}: {message}" for line, message in problems)
        super().__init__(f"{len(problems)} problem(s), nothing imported:\n{lines}")

    def as_list(self) -> list[dict[str, Any]]:
        return [{"line": line, "error": message} for line, message in self.problems]


def get_host(store: Store, mac: str) -> Host:
    """The registered host for `mac` (any accepted spelling), or NotFoundError."""
    canonical = normalize_mac(mac)
    host = store.get_host(canonical)
    if host is None:
        raise NotFoundError(f"no host with MAC {canonical} is registered")
    return host


def add_host(store: Store, fields: Mapping[str, Any]) -> Host:
    """Validate and register one host; ValidationError or ConflictError name the problem."""
    return store.add_host(Host.from_fields(fields))


def update_host(store: Store, mac: str, changes: Mapping[str, Any]) -> Host:
    """Partial update (PATCH semantics); the whole record is re-validated."""
    unknown = sorted(set(changes) - set(HOST_FIELDS))
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(HOST_FIELDS)})")
    return store.update_host(normalize_mac(mac), changes)


def remove_host(store: Store, mac: str) -> Host:
    return store.remove_host(normalize_mac(mac))


def parse_csv(text: str) -> tuple[list[tuple[int, Host]], list[tuple[int, str]]]:
    """Parse a host CSV (header row first) into good (line, Host) rows and (line, problem) for bad ones.

    A bad header (or an empty file) raises ImportRejected at once: no row can be read without it."""
    if text.startswith("\ufeff"):  # spreadsheet exports often start with a BOM
        text = text[1:]
    reader = csv.reader(io.StringIO(text))
    problems: list[tuple[int, str]] = []
    try:
        header = [column.strip().lower() for column in next(reader)]
    except StopIteration:
        raise ImportRejected([(1, "the file is empty: expected a header row such as mac,name,pool,disk")]) from None
    except csv.Error as exc:
        raise ImportRejected([(1, f"not valid CSV: {exc}")]) from None
    unknown = [c for c in header if c not in HOST_FIELDS]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if unknown:
        problems.append((1, f"unknown column(s) {', '.join(unknown)} (known: {', '.join(HOST_FIELDS)})"))
    if missing:
        problems.append((1, f"missing required column(s) {', '.join(missing)}"))
    if duplicated:
        problems.append((1, f"repeated column(s) {', '.join(duplicated)}"))
    if problems:
        raise ImportRejected(problems)

    rows: list[tuple[int, Host]] = []
    seen_macs: dict[str, int] = {}
    seen_names: dict[tuple[str, str], int] = {}
    line = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append((reader.line_num, f"not valid CSV: {exc}"))
            break
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        if len(cells) != len(header):
            problems.append((line, f"expected {len(header)} fields, found {len(cells)}"))
            continue
        try:
            host = Host.from_fields({k: (v if v.strip() else None) for k, v in zip(header, cells)})
        except ValidationError as exc:
            problems.append((line, str(exc)))
            continue
        if host.mac in seen_macs:
            problems.append((line, f"MAC {host.mac} already appears on line {seen_macs[host.mac]}"))
            continue
        key = (host.pool, host.name)
        if key in seen_names:
            problems.append((line, f"pool {host.pool!r} host {host.name!r} already appears on line {seen_names[key]}"))
            continue
        seen_macs[host.mac] = seen_names[key] = line
        rows.append((line, host))
    if not rows and not problems:
        raise ImportRejected([(1, "no host rows after the header")])
    return rows, problems


def import_csv(store: Store, text: str, *, source: str = "csv") -> list[Host]:
    """All-or-nothing import: every bad row (syntax, validation, duplicates, registry clashes) is reported."""
    rows, problems = parse_csv(text)
    clashes = store.conflicts(host for _, host in rows)
    problems += [(line, clashes[host.mac]) for line, host in rows if host.mac in clashes]
    if problems:
        raise ImportRejected(sorted(problems))
    try:
        return store.add_hosts((host for _, host in rows), source=source)
    except ConflictError as exc:  # a concurrent writer got in between: still nothing imported
        raise ImportRejected([(0, f"{exc} (registered meanwhile by someone else)")]) from None
