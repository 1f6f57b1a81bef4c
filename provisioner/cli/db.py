"""`provisioner db migrate` and `provisioner db copy` (docs/store.md): the configured database's schema, and
moving an installation between SQLite and PostgreSQL without losing a row."""

from __future__ import annotations

import click

from provisioner.cli.base import Context, emit, friendly, main, pass_ctx
from provisioner.store import SCHEMA_VERSION, Store
from provisioner.store.copy import copy_store, parse_target


@main.group("db")
def db() -> None:
    """The store's database: schema migrations, copying between SQLite and PostgreSQL."""


@db.command("migrate")
@click.option("--json", "as_json", is_flag=True, help="What was applied, as JSON.")
@pass_ctx
@friendly
def migrate_cmd(ctx: Context, as_json: bool) -> None:
    """Apply the pending schema migrations to the configured database (database_url, else the SQLite file)."""
    store = Store.from_config(ctx.config, migrate=False)
    try:
        before = store.schema_version()
        store.migrate()
        applied = store.applied
    finally:
        store.close()
    data = {"database": store.where, "backend": store.backend, "from": before, "to": SCHEMA_VERSION,
            "applied": applied}
    if applied:
        text = (f"{store.where}: applied migration(s) {', '.join(map(str, applied))}; schema {before} -> "
                f"{SCHEMA_VERSION}")
    else:
        text = f"{store.where}: schema {before} is current, nothing to apply"
    emit(data, as_json, text)


@db.command("copy")
@click.option("--from", "source", required=True, metavar="sqlite:PATH|postgresql://...",
              help="The database to read (only read).")
@click.option("--to", "target", required=True, metavar="postgresql://...|sqlite:PATH",
              help="The database to fill; it must be empty (a fresh or only migrated one).")
@click.option("--replace", is_flag=True, help="Delete what the target holds first (same transaction as the copy).")
@click.option("--json", "as_json", is_flag=True, help="Counts and checksums per table, as JSON.")
@pass_ctx
@friendly
def copy_cmd(ctx: Context, source: str, target: str, replace: bool, as_json: bool) -> None:
    """Copy every table's rows in one transaction on the target, then compare row counts and checksums per table."""
    src = Store(parse_target(source), migrate=False, data_dir=ctx.config.data_dir)
    dst = None
    try:
        dst = Store(parse_target(target), migrate=False, data_dir=ctx.config.data_dir)
        report = copy_store(src, dst, replace=replace)
    finally:
        src.close()
        if dst is not None:
            dst.close()
    if as_json:
        emit(report.as_dict(), True, "")
    else:
        width = max(len(t.table) for t in report.tables)
        lines = [f"{'table':<{width}}  {'source':>9}  {'target':>9}  checksum (sha256, source = target)"]
        for t in report.tables:
            mark = t.source_checksum[:16] if t.ok else f"{t.source_checksum[:16]} != {t.target_checksum[:16]}"
            lines.append(f"{t.table:<{width}}  {t.source_rows:>9}  {t.target_rows:>9}  {mark}"
                         f"{'' if t.ok else '  MISMATCH'}")
        lines.append(f"copied {sum(t.source_rows for t in report.tables)} rows of {len(report.tables)} tables from "
                     f"{report.source} to {report.target} (schema {report.schema_version}"
                     f"{'' if report.migrated_to == report.schema_version else f', then migrated to {report.migrated_to}'}"
                     f"): {'every count and checksum matches' if report.ok else 'MISMATCH'}")
        emit(None, False, "\n".join(lines))
    if not report.ok:
        raise click.ClickException("the copy does not match the source (see the table above); the target was "
                                   "committed: inspect it, then copy again with --replace")
