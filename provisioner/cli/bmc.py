"""`provisioner bmc check MAC` and `provisioner hosts netboot MAC`: a host's BMC read, and a lab's one-time
network boot through it (power/hosts.py, power/netboot.py)."""

from __future__ import annotations

import sys

import click

from provisioner import registry
from provisioner.cli.base import Context, emit, friendly, main, pass_ctx
from provisioner.cli.hosts import hosts
from provisioner.credentials import SecretError
from provisioner.power import hosts as power_hosts
from provisioner.power.base import PowerError
from provisioner.power.confirm import ConfirmTimes
from provisioner.power.netboot import network_boot_cycle


def _control(ctx: Context, mac: str):
    host = registry.get_host(ctx.store, mac)  # NotFoundError: a one-line message through @friendly
    try:
        password = registry.bmc_password(ctx.store, host.mac)
        return host, power_hosts.control_for(host, password, ctx.config)
    except (PowerError, SecretError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def bmc() -> None:
    """A host's BMC (register it with `provisioner hosts bmc`)."""


@bmc.command("check")
@click.argument("mac")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def bmc_check(ctx: Context, mac: str, as_json: bool) -> None:
    """Read the host's power state and whether its BMC offers a one-time network boot; change nothing.
    Exit status 0 only when the BMC is usable."""
    host, control = _control(ctx, mac)
    try:
        found = power_hosts.check(control)
    finally:
        power_hosts.close(control)
    text = (f"{host.mac} {host.pool}/{host.name}: {found.bmc}: power {found.power}, one-time network boot "
            f"{'offered' if found.network_override else 'not offered'}" if found.usable
            else f"{host.mac} {host.pool}/{host.name}: {found.bmc}: NOT usable: {found.problem}")
    emit({"mac": host.mac, **found.as_dict()}, as_json, text)
    if not found.usable:
        sys.exit(1)


@hosts.command("netboot")
@click.argument("mac")
@click.option("--yes", is_flag=True, help="Power-cycle the host (its running system goes down: VMs included).")
@pass_ctx
@friendly
def hosts_netboot(ctx: Context, mac: str, yes: bool) -> None:
    """One-time network boot and a power cycle through the host's BMC, for labs. Arms nothing: the host gets
    whatever the boot server decides for it (a local boot unless it is armed)."""
    host, control = _control(ctx, mac)
    if not yes:
        raise click.UsageError(f"this powers {host.pool}/{host.name} off and on again; add --yes")
    try:
        network_boot_cycle(control, uefi=host.firmware == "uefi", times=ConfirmTimes.from_config(ctx.config),
                           progress=click.echo)
    except PowerError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        power_hosts.close(control)
    click.echo(f"{host.mac} {host.pool}/{host.name}: powered on with a one-time network boot ({control.name})")
