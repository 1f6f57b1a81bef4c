"""One frozen Config: defaults <- provisioner.toml <- PROVISIONER_* environment <- explicit overrides.

This is the only module that reads the environment. Every bad value is reported as a ConfigError that
names the key and the source it came from (default, the TOML file, the environment variable, override).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

ENV_PREFIX = "PROVISIONER_"
CONFIG_ENV = "PROVISIONER_CONFIG"
# Secrets read by the commands that need them, not config keys (the root password only ever as a crypt hash).
SECRET_ENV = ("PROVISIONER_POOL_PASSWORD", "PROVISIONER_ROOT_PASSWORD_HASH")
REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key and its source."""

    def __init__(self, key: str, source: str, problem: str):
        self.key, self.source, self.problem = key, source, problem
        super().__init__(f"config key {key!r} (from {source}): {problem}")


# --- value parsers: raw value (TOML type or environment string) -> typed value, or ValueError ---


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError("expected an integer, got a boolean")
        try:
            value = int(str(raw).strip(), 10) if not isinstance(raw, int) else raw
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"{value} is out of range {lo}..{hi}")
        return value

    return parse


def _path(raw: Any) -> Path:
    if not isinstance(raw, (str, Path)) or not str(raw).strip():
        raise ValueError(f"expected a non-empty path, got {raw!r}")
    return Path(os.path.expanduser(str(raw).strip()))


def _optional_path(raw: Any) -> Path | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _path(raw)


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _ip(raw: Any) -> str:
    try:
        return str(ipaddress.ip_address(str(raw).strip()))
    except ValueError:
        raise ValueError(f"expected an IP address such as 0.0.0.0 or 10.0.0.5, got {raw!r}") from None


def _public_url(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        return ""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// base URL such as http://10.0.0.5, got {raw!r}")
    if parts.username or parts.password:
        # The installer crashes on credentials in answer-file and script URLs (docs/installer.md
        # "No credentials in answer-file and script URLs").
        raise ValueError("must not carry credentials (user:password@): the installer cannot fetch such URLs")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query string or fragment")
    return text.rstrip("/")


def _token(raw: Any) -> str:
    text = str(raw).strip()
    if text and len(text) < 16:
        raise ValueError("must be at least 16 characters (or empty to disable the REST API)")
    return text


def _log_level(raw: Any) -> str:
    text = str(raw).strip().upper()
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return text


def _database_url(raw: Any) -> str:
    text = str(raw or "").strip()
    if text and not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql://user:password@host:port/database URL (empty: the SQLite file "
                         "data_dir/provisioner.db)")
    return text


