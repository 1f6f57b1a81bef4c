"""`provisioner pools ...` and `provisioner upgrade ...`: the coordinator's commands."""

from __future__ import annotations

import json
import time
from typing import Callable

import click

from provisioner import output, progress, states
from provisioner.model import BOOT_METHODS
from provisioner.coordinator import carry as coord_carry
from provisioner.coordinator import plan as coord_plan
from provisioner.coordinator import pools as coord_pools
from provisioner.coordinator import report as coord_report
from provisioner.coordinator import runner as coord_runner
from provisioner.coordinator import wave_facts as coord_wave_facts
from provisioner.coordinator.locks import lock_holder
from provisioner.coordinator.service import FlowService, ProgressReader
from provisioner.cli.base import Context, emit, friendly, main, pass_ctx


@main.group()
def pools() -> None:
    """XenServer pools the coordinator upgrades (credentials are stored, never printed)."""


@pools.command("set")
@click.argument("name")
@click.option("--boot-method", required=True, type=click.Choice(BOOT_METHODS),
              help="The default boot method of the pool's hosts (a host's own `hosts boot-method` wins).")
@pass_ctx
@friendly
def pools_set(ctx: Context, name: str, boot_method: str) -> None:
    """Change a pool's settings: its hosts' default boot method."""
    record = coord_pools.set_boot_method(ctx.store, name, boot_method)
    click.echo(f"pool {record.name}: default boot method {record.boot_method}")


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
    """Rolling pool upgrade: master first, then each member, one at a time (or in waves: --parallel)."""


def _run_options(func):
    func = click.option("--updates", metavar="NAME", default=None,
                        help="Bring each upgraded host, then the pool, to the update level of update repository NAME "
                             "(`provisioner updates list`): the CONVERGE step applies its updates and their "
                             "guidances before the host's VMs come back.")(func)
    func = click.option("--stop-pinned-vms", is_flag=True,
                        help="Shut down the VMs pinned to their host (PCI passthrough, vGPU, SR-IOV) right before the "
                             "host's evacuation and start them again on it after its upgrade (= --consent "
                             "PINNED_VM).")(func)
    func = click.option("--consent", multiple=True, metavar="CODE",
                        help="Agree to a consent-level precheck by its code (repeatable; `upgrade plan` lists them "
                             "and what the run then does).")(func)
    func = click.option("--power-cycle", is_flag=True,
                        help="Shut members down and power them on through the pool (host.power_on: wake-on-lan, "
                             "IPMI) instead of rebooting them; the master is rebooted.")(func)
    func = click.option("--migrate-back", is_flag=True, help="Migrate each host's VMs back after its upgrade.")(func)
    return click.option("--disable-ha-wlb", is_flag=True, help="Turn HA / WLB off for the run and back on at the end "
                        "(default: the precheck refuses).")(func)


def _wave_options(func):
    func = click.option("--group-tag-prefix", metavar="PREFIX", default=None,
                        help="Host tags starting with PREFIX (e.g. 'rack:') name groups (rack, power feed): no two "
                             "hosts of a group are upgraded in the same wave.")(func)
    func = click.option("--max-failures", metavar="K|P%", default=None,
                        help="Start no new wave once K members (or P% of them) have failed; the wave in flight "
                             "finishes (given alone: waves of one host).")(func)
    return click.option("--parallel", metavar="N|auto", default=None,
                        help="After the master, upgrade the members in waves of at most N hosts, or 'auto': the "
                             "largest waves the pool's free memory, HA and group tags allow (docs/waves.md).")(func)


@upgrade.command("plan")
@click.argument("pool")
@click.option("--media", "media_name", required=True)
@_run_options
@_wave_options
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def upgrade_plan(ctx: Context, pool: str, media_name: str, as_json: bool, parallel: str | None,
                 max_failures: str | None, group_tag_prefix: str | None, **options: bool) -> None:
    """Every precheck and the ordered host list, with the options `upgrade start` would get; changes nothing."""
    driver = coord_pools.connect(ctx.store, pool)
    found = coord_plan.make_plan(ctx.store, pool, media_name, driver, config=ctx.config, **options)
    waves = coord_wave_facts.plan_of(found, driver, parallel, max_failures, group_tag_prefix,
                                     disable_ha_wlb=bool(options.get("disable_ha_wlb")))
    emit({**found.as_dict(), **({"waves": waves.as_dict()} if waves else {})}, as_json,
         output.plan(found) + ("\nWaves:\n" + "\n".join(f"  {line}" for line in waves.lines()) if waves else ""))
    if not found.ok:
        raise SystemExit(1)


