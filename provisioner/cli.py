"""The `provisioner` command line (click). Thin: parse, call one service function, format."""

from __future__ import annotations

import functools
import json

import click

from provisioner import answerfile, attempts, bootloaders, demo, output, registry, runtime
from provisioner import media as media_mod
from provisioner.config import ConfigError, load_config, secret_from_env
from provisioner.coordinator import plan as coord_plan
from provisioner.coordinator import pools as coord_pools
from provisioner.coordinator import runner as coord_runner
from provisioner.model import ValidationError, disk_warning
from provisioner.store import Store, StoreError


class Context:
    """Lazily built config and store, so `--help` never touches the disk."""

    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._config = None
        self._store = None

    @property
    def config(self):
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.config.db_path)
        return self._store


pass_ctx = click.make_pass_decorator(Context)


def friendly(func):
    """Turn our domain errors into a one-line message and exit status 1 (no traceback for user mistakes)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except registry.ImportRejected as exc:
            raise click.ClickException(str(exc)) from None
        except (ValidationError, ConfigError, StoreError, ValueError, LookupError, OSError,
                bootloaders.BootloaderError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False) if as_json else text)


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="PROVISIONER_CONFIG",
              help="provisioner.toml to read (default: $PROVISIONER_CONFIG, else ./provisioner.toml if present).")
@click.version_option(package_name="provisioner")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """PXE provisioning server for XenServer rolling pool upgrades."""
    ctx.obj = Context(config_path)


# --- hosts ---


@main.group()
def hosts() -> None:
    """The host registry: MAC -> name, pool, boot disk, firmware."""


@hosts.command("add")
@click.argument("mac")
@click.option("--name", required=True, help="Host name (unique within the pool).")
@click.option("--pool", required=True, help="Pool the host belongs to.")
@click.option("--disk", help="Boot disk holding the installation, e.g. /dev/disk/by-id/scsi-...")
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios", show_default=True)
@click.option("--ip", help="Management IP address (optional).")
@click.option("--notes", default="", help="Free text.")
@click.option("--json", "as_json", is_flag=True, help="Print the new record as JSON.")
@pass_ctx
@friendly
def hosts_add(ctx: Context, as_json: bool, **fields) -> None:
    """Register a host by the MAC it network-boots with."""
    host = registry.add_host(ctx.store, fields)
    emit(host.as_dict(), as_json, f"added {host.mac} {host.pool}/{host.name}")
    if disk_warning(host.disk):
        click.echo(f"warning: {disk_warning(host.disk)}", err=True)


@hosts.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@pass_ctx
@friendly
def hosts_import(ctx: Context, csv_file) -> None:
    """Import hosts from a CSV file with a header row (all or nothing)."""
    imported = registry.import_csv(ctx.store, csv_file.read(), source=f"csv {csv_file.name}")
    click.echo(f"imported {len(imported)} host(s)")


@hosts.command("list")
@click.option("--pool", help="Only hosts of this pool.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_list(ctx: Context, pool: str | None, as_json: bool) -> None:
    """List registered hosts."""
    found = ctx.store.list_hosts(pool=pool)
    emit([h.as_dict() for h in found], as_json, output.hosts_table(found))


@hosts.command("show")
@click.argument("mac")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_show(ctx: Context, mac: str, as_json: bool) -> None:
    """Show one host and its recent events."""
    host = registry.get_host(ctx.store, mac)
    events = ctx.store.events(mac=host.mac)[-20:]
    emit({"host": host.as_dict(), "events": events}, as_json, output.host_detail(host, events))


@hosts.command("update")
@click.argument("mac")
@click.option("--name")
@click.option("--pool")
@click.option("--disk", help="Boot disk holding the installation ('' to clear).")
@click.option("--firmware", type=click.Choice(["bios", "uefi"]))
@click.option("--ip", help="Management IP address ('' to clear).")
@click.option("--notes")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_update(ctx: Context, mac: str, as_json: bool, **fields) -> None:
    """Change fields of a registered host (the MAC itself cannot change)."""
    changes = {k: (v if v != "" else None) for k, v in fields.items() if v is not None}
    if not changes:
        raise click.UsageError("nothing to change: give at least one of --name --pool --disk --firmware --ip --notes")
    host = registry.update_host(ctx.store, mac, changes)
    emit(host.as_dict(), as_json, f"updated {host.mac} {host.pool}/{host.name}")


@hosts.command("arm")
@click.argument("mac")
@click.option("--media", "media_name", required=True, help="Media to upgrade to.")
@click.option("--window", "window_seconds", type=click.IntRange(min=1), help="Close the window after N seconds.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_arm(ctx: Context, mac: str, media_name: str, window_seconds: int | None, as_json: bool) -> None:
    """Arm MAC: its next network boot gets the upgrade installer, once."""
    attempt = attempts.arm(ctx.store, ctx.config, mac, media_name, window_seconds=window_seconds)
    emit(attempt.as_dict(), as_json,
         f"armed {attempt.mac} for {attempt.media} (attempt {attempt.id}); its next network boot installs the upgrade")


@hosts.command("disarm")
@click.argument("mac")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_disarm(ctx: Context, mac: str, as_json: bool) -> None:
    """Cancel MAC's armed attempt: every boot is a local boot again."""
    cancelled = attempts.disarm(ctx.store, mac, reason="cli")
    emit([a.as_dict() for a in cancelled], as_json,
         f"disarmed attempt(s) {', '.join(str(a.id) for a in cancelled)}" if cancelled else "nothing was armed")


