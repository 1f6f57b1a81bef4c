"""`provisioner pools ...` and `provisioner upgrade ...`: the coordinator's commands."""

from __future__ import annotations

import click

from provisioner import output
from provisioner.config import secret_from_env
from provisioner.coordinator import plan as coord_plan
from provisioner.coordinator import pools as coord_pools
from provisioner.coordinator import runner as coord_runner
from provisioner.cli.base import Context, emit, friendly, main, pass_ctx


@main.group()
def pools() -> None:
    """XenServer pools the coordinator upgrades (credentials are stored, never printed)."""


@pools.command("add")
@click.argument("name")
@click.option("--url", required=True, help="The pool master's XAPI URL, e.g. https://10.0.0.10")
@click.option("--username", default="root", show_default=True)
@click.option("--password-file", type=click.File("r"), help="File holding the password (else $PROVISIONER_POOL_PASSWORD).")
@pass_ctx
@friendly
def pools_add(ctx: Context, name: str, url: str, username: str, password_file) -> None:
    """Register a pool by its master's URL."""
    password = password_file.read().strip() if password_file else secret_from_env("PROVISIONER_POOL_PASSWORD")
    if not password:
        raise click.UsageError("give --password-file FILE or set PROVISIONER_POOL_PASSWORD")
    record = coord_pools.add_pool(ctx.store, name, url, username, password)
    click.echo(f"added pool {record.name} ({url})")


@pools.command("discover")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def pools_discover(ctx: Context, name: str, as_json: bool) -> None:
    """Register the pool's hosts from XAPI (management PIF MACs); conflicts are reported, never overwritten."""
    found = coord_pools.discover(ctx.store, name, coord_pools.connect(ctx.store, name))
    emit(found.as_dict(), as_json, output.discovery(found))


@main.group()
def upgrade() -> None:
    """Rolling pool upgrade: master first, then each member, one at a time."""


@upgrade.command("plan")
@click.argument("pool")
@click.option("--media", "media_name", required=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def upgrade_plan(ctx: Context, pool: str, media_name: str, as_json: bool) -> None:
    """Every precheck and the ordered host list; changes nothing."""
    found = coord_plan.make_plan(ctx.store, pool, media_name, coord_pools.connect(ctx.store, pool))
    emit(found.as_dict(), as_json, output.plan(found))
    if not found.ok:
        raise SystemExit(1)


@upgrade.command("start")
@click.argument("pool")
@click.option("--media", "media_name", required=True)
@click.option("--stop-on-failure", is_flag=True, help="Stop at the first failed member (default: go on).")
@pass_ctx
@friendly
def upgrade_start(ctx: Context, pool: str, media_name: str, stop_on_failure: bool) -> None:
    """Start the rolling upgrade and follow it until it ends."""
    driver = coord_pools.connect(ctx.store, pool)
    run = coord_runner.start_run(ctx.store, pool, media_name, driver, stop_on_failure=stop_on_failure)
    done = coord_runner.Runner(ctx.store, ctx.config, run.id, driver, say=click.echo).run()
    click.echo(output.run_report(coord_runner.report(ctx.store, done.id)))


@upgrade.command("resume")
@click.argument("pool")
@pass_ctx
@friendly
def upgrade_resume(ctx: Context, pool: str) -> None:
    """Continue the pool's interrupted run from its last committed step."""
    runner = coord_runner.resume(ctx.store, ctx.config, pool, coord_pools.connect(ctx.store, pool), say=click.echo)
    click.echo(output.run_report(coord_runner.report(ctx.store, runner.run().id)))


@upgrade.command("abort")
@click.argument("pool")
@pass_ctx
@friendly
def upgrade_abort(ctx: Context, pool: str) -> None:
    """Stop the pool's run before its next destructive step (the host in progress is left safe)."""
    run = coord_runner.request_abort(ctx.store, pool)
    click.echo(f"abort requested for run {run.id} of pool {pool}")


@upgrade.command("status")
@click.argument("pool", required=False)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def upgrade_status(ctx: Context, pool: str | None, as_json: bool) -> None:
    """Runs (newest first) with each host's step, reason and remedy."""
    runs = coord_runner.status(ctx.store, pool)
    emit(runs, as_json, "\n\n".join(output.run_report(r) for r in runs) or "no runs")
