"""The root group that writes one audit row per operator command (issue 23, docs/audit.md).

Every command is audited unless it is listed in NOT_AUDITED (reads, and the commands that run a server or the
demo): a command added later is audited by default. Who: the OS user (and the sudo user behind it); from where:
"cli@<host name>"; what: the command path, its arguments (secret-looking options redacted) and the outcome (the
exit status, the error message; the row is written when the command ends, with when it started). `--help` and usage
errors are not actions and leave no row.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys

import click

from provisioner import audit
from provisioner.store import now

NOT_AUDITED = frozenset({
    "answerfile", "bmc check", "demo", "hosts attempts", "hosts list", "hosts show", "media list", "media packs",
    "states", "updates list", "updates show", "upgrade plan", "upgrade status", "serve", "simulator serve",
    "audit list", "audit verify", "tokens list", "webhooks list", "dhcp-config", "doctor",
})
"""Command paths that change nothing (or run a server whose own actions are audited by their own doors)."""


def command_path(group: click.Group, ctx: click.Context, args: list[str]) -> tuple[str, list[str]]:
    """("hosts add", the arguments after it) from the arguments the root group received."""
    names: list[str] = []
    command: click.Command = group
    rest = list(args)
    while rest and isinstance(command, click.Group):
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            break
        names.append(rest.pop(0))
        command = sub
    return " ".join(names), rest


def redact_args(args: list[str]) -> list[str]:
    """The arguments with the value of every secret-looking option replaced (--password X, --token=X)."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(audit.REDACTED)
            hide_next = False
            continue
        name, eq, _value = arg.partition("=")
        if arg.startswith("--") and audit.SECRET_KEY.search(name) and not name.endswith("-file"):
            if eq:
                out.append(f"{name}={audit.REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(audit.redact_url_passwords(arg)[:200])
    return out


def os_user() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (a container's arbitrary uid)
        user = f"uid {os.getuid()}"
    sudo = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {sudo})" if sudo and sudo != user else user


class AuditedGroup(click.Group):
    """click.Group that audits each operator command it runs (see the module docstring)."""

    def invoke(self, ctx: click.Context):
        args = [*getattr(ctx, "_protected_args", []), *ctx.args] if hasattr(ctx, "_protected_args") \
            else [*ctx.protected_args, *ctx.args]
        path, rest = command_path(self, ctx, args)
        if not path or path in NOT_AUDITED or any(a in ("--help", "-h") for a in rest):
            return super().invoke(ctx)
        ctx.meta["audit.started_at"] = now()  # the row is written when the command ends (a run may take hours)
        try:
            result = super().invoke(ctx)
        except click.UsageError:
            raise  # not an action: nothing ran
        except click.exceptions.Exit as exc:
            self._record(ctx, path, rest, "ok" if exc.exit_code == 0 else "failed", exit_code=exc.exit_code)
            raise
        except click.ClickException as exc:
            self._record(ctx, path, rest, "failed", error=exc.format_message(), exit_code=exc.exit_code)
            raise
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            self._record(ctx, path, rest, "ok" if code == 0 else "failed", exit_code=code)
            raise
        except BaseException as exc:
            self._record(ctx, path, rest, "failed", error=f"{type(exc).__name__}: {exc}"[:300], exit_code=1)
            raise
        self._record(ctx, path, rest, "ok", exit_code=0)
        return result

    @staticmethod
    def _record(ctx: click.Context, path: str, rest: list[str], outcome: str, **details) -> None:
        args = redact_args(rest)
        target = next((a for a in args if not a.startswith("-")), "")
        try:
            audit.record(ctx.obj.store, actor=os_user(), actor_kind="cli", source=f"cli@{socket.gethostname()}",
                         action=path, target=target, outcome=outcome,
                         details={"args": args, "started_at": ctx.meta.get("audit.started_at"), **details})
        except Exception as exc:  # no config, no database: the command's own error says why; say the row is missing
            click.echo(f"warning: this command was not written to the audit trail: {exc}", err=True)
            sys.stderr.flush()