def _site(raw: Any) -> str:
    text = str(raw or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", text):
        raise ValueError(f"expected a site name (letters, digits, '.', '_' and '-', starting with a letter or digit, "
                         f"at most 63 characters), got {raw!r}")
    return text


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "provisioner"


# key -> (parser, default or a zero-argument callable producing it)
FIELDS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "data_dir": (_path, _default_data_dir),
    # the store's database: empty = SQLite in data_dir/provisioner.db (the default); a postgresql:// URL = that
    # PostgreSQL database, which several servers may share (provisioner/store/postgres.py, docs/store.md)
    "database_url": (_database_url, ""),
    # seconds a flow lease lasts without renewal (coordinator/locks.py): the driving server renews it every third
    # of that; when it dies, another server on the same database takes the flow over after at most this long
    "lease_ttl_s": (_int_in(3, 3600), 15),
    # the site this server boots (docs/sites.md): it registers itself under this name in the store, boots the hosts
    # of this site, and hosts registered through it without a site get this one
    "site": (_site, "default"),
    "bind_address": (_ip, "0.0.0.0"),
    "tftp_port": (_int_in(0, 65535), 69),
    "http_port": (_int_in(0, 65535), 80),
    "public_url": (_public_url, ""),
    "tftp_root": (_path, lambda: REPO_ROOT / "tftp_root"),
    "answerfiles_dir": (_path, lambda: REPO_ROOT / "answerfiles"),
    "answerfile_overrides_dir": (_optional_path, None),
    "api_token": (_token, ""),
    "tftp_blksize_max": (_int_in(8, 65464), 1468),
    "tftp_max_sessions": (_int_in(1, 900), 512),
    "tftp_max_sessions_per_client": (_int_in(1, 900), 16),
    # big-file TFTP transfers served by a process of their own (~1.5 MB private memory each) at once, per
    # worker process (0: every transfer in the workers' shared loops)
    "tftp_fork_limit": (_int_in(0, 900), 32),
    # HTTP on a hostile LAN (issue 15): connections one address may hold at once (2 loops x 1000 used to be
    # fillable by one client); seconds a connection gets to send a request's complete headers; the largest
    # request body (authenticated API only; a 300,000-line host CSV measured 43 MB at 144 bytes a line)
    "http_max_connections_per_client": (_int_in(1, 1000), 64),
    "http_header_timeout": (_int_in(1, 600), 10),
    "http_max_body_bytes": (_int_in(1024, 1 << 30), 64 << 20),
    "attempts_per_arming": (_int_in(1, 10), 1),
    # answer file, scripts and report only for the address that first fetched the attempt's boot config or the
    # host's registered IP (issue 15); off where the installer's DHCP lease differs from the firmware's
    "attempt_client_binding": (_bool, True),
    # lpxelinux.0 can fetch http:// paths: big files (xen.gz, vmlinuz, install.img) then go over HTTP, not TFTP.
    "pxelinux_http": (_bool, False),
    # `dhcp-config` and `serve --proxy-dhcp`: iPXE clients (user class "iPXE") get our per-MAC iPXE script URL
    # instead of pxelinux.0 / grubx64.efi (docs/dhcp.md)
    "dhcp_ipxe": (_bool, False),
    # how often the coordinator polls XAPI while it waits for a host (down, back up, enabled)
    "upgrade_poll_ms": (_int_in(10, 600_000), 10_000),
    # how long one Async.PBD.plug after an upgrade may take (an iSCSI / FC attach takes minutes; docs/prechecks.md)
    "pbd_plug_timeout_s": (_int_in(10, 3600), 300),
    # how long a host may take to come back once its installer reported (Xen Orchestra waits 20 min; a run's own
    # `upgrade start --host-up-timeout` / REST host_up_timeout wins; coordinator/installing.py)
    "host_up_timeout_s": (_int_in(60, 86_400), 1200),
    # before each host, how long the run waits for members to answer a call the master forwards to them (after
    # the master's restart they reconnect on a backoff of up to 256 s; coordinator/members.py, docs/xapi.md)
    "members_timeout_s": (_int_in(30, 86_400), 600),
    # retention of the events table (issue 15): noise rows older than this many days are pruned (audit rows
    # 4x longer), and the oldest rows beyond this count, noise first; rows of active runs are always kept
    "events_max_age_days": (_int_in(1, 36_500), 90),
    # the BMC power-state confirm loop (power/confirm.py; docs/power.md "The confirm loop"): poll, resend, give up
    "bmc_poll_seconds": (_int_in(1, 600), 5),
    "bmc_resend_seconds": (_int_in(1, 3600), 30),
    "bmc_give_up_seconds": (_int_in(1, 86_400), 300),
    # Redfish over https: check the BMC's certificate (a BMC's factory certificate is self-signed: turn this off
    # only on a management network you trust, or reach the BMC over http:// where it allows it)
    "bmc_verify_tls": (_bool, True),
    # before a reboot, the coordinator fetches the host's boot config and the media from its own TFTP and public_url
    # (coordinator/selfcheck.py); off only where the coordinator cannot reach them although the hosts can
    "boot_self_check": (_bool, True),
    "events_max_rows": (_int_in(1_000, 1_000_000_000), 1_000_000),
    # offline update bundles (provisioner/updates.py, docs/updates.md): the OpenPGP public key(s) a bundle's
    # repodata/repomd.xml.asc must verify against (armored or binary; unset: only --allow-unsigned imports), and
    # the most a bundle may unpack to (XAPI's own limit is 1 GiB: xapi_globs.ml bundle_max_size_limit)
    "updates_keyring": (_optional_path, None),
    "updates_max_bytes": (_int_in(1 << 20, 1 << 40), 1 << 30),
    "log_level": (_log_level, "WARNING"),
    "log_json": (_bool, False),
    # `serve` refuses to run as root (uid 0) unless this is set (or `serve --allow-root`): run it as an
    # unprivileged user with CAP_NET_BIND_SERVICE instead (deploy/provisioner.service, docs/deploy.md)
    "allow_root": (_bool, False),
}