FOREGROUND_NOTE = ("The run is driven by THIS process until it ends: a running `provisioner serve` cannot take it "
                   "over (it is another process); to have the server drive a run, start it over REST "
                   "(POST /api/v1/pools/POOL/upgrade). Ctrl-C stops it resumably: `provisioner upgrade resume POOL`, "
                   "or the next `provisioner serve` start, continues it.")


def _follow(store, run_ids: list[str], as_json: bool, interval: float,
            alive: Callable[[], bool] = lambda: True, heartbeat: float = 30.0) -> list[dict]:
    """Print each run's progress when a step or state changes (and every `heartbeat` s) until every run ends
    or `alive()` turns false; JSON lines with --json. Returns the last views."""
    reader, shown, last_print, views = ProgressReader(store), {}, {}, {}
    while True:
        ended = not alive()  # judged BEFORE reading: a run that ends in between is shown in its final state
        for run_id in run_ids:
            view = views[run_id] = reader.view(run_id)
            key = (view["state"], tuple((h["step"], h["reason"]) for h in view["hosts"]))
            now = time.monotonic()
            if key != shown.get(run_id) or now - last_print.get(run_id, 0.0) >= heartbeat:
                shown[run_id], last_print[run_id] = key, now
                click.echo(json.dumps({"ts": time.time(), **view}) if as_json else progress.render(view) + "\n")
        if ended or all(v["state"] in states.RUN_TERMINAL for v in views.values()):
            return list(views.values())
        time.sleep(interval)


def _drive(ctx: Context, launch: Callable[[FlowService, Callable[[str], None] | None], object], follow: bool,
           as_json: bool, interval: float) -> None:
    """Run one pool's run in this process (FlowService thread), show it, and end with its report."""
    svc = FlowService(ctx.store, ctx.config)  # timeouts from the config (coordinator/wiring.py)
    run = launch(svc, None if follow or as_json else click.echo)
    try:
        if follow:
            _follow(ctx.store, [run.id], as_json, interval, alive=lambda: run.id in svc.running())
        while svc.wait(run.id, 1.0).state not in states.RUN_TERMINAL and run.id in svc.running():
            pass
    except KeyboardInterrupt:
        svc.stop()
        raise click.ClickException(f"interrupted: run {run.id} stays resumable (`provisioner upgrade resume "
                                   f"{run.pool}`, or the next `provisioner serve` start)") from None
    svc.stop()
    final = coord_report.run_report(ctx.store, run.id)
    if not as_json:
        click.echo(output.run_report(final))
    elif not follow:
        click.echo(json.dumps(final, indent=2))
    if final["state"] not in states.RUN_TERMINAL:
        crashed = ctx.store.events(run_id=run.id, kind="run.crashed")
        raise click.ClickException(f"run {run.id} stopped in state {final['state']}: "
                                   f"{crashed[-1]['details']['error'] if crashed else 'see the events'}; "
                                   f"`provisioner upgrade resume {run.pool}` continues it")
    if final["state"] != states.RUN_DONE:
        raise SystemExit(1)


def _follow_options(func):
    func = click.option("--interval", type=click.FloatRange(0.1, 600), default=2.0, show_default=True,
                        help="Seconds between two looks at the run with --follow.")(func)
    func = click.option("--json", "as_json", is_flag=True, help="JSON (with --follow: one JSON object per line).")(func)
    return click.option("--follow", is_flag=True, help="Show live per-host progress: step, elapsed, ETA.")(func)


@upgrade.command("start", help="Start the rolling upgrade and drive it until it ends.\n\n" + FOREGROUND_NOTE)
@click.argument("pool")
@click.option("--media", "media_name", required=True)
@click.option("--stop-on-failure", is_flag=True, help="Stop at the first failed member (default: go on).")
@click.option("--host-up-timeout", type=click.IntRange(60, 86_400), metavar="SECONDS",
              help="How long a host may take to come back once its installer reported its result; kept with the "
                   "run (default: the configuration's host_up_timeout_s, 1200 = Xen Orchestra's 20 min).")
