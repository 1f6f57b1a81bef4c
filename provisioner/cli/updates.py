"""`provisioner updates add|list|show|remove`: update repositories (offline bundles and mirrors; docs/updates.md)."""

from __future__ import annotations

from typing import Any

import click

from provisioner import updates as updates_mod
from provisioner.cli.base import Context, emit, friendly, pass_ctx
from provisioner.cli.base import main
from provisioner.output import table


def _signature(d: dict[str, Any]) -> str:
    if not d["checked"]:
        return "not checked (--no-check)"
    if d["signed"]:
        return f"verified ({(d['details'].get('signer') or '')[-16:]})"
    return "UNSIGNED (--allow-unsigned)"


def _table(found: list[dict[str, Any]]) -> str:
    if not found:
        return ("no update repositories (import an offline bundle with `provisioner updates add NAME FILE.xsbundle`"
                " or register a mirror with `provisioner updates add NAME URL`)")
    return table(("name", "kind", "product", "updates", "level", "signature", "repository"),
                 ((d["name"], d["kind"], d["product_version"], len(d["update_ids"]), d["update_level"],
                   _signature(d), d["repo_url"]) for d in found))


def _details(d: dict[str, Any]) -> str:
    lines = [_table([d])]
    if d["bundle_url"]:
        lines.append(f"bundle file: {d['bundle_url']} ({d['size']} bytes, sha256 {d['sha256']})")
    lines.append(f"source: {d['source']}; added {d['added_at']}")
    rows = [(u["id"], u["type"], u["issued"], ",".join(u["guidance"]["mandatory"]) or "-",
             ",".join(u["guidance"]["recommended"]) or "-", u["title"]) for u in d["details"].get("updates", ())]
    if rows:
        lines.append(table(("update", "type", "issued", "mandatory guidance", "recommended", "title"), rows))
    return "\n".join(lines)


@main.group("updates")
def updates() -> None:
    """Update repositories: offline update bundles (.xsbundle) and mirrors the pools take updates from."""


@updates.command("add")
@click.argument("name")
@click.argument("source", metavar="PATH|URL")
@click.option("--product-version", help="The XenServer version the repository must be for (default: that of an "
              "imported media).")
@click.option("--allow-unsigned", is_flag=True, help="Accept a repository without a signature that verifies "
              "against updates_keyring (recorded; a signature of altered metadata is refused anyway).")
@click.option("--no-check", is_flag=True, help="Mirror URL only: register it without fetching its metadata.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@friendly
def updates_add(ctx: Context, name: str, source: str, product_version: str | None, allow_unsigned: bool,
                no_check: bool, as_json: bool) -> None:
    """Import the offline update bundle at PATH (or register the mirror at URL) as NAME; served over HTTP."""
    added = updates_mod.add(ctx.store, ctx.config, name, source, product_version=product_version,
                            allow_unsigned=allow_unsigned, check=not no_check)
    data = updates_mod.describe(ctx.config, added)
    emit(data, as_json, _details(data))


@updates.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@friendly
def updates_list(ctx: Context, as_json: bool) -> None:
    """List update repositories."""
    found = [updates_mod.describe(ctx.config, r) for r in ctx.store.list_update_repos()]
    emit(found, as_json, _table(found))


@updates.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@friendly
def updates_show(ctx: Context, name: str, as_json: bool) -> None:
    """One update repository with its updates and their guidances."""
    data = updates_mod.describe(ctx.config, updates_mod.get(ctx.store, name))
    emit(data, as_json, _details(data))


@updates.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@friendly
def updates_remove(ctx: Context, name: str, as_json: bool) -> None:
    """Remove an update repository (and an imported bundle's files); refused while a run uses it."""
    removed = updates_mod.remove(ctx.store, ctx.config, name)
    emit(removed.as_dict(), as_json, f"removed update repository {removed.name}")