@hosts.command("attempts")
@click.argument("mac")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_attempts(ctx: Context, mac: str, as_json: bool) -> None:
    """List MAC's installer attempts, newest first."""
    found = ctx.store.list_attempts(registry.get_host(ctx.store, mac).mac)
    emit([a.as_dict() for a in found], as_json, output.attempts_table(found))


@hosts.command("remove")
@click.argument("mac")
@pass_ctx
@friendly
def hosts_remove(ctx: Context, mac: str) -> None:
    """Remove a host from the registry."""
    host = registry.remove_host(ctx.store, mac)
    click.echo(f"removed {host.mac} {host.pool}/{host.name}")


@main.command("answerfile")
@click.argument("mac")
@click.option("--media", "media_name", help="Media to upgrade to (default: the newest imported).")
@pass_ctx
@friendly
def answerfile_preview(ctx: Context, mac: str, media_name: str | None) -> None:
    """Print the (validated) upgrade answer file MAC would get, without arming it."""
    click.echo(answerfile.preview(ctx.config, ctx.store, mac, media_name), nl=False)


# --- media and boot loaders ---


@main.group()
def media() -> None:
    """Installation media: extracted XenServer ISO trees (or .iso files) hosts are upgraded to."""


@media.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def media_add(ctx: Context, name: str, path: str, as_json: bool) -> None:
    """Import the tree (or .iso) at PATH as media NAME; it is served unchanged over HTTP."""
    added = media_mod.import_media(ctx.store, ctx.config, name, path)
    emit(added.as_dict(), as_json, output.media_table([added]))


@media.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def media_list(ctx: Context, as_json: bool) -> None:
    """List imported media."""
    found = ctx.store.list_media()
    emit([{**m.as_dict(), "generation": media_mod.media_generation(m)} for m in found], as_json,
         output.media_table(found))


@main.group("tftp-root")
def tftp_root() -> None:
    """The static boot loaders under tftp_root."""


@tftp_root.command("prepare")
@pass_ctx
@friendly
def tftp_root_prepare(ctx: Context) -> None:
    """Copy pxelinux.0, lpxelinux.0, *.c32 from syslinux and build the UEFI GRUB netboot image."""
    for line in bootloaders.prepare_tftp_root(ctx.config):
        click.echo(line)


# --- services ---


@main.command("serve")
@pass_ctx
@friendly
def serve_cmd(ctx: Context) -> None:
    """Run the TFTP and HTTP servers until SIGTERM or Ctrl-C."""
    try:
        runtime.serve(ctx.config, announce=click.echo)
    except runtime.StartupError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


@main.command("demo")
@click.option("--hosts", type=click.IntRange(2, 16), default=4, show_default=True, help="Hosts in the simulated pool.")
@click.option("--speed", type=click.FloatRange(1, 10_000), default=120.0, show_default=True,
              help="Simulated seconds per real second.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the demo's data here (default: a temp dir).")
def demo_cmd(hosts: int, speed: float, workdir: str | None) -> None:
    """Upgrade a simulated pool (XAPI simulator + PXE machines) through the real boot service on loopback."""
    try:
        results = demo.run_demo(workdir, hosts=hosts, speed=speed, say=click.echo)
    except demo.DemoFailure as exc:
        raise click.ClickException(f"demo failed: {exc}") from None
    click.echo(output.table(
        ("host", "role", "mac", "before", "after", "attempt", "answer files", "verified"),
        ((r.name, r.role, r.mac, r.before, r.after, r.attempt, r.answer_files, "yes" if r.verified else "NO")
         for r in results)))
    click.echo(f"every host verified at {demo.TARGET_VERSION}, master first, one installer run each")


@main.group()
def simulator() -> None:
    """The XAPI simulator, for labs and other tools."""


@simulator.command("serve")
@click.option("--hosts", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--speed", type=click.FloatRange(1, 10_000), default=60.0, show_default=True)
@click.option("--version", "version", default="8.2.1", show_default=True, help="XenServer version of the hosts.")
@click.option("--password", help="Require this password (default: any).")
def simulator_serve(hosts: int, speed: float, version: str, password: str | None) -> None:
    """Serve a simulated pool (one XML-RPC endpoint per host) until Ctrl-C or SIGTERM."""
    from provisioner.simulator.builder import serve_simulator

    serve_simulator(hosts, speed=speed, version=version, password=password, announce=click.echo)


# --- pools and the rolling upgrade (coordinator) ---


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
