"""`provisioner hosts ...`: the host registry and arming."""

from __future__ import annotations

import click

from provisioner import output, registry
from provisioner.boot import attempts
from provisioner.model import BMC_KINDS, BOOT_METHODS, disk_warning
from provisioner.cli.base import Context, emit, friendly, main, pass_ctx


@main.group()
def hosts() -> None:
    """The host registry: MAC -> name, pool, boot disk, firmware, boot MAC, boot method, BMC."""


def _boot_options(func):
    """--boot-mac and --multipath/--no-multipath, shared by `hosts add` and `hosts update`."""
    func = click.option("--multipath/--no-multipath", default=None,
                        help="Boot from SAN: the installer gets device_mapper_multipath=enabled.")(func)
    return click.option("--boot-mac", help="The NIC the host network-boots from when it is not MAC (bond member, "
                        "provisioning NIC); '' to clear (on update).")(func)


@hosts.command("add")
@click.argument("mac")
@click.option("--name", required=True, help="Host name (unique within the pool).")
@click.option("--pool", required=True, help="Pool the host belongs to.")
@click.option("--disk", help="Boot disk holding the installation, e.g. /dev/disk/by-id/scsi-...")
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios", show_default=True)
@click.option("--ip", help="Management IP address (optional).")
@click.option("--notes", default="", help="Free text.")
@click.option("--site", help="The site whose boot server boots it (default: this server's `site`; docs/sites.md).")
@_boot_options
@click.option("--json", "as_json", is_flag=True, help="Print the new record as JSON.")
@pass_ctx
@friendly
def hosts_add(ctx: Context, as_json: bool, **fields) -> None:
    """Register a host by its management MAC (and --boot-mac when it network-boots from another NIC)."""
    host = registry.add_host(ctx.store, {k: v for k, v in fields.items() if v is not None}, site=ctx.config.site)
    emit(host.as_dict(), as_json, f"added {host.mac} {host.pool}/{host.name}")
    if disk_warning(host.disk):
        click.echo(f"warning: {disk_warning(host.disk)}", err=True)
    _site_warning(ctx, host)


def _site_warning(ctx: Context, host) -> None:
    warning = registry.site_warning(ctx.store, host.site)
    if warning:
        click.echo(f"warning: {warning}", err=True)


@hosts.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@pass_ctx
@friendly
def hosts_import(ctx: Context, csv_file) -> None:
    """Import hosts from a CSV file with a header row (all or nothing). Columns: mac,name,pool and any of
    disk,firmware,ip,notes,boot_mac,multipath,boot_method,bmc_kind,bmc_address,bmc_username,bmc_system_id,site,
    bmc_password_file (a file whose first line is the BMC password; never a password in the CSV)."""
    imported = registry.import_csv(ctx.store, csv_file.read(), source=f"csv {csv_file.name}", password_files=True,
                                   site=ctx.config.site)
    click.echo(f"imported {len(imported)} host(s)")
    for site in sorted({h.site for h in imported if h.site}):
        warning = registry.site_warning(ctx.store, site)
        if warning:
            click.echo(f"warning: {warning}", err=True)


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
@click.option("--site", help="The site whose boot server boots it (docs/sites.md).")
@_boot_options
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_update(ctx: Context, mac: str, as_json: bool, **fields) -> None:
    """Change fields of a registered host (the MAC itself cannot change)."""
    changes = {k: (v if v != "" else None) for k, v in fields.items() if v is not None}
    if not changes:
        raise click.UsageError("nothing to change: give at least one of --name --pool --disk --firmware --ip --notes "
                               "--site --boot-mac --multipath/--no-multipath")
    host = registry.update_host(ctx.store, mac, changes)
    emit(host.as_dict(), as_json, f"updated {host.mac} {host.pool}/{host.name}")
    if "site" in changes:
        _site_warning(ctx, host)


hosts.add_command(hosts_update, "edit")  # `hosts edit --site NAME` (issue 22's spelling) is `hosts update`


@hosts.command("bmc")
@click.argument("mac")
@click.option("--kind", type=click.Choice(BMC_KINDS), help="redfish or ipmi.")
@click.option("--address", help="Redfish: the service root URL (https://bmc:443 or http://...); IPMI: HOST[:PORT].")
@click.option("--username", help="The BMC user.")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="File whose first line is the BMC password (stored encrypted, never shown).")
@click.option("--system-id", help="Redfish system id (else the system is found by the host's MAC).")
@click.option("--clear", is_flag=True, help="Remove the host's BMC and its password.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_bmc(ctx: Context, mac: str, kind: str | None, address: str | None, username: str | None,
              password_file: str | None, system_id: str | None, clear: bool, as_json: bool) -> None:
    """Set (or --clear) the host's BMC: what the redfish and ipmi boot methods drive."""
    given = [f"--{n}" for n, v in (("kind", kind), ("address", address), ("username", username),
                                   ("password-file", password_file), ("system-id", system_id)) if v is not None]
    if clear:
        if given:
            raise click.UsageError(f"--clear takes no other option (got {' '.join(given)})")
        host = registry.clear_bmc(ctx.store, mac)
        emit(host.as_dict(), as_json, f"removed the BMC of {host.mac} {host.pool}/{host.name}")
        return
    missing = [f"--{n}" for n, v in (("kind", kind), ("address", address), ("username", username),
                                     ("password-file", password_file)) if not v]
    if missing:
        raise click.UsageError(f"missing {' '.join(missing)} (or --clear to remove the BMC)")
    password = registry.read_password_file(password_file, "password_file")
    host = registry.set_bmc(ctx.store, mac, kind=kind, address=address, username=username, password=password,
                            system_id=system_id)
    emit(host.as_dict(), as_json, f"{host.mac} {host.pool}/{host.name}: BMC {output.bmc_summary(host)}")


@hosts.command("boot-method")
@click.argument("mac")
@click.argument("method", type=click.Choice([*BOOT_METHODS, "pool-default"]))
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def hosts_boot_method(ctx: Context, mac: str, method: str, as_json: bool) -> None:
    """How the host is made to network-boot (pool-default: the pool's, `provisioner pools set --boot-method`)."""
    host = registry.set_boot_method(ctx.store, mac, None if method == "pool-default" else method)
    emit(host.as_dict(), as_json, f"{host.mac} {host.pool}/{host.name}: boot method {output.boot_summary(host)}")


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
