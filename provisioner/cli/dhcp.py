"""`provisioner dhcp-config`: the snippet the site's DHCP server needs for our registered hosts (docs/dhcp.md)."""

from __future__ import annotations

import click

from provisioner.cli.base import Context, emit, friendly, main, pass_ctx
from provisioner.dhcp import snippets
from provisioner.dhcp.plan import FORMATS


@main.command("dhcp-config")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="kea (JSON to merge into Dhcp4), isc (dhcpd.conf), dnsmasq (conf lines), windows (PowerShell).")
@click.option("--next-server", metavar="IP", help="Our TFTP server's IPv4 address (default: public_url's host).")
@click.option("--ipxe/--no-ipxe", default=None,
              help="iPXE clients get our per-MAC iPXE script URL (default: the dhcp_ipxe config key).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="The plan (hosts, next-server, boot files) and the snippet.")
@pass_ctx
@friendly
def dhcp_config(ctx: Context, fmt: str, next_server: str | None, ipxe: bool | None, output: str | None,
                as_json: bool) -> None:
    """Print the DHCP configuration that sends our registered hosts' PXE requests here: next-server and the boot
    file by client architecture (option 93), for the site's DHCP server."""
    plan, text = snippets.dhcp_config(ctx.store, ctx.config, fmt, next_server=next_server, ipxe=ipxe)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    if output:
        snippets.write_atomic(output, text)
    if as_json:
        emit({**plan.as_dict(), "format": fmt, "snippet": text, "output": output}, True, "")
    elif not output:
        click.echo(text, nl=False)
    else:
        click.echo(f"wrote {fmt} DHCP configuration for {len(plan.hosts)} host(s) to {output}")
