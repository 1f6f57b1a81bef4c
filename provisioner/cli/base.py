"""The shared pieces of the command line: the root group, the lazy context, error and output helpers."""

from __future__ import annotations

import functools
import json

import click

from provisioner import registry
from provisioner.boot import loaders
from provisioner.cli.audited import AuditedGroup
from provisioner.config import ConfigError, load_config
from provisioner.logs import setup_logging
from provisioner.model import ValidationError
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
            self._store = Store.from_config(self.config)
        return self._store

    def close(self) -> None:
        """Close the store's connections (PostgreSQL ones are server sessions) when the command is done."""
        if self._store is not None:
            self._store.close()
            self._store = None


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
                loaders.BootloaderError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False) if as_json else text)


@click.group(cls=AuditedGroup)  # one audit row per operator command (cli/audited.py)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="PROVISIONER_CONFIG",
              help="provisioner.toml to read (default: $PROVISIONER_CONFIG, else ./provisioner.toml if present).")
@click.version_option(package_name="provisioner")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """PXE provisioning server for XenServer rolling pool upgrades."""
    ctx.obj = Context(config_path)
    ctx.call_on_close(ctx.obj.close)  # after the command and its audit row
    try:
        setup_logging(ctx.obj.config)
    except ConfigError:
        pass  # reported by the command that needs the configuration (and `--help` still works)
