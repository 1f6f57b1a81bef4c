"""`provisioner doctor`: the settings a boot needs, checked as a booting host sees them (provisioner/doctor)."""

from __future__ import annotations

import click

from provisioner import doctor, output
from provisioner.cli.base import Context, emit, friendly, main, pass_ctx


@main.command("doctor")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def doctor_cmd(ctx: Context, as_json: bool) -> None:
    """Check ports, public_url, boot loaders, media, the DHCP snippet, clock, disk and store; each problem with
    its fix. Exit status 1 when a check fails (warnings alone: 0)."""
    findings = doctor.run_checks(ctx.config)
    emit([f.as_dict() for f in findings], as_json, output.table(
        ("status", "check", "finding", "fix"),
        ((f.status.upper(), f.code, f.message, f.fix) for f in findings)))
    if doctor.worst(findings) == doctor.FAIL:
        raise SystemExit(1)
