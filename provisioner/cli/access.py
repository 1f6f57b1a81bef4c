"""`provisioner tokens|audit|webhooks ...`: named API tokens, the audit trail, webhooks (docs/audit.md)."""

from __future__ import annotations

import sys

import click

from provisioner import audit as audit_mod
from provisioner import tokens as tokens_mod
from provisioner.cli.base import Context, emit, friendly, main, pass_ctx
from provisioner.output import table
from provisioner.webhooks import delivery
from provisioner.webhooks import events as webhook_events
from provisioner.webhooks import service as webhooks_mod


@main.group()
def tokens() -> None:
    """Named API tokens with roles: viewer (read only), operator (all but tokens/webhooks), admin (all)."""


@tokens.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(tokens_mod.ROLES), required=True, help="What the token may do.")
@click.option("--json", "as_json", is_flag=True, help="Print the record and the secret as JSON.")
@pass_ctx
@friendly
def tokens_add(ctx: Context, name: str, role: str, as_json: bool) -> None:
    """Create token NAME; its secret is printed once (only its sha256 is stored)."""
    record, secret = tokens_mod.add(ctx.store, name, role)
    emit({**record, "secret": secret}, as_json,
         f"token {name} ({role}) created; its secret (shown only now):\n{secret}")


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def tokens_list(ctx: Context, as_json: bool) -> None:
    """Every token with its role and when it was last used (never a secret)."""
    rows = tokens_mod.listing(ctx.store, ctx.config.api_token)
    emit(rows, as_json, table(("name", "role", "created", "last used"),
                              ((r["name"], r["role"], r["created_at"] or "(config)", r["last_used"] or "-")
                               for r in rows)) if rows else "no API tokens (add one: provisioner tokens add NAME "
                                                            "--role viewer|operator|admin)")


@tokens.command("remove")
@click.argument("name")
@pass_ctx
@friendly
def tokens_remove(ctx: Context, name: str) -> None:
    """Remove token NAME: its API calls and dashboard sessions stop working at once."""
    ctx.store.remove_api_token(name)
    click.echo(f"token {name} removed")


@main.group()
def audit() -> None:
    """The audit trail of operator actions (append-only, hash-chained)."""


@audit.command("list")
@click.option("--since", type=int, default=0, help="Only rows after this id.")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, help="Rows at most (the newest).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def audit_list(ctx: Context, since: int, limit: int, as_json: bool) -> None:
    """Operator actions, oldest first: who, when, from where, what, outcome."""
    store = ctx.store
    since = max(since, store.last_audit_id() - limit)
    rows = store.audit_rows(since_id=since, limit=limit)
    emit(rows, as_json, table(("id", "when", "who", "kind", "from", "action", "target", "outcome"),
                              ((r["id"], r["ts"], r["actor"], r["actor_kind"], r["source"], r["action"], r["target"],
                                r["outcome"]) for r in rows)) if rows else "no audit rows yet")


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def audit_verify(ctx: Context, as_json: bool) -> None:
    """Recompute the hash chain; exit 1 naming the first row that was edited, inserted or deleted."""
    verdict = audit_mod.verify(ctx.store)
    if verdict.ok:
        emit(verdict.as_dict(), as_json, f"audit trail intact: {verdict.rows} rows, head {verdict.head}")
        return
    emit(verdict.as_dict(), as_json, f"audit trail BROKEN at row {verdict.broken_id}: {verdict.why} "
                                     f"({verdict.rows} rows before it verified)")
    sys.exit(1)


@main.group()
def webhooks() -> None:
    """Webhooks: signed JSON notifications of run events, per pool or global."""


@webhooks.command("add")
@click.argument("url")
@click.option("--secret-file", type=click.Path(dir_okay=False), required=True,
              help="File holding the shared secret (16 characters at least) the deliveries are signed with.")
@click.option("--pool", default=None, help="Only this pool's runs (default: every pool).")
@click.option("--events", "wanted", multiple=True, type=click.Choice(webhook_events.EVENTS),
              help="Notifications to send (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def webhooks_add(ctx: Context, url: str, secret_file: str, pool: str | None, wanted: tuple[str, ...],
                 as_json: bool) -> None:
    """Send notifications to URL (JSON POSTs signed with HMAC-SHA256, retried with backoff)."""
    hook = webhooks_mod.add(ctx.store, url, webhooks_mod.read_secret(secret_file), pool=pool, wanted=wanted or None)
    emit(hook, as_json, f"webhook {hook['id']} added: {url} ({', '.join(hook['events'])}; "
                        f"{'pool ' + pool if pool else 'every pool'})")


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@friendly
def webhooks_list(ctx: Context, as_json: bool) -> None:
    """Webhooks and their deliveries (pending, delivered, failed); never a secret."""
    rows = webhooks_mod.listing(ctx.store)
    emit(rows, as_json, table(("id", "url", "pool", "events", "pending", "delivered", "failed"),
                              ((h["id"], h["url"], h["pool"] or "(all)", ",".join(h["events"]),
                                h["deliveries"]["pending"], h["deliveries"]["delivered"], h["deliveries"]["failed"])
                               for h in rows)) if rows else "no webhooks (add one: provisioner webhooks add URL "
                                                            "--secret-file FILE)")


@webhooks.command("remove")
@click.argument("webhook_id", type=int)
@pass_ctx
@friendly
def webhooks_remove(ctx: Context, webhook_id: int) -> None:
    """Remove a webhook; its pending deliveries are dropped."""
    ctx.store.remove_webhook(webhook_id)
    click.echo(f"webhook {webhook_id} removed")


@webhooks.command("test")
@click.argument("webhook_id", type=int)
@pass_ctx
@friendly
def webhooks_test(ctx: Context, webhook_id: int) -> None:
    """Send one signed `webhook.test` notification to the webhook now; exit 1 if it was not taken."""
    hook = next((h for h in ctx.store.list_webhooks() if h["id"] == webhook_id), None)
    if hook is None:
        raise click.ClickException(f"no webhook with id {webhook_id} (see: provisioner webhooks list)")
    ok, what = delivery.test_delivery(hook["url"], webhooks_mod.secret_of(ctx.store, hook))
    if not ok:
        raise click.ClickException(f"{hook['url']} did not take the test notification: {what}")
    click.echo(f"{hook['url']} took the test notification ({what})")
