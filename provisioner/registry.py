"""The host registry service: what the CLI, REST API and dashboard call to add, import, change and remove hosts.

BMC passwords come in apart from the host fields (`bmc_password` in a JSON body, a password file for the CLI and
CSV), are encrypted here (provisioner.credentials, like pool passwords) and never come back out except through
bmc_password() for the BMC client; never put one in a message or an event.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any, Mapping

from provisioner import credentials
from provisioner.model import (BMC_FIELDS, BMC_KINDS, BOOT_METHODS, HOST_FIELDS, Host, ValidationError,
                               normalize_mac)
from provisioner.store import ConflictError, NotFoundError, Store

REQUIRED_COLUMNS = ("mac", "name", "pool")
PASSWORD_FIELD = "bmc_password"  # write-only, JSON bodies and the dashboard form
PASSWORD_FILE_COLUMN = "bmc_password_file"  # CSV: a path read at import, never a password in the file itself
CSV_COLUMNS = (*HOST_FIELDS, PASSWORD_FILE_COLUMN)


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


def _data_dir(store: Store) -> Path:
    return Path(store.data_dir)  # the key file lives with the database it protects (as for pools)


def _password(value: Any) -> str | None:
    """A given BMC password (None or blank: none given). Never echoed."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError("expected text", PASSWORD_FIELD)
    if len(value) > 1024 or any(ord(ch) < 32 for ch in value):
        raise ValidationError("must be one line of at most 1024 characters", PASSWORD_FIELD)
    return value


def _encrypted(store: Store, host: Host, password: str | None) -> str | None:
    if password is None:
        return None
    if host.bmc_kind is None:
        raise ValidationError("a BMC password needs a BMC (bmc_kind, bmc_address, bmc_username)", PASSWORD_FIELD)
    return credentials.encrypt(_data_dir(store), password)


def read_password_file(path: str | Path, field: str = "password_file") -> str:
    """The first line of a password file (readable, not empty); the message names the file, never its content."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read the password file {str(path)!r}: "
                              f"{exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}", field) from None
    if not first.strip():
        raise ValidationError(f"the password file {str(path)!r} is empty (its first line is the password)", field)
    return first


def site_warning(store: Store, site: str | None) -> str | None:
    """A warning when no server ever registered `site` (None: fine). Accepted anyway: a site's server may be set up
    after its hosts are registered (docs/sites.md "A host's site")."""
    if site is None or site in store.site_names():
        return None
    return (f"no boot server has registered site {site!r} yet: its hosts cannot network-boot until a "
            f"`provisioner serve` with site = \"{site}\" runs on this database (or change the host's site)")


def add_host(store: Store, fields: Mapping[str, Any], *, site: str | None = None) -> Host:
    """Validate and register one host; ValidationError or ConflictError name the problem. `bmc_password` (write
    only) may come with the fields. `site`: the site of a host given none (the registering server's)."""
    fields = dict(fields)
    if fields.get("site") in (None, "") and site is not None:
        fields["site"] = site
    password = _password(fields.pop(PASSWORD_FIELD, None))
    host = Host.from_fields(fields)
    return store.add_host(host, bmc_password=_encrypted(store, host, password))


def update_host(store: Store, mac: str, changes: Mapping[str, Any]) -> Host:
    """Partial update (PATCH semantics); the whole record is re-validated. A `bmc_password` replaces the stored one
    (blank or null: keep it); a host left without a BMC keeps no password."""
    changes = dict(changes)
    password = _password(changes.pop(PASSWORD_FIELD, None))
    unknown = sorted(set(changes) - set(HOST_FIELDS))
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(HOST_FIELDS)}, "
                              f"{PASSWORD_FIELD})")
    canonical = normalize_mac(mac)
    if password is None:
        return store.update_host(canonical, changes)
    current = get_host(store, canonical)
    return store.update_host(canonical, changes,
                             bmc_password=_encrypted(store, current.with_changes(changes), password))


def set_bmc(store: Store, mac: str, *, kind: str, address: str, username: str, password: str,
            system_id: str | None = None) -> Host:
    """Give host `mac` a BMC (replacing any it had) with its password (stored encrypted)."""
    if kind not in BMC_KINDS:
        raise ValidationError(f"{kind!r} is not one of {', '.join(BMC_KINDS)}", "bmc_kind")
    changes = {"bmc_kind": kind, "bmc_address": address, "bmc_username": username, "bmc_system_id": system_id}
    return update_host(store, mac, {**changes, PASSWORD_FIELD: password})


def clear_bmc(store: Store, mac: str) -> Host:
    """Remove host `mac`'s BMC and its password; refused while its boot method needs that BMC."""
    host = get_host(store, mac)
    if host.boot_method in BMC_KINDS:
        raise ValidationError(f"the host's boot method is {host.boot_method}, which needs its BMC: set another "
                              "first (provisioner hosts boot-method MAC network-first)", "bmc_kind")
    return store.update_host(host.mac, dict.fromkeys(BMC_FIELDS), bmc_password=None)