@dataclass(frozen=True)
class Config:
    """The resolved configuration. Build it with load_config(); never mutate it."""

    data_dir: Path
    database_url: str
    lease_ttl_s: int
    site: str
    bind_address: str
    tftp_port: int
    http_port: int
    public_url: str
    tftp_root: Path
    answerfiles_dir: Path
    answerfile_overrides_dir: Path | None
    api_token: str
    tftp_blksize_max: int
    tftp_max_sessions: int
    tftp_max_sessions_per_client: int
    tftp_fork_limit: int
    http_max_connections_per_client: int
    http_header_timeout: int
    http_max_body_bytes: int
    attempts_per_arming: int
    attempt_client_binding: bool
    pxelinux_http: bool
    dhcp_ipxe: bool
    upgrade_poll_ms: int
    pbd_plug_timeout_s: int
    host_up_timeout_s: int
    members_timeout_s: int
    events_max_age_days: int
    events_max_rows: int
    updates_keyring: Path | None
    updates_max_bytes: int
    bmc_poll_seconds: int
    bmc_resend_seconds: int
    bmc_give_up_seconds: int
    bmc_verify_tls: bool
    boot_self_check: bool
    log_level: str
    log_json: bool
    allow_root: bool
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "provisioner.db"

    @property
    def base_url(self) -> str:
        """The URL booting hosts use to reach our HTTP server (public_url, else derived from the bind)."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.bind_address in ("0.0.0.0", "::") else self.bind_address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}" + ("" if self.http_port == 80 else f":{self.http_port}")

    def replace(self, **overrides: Any) -> "Config":
        """A copy with some keys changed (validated like any other override)."""
        return load_config(file=None, environ={}, overrides={**self.as_dict(), **overrides})

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


def secret_from_env(name: str) -> str:
    """A secret passed in the environment (e.g. PROVISIONER_POOL_PASSWORD); not a config key, never stored here."""
    return os.environ.get(name, "")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("config", f"file {path}", "file does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"file {path}", f"not valid TOML: {exc}") from None
    # Accept both a flat file and one with a [provisioner] table.
    if isinstance(data.get("provisioner"), dict):
        data = {**{k: v for k, v in data.items() if k != "provisioner"}, **data["provisioner"]}
    return data


def load_config(
    file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve the configuration. `file` defaults to $PROVISIONER_CONFIG, then ./provisioner.toml if present."""
    env = os.environ if environ is None else environ
    raw: dict[str, tuple[Any, str]] = {}
    for key, (_, default) in FIELDS.items():
        raw[key] = (default() if callable(default) else default, "default")

    if file is None and env.get(CONFIG_ENV):
        file = env[CONFIG_ENV]
    elif file is None and environ is None and Path("provisioner.toml").is_file():
        file = "provisioner.toml"
    if file is not None:
        path = Path(file)
        for key, value in _read_file(path).items():
            if key not in FIELDS:
                raise ConfigError(key, f"file {path}", f"unknown key (known keys: {', '.join(FIELDS)})")
            raw[key] = (value, f"file {path}")

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in (CONFIG_ENV, *SECRET_ENV):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in FIELDS:
            raise ConfigError(key, f"environment {name}", "unknown key")
        raw[key] = (value, f"environment {name}")

    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            raise ConfigError(key, "override", "unknown key")
        raw[key] = (value, "override")

    values: dict[str, Any] = {}
    for key, (parse, _) in FIELDS.items():
        value, source = raw[key]
        try:
            values[key] = parse(value)
        except ValueError as exc:
            raise ConfigError(key, source, str(exc)) from None
    return Config(**values, sources={key: source for key, (_, source) in raw.items()})
