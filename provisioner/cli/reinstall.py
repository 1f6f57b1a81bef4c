"""`provisioner reinstall ...`: the lab reinstall-and-join flow (the only command that may wipe a disk)."""

from __future__ import annotations

import json

import click

from provisioner.config import secret_from_env
from provisioner.coordinator import pools as coord_pools
from provisioner import states
from provisioner.coordinator.reinstall_plan import ReinstallRefused, describe_disk, make_reinstall_plan
from provisioner.coordinator.service import FlowService
from provisioner.cli.base import Context, friendly, main, pass_ctx

HASH_ENV = "PROVISIONER_ROOT_PASSWORD_HASH"


def _root_password_hash(hash_file) -> str:
    """The crypt(3) hash from the file (first line) or the environment; checked later, never printed."""
    if hash_file is not None:
        return hash_file.readline().strip()
    return secret_from_env(HASH_ENV).strip()


def _plan_text(plan) -> str:
    lines = [f"reinstall {plan.host_name} ({plan.mac}) into pool {plan.pool} with {plan.media}: "
             + ("ready" if plan.ok else "REFUSED"),
             f"  master {plan.master or '?'} at {plan.master_version or '?'}; new host's XAPI at "
             f"{plan.host_url or '?'}; management network {plan.network.get('mode', 'dhcp')}"]
    if plan.join:
        m, iso = plan.join["master"], plan.join["media"]
        vlan = "untagged" if m["management_vlan"] == -1 else f"VLAN {m['management_vlan']}"
        lines.append(f"  pool.join needs: edition {m['edition'] or '?'}, updates [{', '.join(m['updates'])}], "
                     f"management {vlan}, {m['network_backend']} backend, xapi {m['xapi']} (git id {m['git_id']}); "
                     f"a fresh install of {plan.media} has edition {iso['edition'] or '?'}, no updates, untagged, "
                     f"{iso['network_backend']}")
    if plan.data_loss:
        lines.append(f"  the fresh install wipes {len(plan.data_loss)} disk(s) on the host's local storage"
                     + (" (accepted with --accept-data-loss):" if plan.accept_data_loss else ":"))
        lines += [f"    LOST: {describe_disk(d)}" for d in plan.data_loss]
    lines += [f"  note: {n}" for n in plan.notes]
    lines += [f"  problem: {p}" for p in plan.problems]
    return "\n".join(lines)


def _refusal_lines(problems: list[str], data_loss: list[dict]) -> list[str]:
    lines = ["reinstall refused, nothing changed:"] + [f"  - {p}" for p in problems]
    if data_loss:
        lines += ["disks the fresh install would wipe:"] + [f"  LOST: {describe_disk(d)}" for d in data_loss]
    return lines


def _drive(ctx: Context, mac: str, pool: str, media_name: str, *, say, **checks):
    """Check, commit and drive the flow (or the host's flow in progress) on a FlowService thread of this process
    until it ends or waits; Ctrl-C interrupts it at its next wait or step boundary, resumable."""
    svc = FlowService(ctx.store, ctx.config)  # timeouts from the config (coordinator/wiring.py)
    try:
        found = svc.start_reinstall(mac, pool, media_name, say=say, **checks)
        done = svc.wait_reinstall(found.id)
    except KeyboardInterrupt:
        svc.stop()
        raise click.ClickException("interrupted: the reinstall stays resumable (run the same command again, or "
                                   "the next `provisioner serve` start)") from None
    finally:
        svc.stop()
    crashed = [e for e in ctx.store.events(mac=done.mac, kind="reinstall.crashed")
               if e["details"].get("reinstall") == done.id]
    if done.step not in states.REINSTALL_TERMINAL and done.step not in states.REINSTALL_WAITING and crashed:
        raise click.ClickException(f"reinstall {done.id} stopped at {done.step}: {crashed[-1]['details']['error']}; "
                                   "run the same command again to resume it")
    return done


@main.command("reinstall")
@click.argument("mac")
@click.option("--pool", required=True, help="Registered pool the new host joins (its stored credentials are used).")
@click.option("--media", "media_name", required=True, help="Media to install: the version the pool's master runs.")
@click.option("--confirm", help="The host's registered name: a fresh install WIPES its disk.")
@click.option("--forget", is_flag=True, help="host.destroy (xe host-forget) the dead member's record first.")
@click.option("--root-password-hash-file", "hash_file", type=click.File("r"),
              help=f"File with root's crypt(3) hash (`openssl passwd -6`), else ${HASH_ENV}.")
@click.option("--host-url", help="The new host's XAPI URL (default: the pool URL with the host's address).")
@click.option("--accept-data-loss", is_flag=True,
              help="Accept that the VM disks, suspend images and snapshots on the host's local storage (listed by "
                   "--plan) are wiped for good.")
@click.option("--fix-before-join", is_flag=True,
              help="Go on although pool.join needs the new host fixed first (updates, edition, network backend): "
                   "the flow waits at join_refused until you fixed it and run the command again.")
@click.option("--plan", "plan_only", is_flag=True, help="Only run the checks and show what would happen.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (progress goes to stderr).")
@pass_ctx
@friendly
def reinstall(ctx: Context, mac: str, pool: str, media_name: str, confirm: str | None, forget: bool, hash_file,
              host_url: str | None, accept_data_loss: bool, fix_before_join: bool, plan_only: bool,
              as_json: bool) -> None:
    """Fresh-install a host that is not a live pool member, then pool.join it: the failed-member remedy.

    Refused for a pool master, a live member, a host that answers on its management address, a dead member with
    resident VMs, VM disks on its local storage (unless --accept-data-loss), a wrong confirmation, and when
    pool.join would refuse the fresh host (version, VLAN; updates, edition, backend unless --fix-before-join).
    Run the same command again to resume it, or to retry pool.join after a refusal.
    """
    root_hash = _root_password_hash(hash_file)
    say = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    try:
        if plan_only:
            found = make_reinstall_plan(ctx.store, mac, pool, media_name, confirm=confirm, forget=forget,
                                        root_password_hash=root_hash, host_url=host_url,
                                        accept_data_loss=accept_data_loss, fix_before_join=fix_before_join,
                                        connect=lambda name: coord_pools.connect(ctx.store, name))
            click.echo(json.dumps(found.as_dict(), indent=2) if as_json else _plan_text(found))
            raise SystemExit(0 if found.ok else 1)
        done = _drive(ctx, mac, pool, media_name, confirm=confirm, forget=forget, root_password_hash=root_hash,
                      host_url=host_url, accept_data_loss=accept_data_loss, fix_before_join=fix_before_join, say=say)
    except ReinstallRefused as exc:
        if as_json:
            click.echo(json.dumps({"refused": exc.problems, "data_loss": exc.data_loss}, indent=2))
        else:
            for line in _refusal_lines(exc.problems, exc.data_loss):
                click.echo(line, err=True)
        raise SystemExit(1) from None
    lost = ctx.store.data_lost(done)
    if as_json:
        click.echo(json.dumps({**done.as_dict(), "data_lost": lost}, indent=2))
    else:
        click.echo(f"reinstall {done.id} of {done.host_name} ({done.mac}): {done.step}"
                   + (f": {done.reason}" if done.reason else f", new uuid {done.new_uuid} in pool {done.pool}"))
        for disk in lost:
            click.echo(f"  lost (accepted): {describe_disk(disk)}")
        if done.step == states.RI_JOIN_REFUSED:
            click.echo("  waiting: fix what pool.join refused on the new host, then run this command again")
    if done.step != "done":
        raise SystemExit(1)
