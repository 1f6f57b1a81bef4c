"""`provisioner pools add` and `provisioner pools trust`: a pool's URL, credentials and how its HTTPS certificate is
trusted (docs/xapi.md "TLS"): a CA file (its content is stored), a pinned SHA-256 fingerprint, or trust-on-first-use
(the certificate is shown and the operator confirms it, as SSH does; --yes confirms for scripts)."""

from __future__ import annotations

import sys

import click

from provisioner.config import secret_from_env
from provisioner.coordinator import pools as coord_pools
from provisioner.cli.base import Context, friendly, pass_ctx
from provisioner.cli.upgrade import pools


def _trust_options(func):
    func = click.option("--yes", is_flag=True, help="With --trust-on-first-use: accept the certificate shown "
                        "without asking (scripts; check the fingerprint some other way).")(func)
    func = click.option("--trust-on-first-use", "tofu", is_flag=True,
                        help="Connect, show the certificate's SHA-256 fingerprint and subject, and pin it once "
                             "you confirm (like SSH).")(func)
    func = click.option("--fingerprint", help="The SHA-256 fingerprint of the master's certificate (hex, colons "
                        "optional), e.g. from `openssl x509 -in /etc/xensource/xapi-ssl.pem -noout "
                        "-fingerprint -sha256` on the host.")(func)
    return click.option("--ca-file", type=click.File("r"),
                        help="PEM file of the CA that signs the master's certificate (its content is "
                             "stored); a self-signed certificate can be its own CA file.")(func)


def _chosen_trust(url: str, ca_file, fingerprint: str | None, tofu: bool, yes: bool) -> dict:
    """add_pool's trust arguments from the options: exactly one of them for https (add_pool checks the rest)."""
    if sum(bool(x) for x in (ca_file, fingerprint, tofu)) > 1:
        raise click.UsageError("give one of --ca-file, --fingerprint, --trust-on-first-use")
    if yes and not tofu:
        raise click.UsageError("--yes only confirms --trust-on-first-use")
    if ca_file:
        return {"ca_pem": ca_file.read(), "trust_source": "ca-file"}
    if fingerprint:
        return {"fingerprint": fingerprint, "trust_source": "fingerprint"}
    if tofu:
        return {"fingerprint": _first_use(url, yes), "trust_source": "trust-on-first-use"}
    return {}


def _first_use(url: str, yes: bool) -> str:
    """Show the certificate the server presents and ask, as SSH does; refused without a TTY unless --yes."""
    if not yes and not sys.stdin.isatty():
        raise click.UsageError("--trust-on-first-use asks for confirmation on a terminal: add --yes to accept "
                               "the certificate non-interactively, or give --fingerprint")
    seen = coord_pools.peek_certificate(url)
    click.echo(f"The certificate of {url} is not known yet.")
    click.echo(f"  subject:     {seen.get('subject', '')}")
    if seen.get("alt_names"):
        click.echo(f"  names:       {seen['alt_names']}")
    if seen.get("not_after"):
        click.echo(f"  valid until: {seen['not_after']}")
    click.echo(f"  SHA-256 fingerprint: {seen['fingerprint_colons']}")
    click.echo("Compare it with the host's (on its console: openssl x509 -in /etc/xensource/xapi-ssl.pem -noout "
               "-fingerprint -sha256).")
    if yes:
        click.echo("Trusted (--yes).")
    elif not click.confirm("Trust this certificate and pin its fingerprint?", default=False):
        raise click.ClickException("not trusted: nothing was stored")
    return seen["fingerprint"]


def _check(url: str, trust: dict) -> None:
    """Refuse a certificate the trust given does not accept now (a wrong pin, another CA): before anything is
    stored, with nothing sent to the host."""
    warning = coord_pools.check_certificate(url, fingerprint=trust.get("fingerprint"), ca_pem=trust.get("ca_pem"))
    if warning:
        click.echo(warning, err=True)


@pools.command("add")
@click.argument("name")
@click.option("--url", required=True, help="The pool master's XAPI URL, e.g. https://10.0.0.10")
@click.option("--username", default="root", show_default=True)
@click.option("--password-file", type=click.File("r"),
              help="File holding the password (else $PROVISIONER_POOL_PASSWORD).")
@_trust_options
@pass_ctx
@friendly
def pools_add(ctx: Context, name: str, url: str, username: str, password_file, ca_file, fingerprint: str | None,
              tofu: bool, yes: bool) -> None:
    """Register a pool by its master's URL; https needs one of --ca-file, --fingerprint, --trust-on-first-use."""
    password = password_file.read().strip() if password_file else secret_from_env("PROVISIONER_POOL_PASSWORD")
    if not password:
        raise click.UsageError("give --password-file FILE or set PROVISIONER_POOL_PASSWORD")
    coord_pools.check_url(url)
    warning = coord_pools.plain_http_warning(url)
    if warning:
        click.echo(warning, err=True)
    trust = _chosen_trust(url, ca_file, fingerprint, tofu, yes)
    _check(url, trust)
    record = coord_pools.add_pool(ctx.store, name, url, username, password, **trust)
    click.echo(f"added pool {record.name} ({url}; {coord_pools.trust_of(record).describe()})")


@pools.command("trust")
@click.argument("name")
@_trust_options
@pass_ctx
@friendly
def pools_trust(ctx: Context, name: str, ca_file, fingerprint: str | None, tofu: bool, yes: bool) -> None:
    """Change how the pool's certificate is trusted (after its master was reinstalled or got a new certificate)."""
    pool = coord_pools.get_pool(ctx.store, name)
    trust = _chosen_trust(pool.url, ca_file, fingerprint, tofu, yes)
    if not trust:
        raise click.UsageError("give one of --ca-file, --fingerprint, --trust-on-first-use")
    _check(pool.url, trust)
    record = coord_pools.set_trust(ctx.store, name, **trust)
    click.echo(f"pool {record.name}: {coord_pools.trust_of(record).describe()}")