@_run_options
@_wave_options
@_follow_options
@pass_ctx
@friendly
def upgrade_start(ctx: Context, pool: str, media_name: str, stop_on_failure: bool, host_up_timeout: int | None,
                  follow: bool, as_json: bool, interval: float, **options: bool) -> None:
    if host_up_timeout is not None:
        options["host_up_timeout"] = float(host_up_timeout)
    _drive(ctx, lambda svc, say: svc.start(pool, media_name, stop_on_failure=stop_on_failure, say=say, **options),
           follow, as_json, interval)


@upgrade.command("resume", help="Continue the pool's interrupted run from its last committed step.\n\n"
                 + FOREGROUND_NOTE)
@click.argument("pool")
@_follow_options
@pass_ctx
@friendly
def upgrade_resume(ctx: Context, pool: str, follow: bool, as_json: bool, interval: float) -> None:
    _drive(ctx, lambda svc, say: svc.resume(pool, say=say), follow, as_json, interval)


@upgrade.command("abort")
@click.argument("pool")
@pass_ctx
@friendly
def upgrade_abort(ctx: Context, pool: str) -> None:
    """Stop the pool's run before its next destructive step (the host in progress is left safe).

    A host whose installer runs past every timer is not waited for: the run stops at once and the host is left as
    it is, in an unknown state (see `upgrade mark-failed`)."""
    run = coord_runner.request_abort(ctx.store, pool)
    click.echo(f"abort requested for run {run.id} of pool {pool}")


@upgrade.command("mark-failed")
@click.argument("pool")
@click.argument("host")
@pass_ctx
@friendly
def upgrade_mark_failed(ctx: Context, pool: str, host: str) -> None:
    """Fail HOST (name or MAC), which the run is waiting on (its installer running past every timer).

    The decision is journaled; the waiting step fails the host at its next look ("marked failed by the operator
    after N min", unless it came back first) and its remedy is classified from evidence."""
    found = coord_runner.request_mark_failed(ctx.store, pool, host)
    click.echo(f"{found.name} ({found.mac}) marked failed in the run of pool {pool}: the run fails it at its next "
               "look")


@upgrade.command("restore-settings")
@click.argument("pool")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def upgrade_restore_settings(ctx: Context, pool: str, as_json: bool) -> None:
    """Put back now the HA, WLB and VM auto_poweron settings ended runs of POOL turned off and left off.

    Refused while a run of the pool is active (its FINALIZE puts them back); a second call does nothing. Exit 1
    when something could not be restored (the reason is printed)."""
    driver = coord_pools.connect(ctx.store, pool)
    try:
        done = coord_carry.restore(ctx.store, pool, driver)
    finally:
        driver.close()
    emit(done, as_json, output.restore_settings(done))
    if done["not_restored"]:
        raise SystemExit(1)


@upgrade.command("status")
@click.argument("pool", required=False)
@_follow_options
@pass_ctx
@friendly
def upgrade_status(ctx: Context, pool: str | None, follow: bool, as_json: bool, interval: float) -> None:
    """Runs (newest first) with each host's step, elapsed time, ETA, reason and remedy.

    With --follow: the runs in progress (whoever drives them: `serve` or another `upgrade start`), live, until
    they end; with no run in progress, the pool's latest run."""
    if not follow:
        reader = ProgressReader(ctx.store)
        views = [reader.view(r.id) for r in ctx.store.list_runs(pool)]
        text = "\n\n".join(progress.render(v) + "".join("\n" + "\n".join(output.remedy_lines(h))
                                                         for h in v["hosts"] if h.get("remedy")) for v in views)
        emit(views, as_json, text or "no runs")
        return
    runs = ctx.store.list_runs(pool, active_only=True) or ctx.store.list_runs(pool)[:1]
    if not runs:
        raise click.ClickException(f"no runs{f' of pool {pool}' if pool else ''}")

    def active() -> list:
        return [r for r in (ctx.store.get_run(run.id) for run in runs) if r.state not in states.RUN_TERMINAL]

    def driven() -> bool:  # stop following runs that no process drives: they would never change
        still = active()  # none: a run just ended, so one more pass shows its final state
        return not still or any(lock_holder(ctx.store, r.pool) is not None for r in still)

    _follow(ctx.store, [r.id for r in runs], as_json, interval, alive=driven)
    idle = active()
    if idle:
        raise click.ClickException("; ".join(
            f"run {r.id} of pool {r.pool} is in state {r.state} but no process drives it (no `serve` or "
            f"`upgrade start` holds the pool): `provisioner upgrade resume {r.pool}` continues it" for r in idle))
