"""Media, boot loaders, answer-file preview, and the long-running commands: serve, demo, simulator."""

from __future__ import annotations

import click

from provisioner import output, packs, sites
from provisioner.boot import answerfile, loaders
from provisioner import media as media_mod
from provisioner.cli.base import Context, emit, friendly, main, pass_ctx


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
    per_site = {m.name: sites.media_availability(ctx.store, m.name) for m in found}  # docs/sites.md
    emit([{**m.as_dict(), "generation": media_mod.media_generation(m), "sites": per_site[m.name]} for m in found],
         as_json, output.media_table(found, {name: sites.availability_text(s) for name, s in per_site.items()}
                                     if any(per_site.values()) and ctx.store.site_names() else None))


@media.command("add-pack")
@click.argument("media_name", metavar="MEDIA")
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", help="The pack's name under MEDIA (default: PATH's file or directory name).")
@click.option("--driver", is_flag=True,
              help="Require it to be a driver disk (its repodata's comps has the 'drivers' group); refused if not.")
@click.option("--host", "hosts", multiple=True, metavar="MAC", help="Only this host (repeatable).")
@click.option("--pool", "pools", multiple=True, metavar="NAME", help="Only hosts of this pool (repeatable).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def media_add_pack(ctx: Context, media_name: str, path: str, name: str | None, driver: bool, hosts: tuple[str, ...],
                   pools: tuple[str, ...], as_json: bool) -> None:
    """Add a supplemental pack or driver disk (ISO or tree at PATH) to MEDIA: the answer files of the hosts it
    applies to (--host/--pool; none: every host) name it as an extra <source> or a <driver-source>."""
    added = packs.import_pack(ctx.store, ctx.config, media_name, path, name=name, driver=driver, hosts=hosts,
                              pools=pools)
    emit(added.as_dict(), as_json, output.packs_table([added]))


@media.command("packs")
@click.argument("media_name", metavar="MEDIA")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def media_packs(ctx: Context, media_name: str, as_json: bool) -> None:
    """List MEDIA's supplemental packs and driver disks."""
    if ctx.store.get_media(media_name) is None:
        raise click.ClickException(f"no media named {media_name!r}")
    found = ctx.store.list_packs(media_name)
    emit([p.as_dict() for p in found], as_json, output.packs_table(found))


@media.command("remove-pack")
@click.argument("media_name", metavar="MEDIA")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def media_remove_pack(ctx: Context, media_name: str, name: str, as_json: bool) -> None:
    """Remove pack NAME from MEDIA (and its imported files): answer files no longer name it."""
    removed = packs.remove_pack(ctx.store, ctx.config, media_name, name)
    emit(removed.as_dict(), as_json, f"removed pack {removed.name} from media {removed.media}")


@main.group("tftp-root")
def tftp_root() -> None:
    """The static boot loaders under tftp_root."""


@tftp_root.command("prepare")
@pass_ctx
@friendly
def tftp_root_prepare(ctx: Context) -> None:
    """Copy pxelinux.0, lpxelinux.0, *.c32 from syslinux and build the UEFI GRUB netboot image."""
    for line in loaders.prepare_tftp_root(ctx.config):
        click.echo(line)


@main.command("serve")
@click.option("--allow-root", is_flag=True,
              help="Run even as root (refused by default: use an unprivileged user with CAP_NET_BIND_SERVICE).")
@click.option("--proxy-dhcp", is_flag=True,
              help="Also answer our registered MACs' PXE requests as a ProxyDHCP (dnsmasq in proxy mode; the site's "
                   "DHCP keeps giving addresses). Needs dnsmasq.")
@pass_ctx
@friendly
def serve_cmd(ctx: Context, allow_root: bool, proxy_dhcp: bool) -> None:
    """Run the TFTP and HTTP servers until SIGTERM or Ctrl-C."""
    from provisioner import runtime  # the servers (flask, waitress, tftpy) load for serve only
    try:
        runtime.serve(ctx.config, announce=click.echo, allow_root=allow_root, proxy_dhcp=proxy_dhcp)
    except runtime.StartupError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


@main.command("demo")
@click.option("--hosts", type=click.IntRange(2, 16), default=4, show_default=True, help="Hosts in the simulated pool.")
@click.option("--speed", type=click.FloatRange(1, 10_000), default=120.0, show_default=True,
              help="Simulated seconds per real second.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the demo's data here (default: a temp dir).")
def demo_cmd(hosts: int, speed: float, workdir: str | None) -> None:
    """Upgrade a simulated pool (XAPI simulator + PXE machines) through the real boot service on loopback."""
    from provisioner import demo  # the simulator loads for this command only (a faster start for the others)
    try:
        results = demo.run_demo(workdir, hosts=hosts, speed=speed, say=click.echo)
    except demo.DemoFailure as exc:
        raise click.ClickException(f"demo failed: {exc}") from None
    click.echo(output.table(
        ("host", "role", "mac", "boot method", "firmware", "before", "after", "attempt", "answer files", "verified"),
        ((r.name, r.role, r.mac, r.boot_method, r.firmware.upper(), r.before, r.after, r.attempt, r.answer_files,
          "yes" if r.verified else "NO")
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