def set_boot_method(store: Store, mac: str, method: str | None) -> Host:
    """One of BOOT_METHODS, or None for the pool's default; redfish/ipmi need a BMC of that kind."""
    if method is not None and method not in BOOT_METHODS:
        raise ValidationError(f"{method!r} is not one of {', '.join(BOOT_METHODS)}", "boot_method")
    return update_host(store, mac, {"boot_method": method})


def boot_method_of(store: Store, host: Host) -> str:
    """The boot method that applies to `host`: its own, else its pool's default (network-first when the pool is not
    registered)."""
    if host.boot_method:
        return host.boot_method
    pool = store.get_pool(host.pool)
    return pool.boot_method if pool is not None else BOOT_METHODS[0]


def bmc_password(store: Store, mac: str) -> str | None:
    """Host `mac`'s BMC password in clear, for the BMC client only (None: none set; credentials.SecretError when
    the key file is missing or another one)."""
    stored = store.bmc_password(normalize_mac(mac))
    return credentials.decrypt(_data_dir(store), stored, what=credentials.BMC) if stored else None


def remove_host(store: Store, mac: str) -> Host:
    return store.remove_host(normalize_mac(mac))


def parse_csv(text: str, passwords: dict[str, str] | None = None, *, password_files: bool = False
              ) -> tuple[list[tuple[int, Host]], list[tuple[int, str]]]:
    """Parse a host CSV (header row first) into good (line, Host) rows and (line, problem) for bad ones.

    A bmc_password_file cell is read now (relative paths from the current directory); the password goes into
    `passwords` (MAC -> plain text), never into a Host or a problem. Only the CLI passes `password_files`: a CSV
    sent over HTTP must not make the server read its own files (and send their first line to a BMC address
    of the sender's choosing).

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
    unknown = [c for c in header if c not in CSV_COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if unknown:
        problems.append((1, f"unknown column(s) {', '.join(unknown)} (known: {', '.join(CSV_COLUMNS)})"))
    if missing:
        problems.append((1, f"missing required column(s) {', '.join(missing)}"))
    if duplicated:
        problems.append((1, f"repeated column(s) {', '.join(duplicated)}"))
    if PASSWORD_FILE_COLUMN in header and not password_files:
        problems.append((1, f"{PASSWORD_FILE_COLUMN} is read only by the command line (`provisioner hosts import`): "
                            "set BMC passwords with bmc_password in the REST API or the dashboard's host form"))
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
        fields = {k: (v if v.strip() else None) for k, v in zip(header, cells)}
        password_file = fields.pop(PASSWORD_FILE_COLUMN, None)
        try:
            host = Host.from_fields(fields)
            password = read_password_file(password_file.strip(), PASSWORD_FILE_COLUMN) if password_file else None
            if password is not None and host.bmc_kind is None:
                raise ValidationError("needs a BMC (bmc_kind, bmc_address, bmc_username)", PASSWORD_FILE_COLUMN)
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
        clash = next((m for m in (host.mac, host.boot_mac) if m in seen_macs), None)
        if host.boot_mac is not None and clash is not None:
            problems.append((line, f"MAC {clash} already appears on line {seen_macs[clash]}"))
            continue
        seen_macs[host.mac] = seen_names[key] = line
        if host.boot_mac is not None:
            seen_macs[host.boot_mac] = line
        if password is not None and passwords is not None:
            passwords[host.mac] = password
        rows.append((line, host))
    if not rows and not problems:
        raise ImportRejected([(1, "no host rows after the header")])
    return rows, problems


def import_csv(store: Store, text: str, *, source: str = "csv", password_files: bool = False,
               site: str | None = None) -> list[Host]:
    """All-or-nothing import: every bad row (syntax, validation, duplicates, registry clashes) is reported.
    `password_files`: read bmc_password_file cells (the CLI only; see parse_csv). `site`: the site of rows with an
    empty (or no) site column (the importing server's)."""
    passwords: dict[str, str] = {}
    rows, problems = parse_csv(text, passwords, password_files=password_files)
    if site is not None:
        rows = [(line, host if host.site else dataclasses.replace(host, site=site)) for line, host in rows]
    clashes = store.conflicts(host for _, host in rows)
    problems += [(line, clashes[host.mac]) for line, host in rows if host.mac in clashes]
    if problems:
        raise ImportRejected(sorted(problems))
    try:
        encrypted = {mac: credentials.encrypt(_data_dir(store), p) for mac, p in passwords.items()}
        return store.add_hosts((host for _, host in rows), source=source, bmc_passwords=encrypted)
    except ConflictError as exc:  # a concurrent writer got in between: still nothing imported
        raise ImportRejected([(0, f"{exc} (registered meanwhile by someone else)")]) from None
