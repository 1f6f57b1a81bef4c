"""Domain records (Host, Media) and their validation. Standard library only; no I/O."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping

FIRMWARES = ("bios", "uefi")
BOOT_METHODS = ("network-first", "redfish", "ipmi", "host-plugin")
"""How a host is made to network-boot; a host's None means its pool's default (pools default to network-first)."""
BMC_KINDS = ("redfish", "ipmi")
BMC_FIELDS = ("bmc_kind", "bmc_address", "bmc_username", "bmc_system_id")
HOST_FIELDS = ("mac", "name", "pool", "disk", "firmware", "ip", "notes", "boot_mac", "multipath", "boot_method",
               *BMC_FIELDS, "site")
"""What a caller may give for a host. The BMC password is never one of them: it travels apart (registry.py),
is stored encrypted and a Host only says whether one is set (bmc_password_set)."""

# The one definition of each name and token pattern; boot/ (configs, attempts, answer files), logs and the web UI
# import them from here. Firmware file names (pxelinux/GRUB spellings) are boot/filenames.py's.
_HEX12 = re.compile(r"[0-9a-f]{12}")
_SEPARATED = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
_CISCO = re.compile(r"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}")
MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
"""A MAC address in the canonical form normalize_mac returns (aa:bb:cc:dd:ee:ff)."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A host or pool name; also what a fresh install's <hostname> may be (a host's name becomes it)."""
MEDIA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A media name: it is a URL path part (/media/<name>/) and a TFTP directory (xenserver/<name>/)."""
ATTEMPT_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
"""An attempt token (secrets.token_urlsafe: URL-safe base64), as it may appear in a URL or a boot line."""
TOKEN_PATHS = r"/boot/(?:answerfile|script|report)/"
"""Regex source for the URL paths that carry an attempt token next (boot/urls.py builds them): for redaction."""


class ValidationError(ValueError):
    """Bad input from a user; `field` names what is wrong (None when it is the record as a whole)."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def normalize_mac(value: str) -> str:
    """Return the canonical lower-case colon form, e.g. 'aa:bb:cc:dd:ee:ff'.

    Accepts aa:bb:.., aa-bb-.., AABBCCDDEEFF, aabb.ccdd.eeff in any case; anything else is a ValidationError.
    """
    if not isinstance(value, str):
        raise ValidationError(f"expected a MAC address string, got {type(value).__name__}", "mac")
    text = value.strip().lower()
    if _SEPARATED.fullmatch(text) or _CISCO.fullmatch(text):
        digits = re.sub(r"[:.-]", "", text)
    elif _HEX12.fullmatch(text):
        digits = text
    else:
        raise ValidationError(
            f"{value!r} is not a MAC address (expected 12 hex digits as aa:bb:cc:dd:ee:ff, "
            "aa-bb-cc-dd-ee-ff, aabbccddeeff or aabb.ccdd.eeff)",
            "mac",
        )
    if int(digits[1], 16) & 1:
        raise ValidationError(f"{value!r} is a multicast address, not a host NIC", "mac")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _clean_text(value: Any, field: str, *, required: bool, pattern: re.Pattern | None = None,
                max_len: int = 255) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError("is required", field)
        return None
    if not isinstance(value, str):
        raise ValidationError(f"expected text, got {type(value).__name__}", field)
    text = value.strip()
    if len(text) > max_len:
        raise ValidationError(f"is longer than {max_len} characters", field)
    if any(ord(ch) < 32 and ch not in "\t" for ch in text) and field != "notes":
        raise ValidationError("must not contain control characters or line breaks", field)
    if pattern is not None and not pattern.fullmatch(text):
        raise ValidationError(
            f"{text!r} is not allowed (letters, digits, '.', '_' and '-', starting with a letter or digit)", field
        )
    return text


def disk_problem(disk: Any) -> str | None:
    """Why `disk` cannot be an <existing-installation> / <primary-disk> (None when it can): an absolute ASCII /dev
    path. THE disk rule: registration (validate_disk), arming and both answer-file validators all call this one."""
    if not isinstance(disk, str) or not disk:
        return "is empty"
    if not all(33 <= ord(ch) <= 126 for ch in disk):
        return "must be printable ASCII without whitespace (the 8.x installer encodes it as ASCII)"
    if not disk.startswith("/dev/") or "/../" in disk + "/" or disk.endswith("/"):
        return "is not a device path such as /dev/disk/by-id/scsi-..."
    return None


def validate_disk(value: Any) -> str | None:
    """The installer's existing-installation disk, as registered: None, or a path disk_problem() accepts."""
    disk = _clean_text(value, "disk", required=False)
    if disk is None:
        return None
    problem = disk_problem(disk)
    if problem:
        raise ValidationError(f"{disk!r} {problem}", "disk")
    return disk


_KERNEL_DISK = re.compile(r"/dev/(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+)")


def disk_warning(disk: str | None) -> str | None:
    """A kernel name (sda, nvme0n1) can change between kernels, so the upgrade might not find its installation
    (docs/installer.md "Upgrade answer files"); XenCenter uses PRIMARY_DISK from /etc/xensource-inventory, usually a
    by-id path."""
    if disk and _KERNEL_DISK.fullmatch(disk):
        return (f"{disk} is a kernel device name, which can change between kernels; prefer the host's PRIMARY_DISK "
                "from /etc/xensource-inventory (a /dev/disk/by-id/... path)")
    return None


@dataclass(frozen=True)
class Host:
    """A registered physical host: the MAC it network-boots with and what we know about it."""

    mac: str
    name: str
    pool: str
    disk: str | None = None
    firmware: str = "bios"
    ip: str | None = None
    notes: str = ""
    boot_mac: str | None = None  # the NIC it network-boots from when that is not `mac` (bond, provisioning NIC)
    multipath: bool = False  # boot from SAN: the installer gets device_mapper_multipath=enabled
    boot_method: str | None = None  # one of BOOT_METHODS; None: the pool's default
    bmc_kind: str | None = None  # one of BMC_KINDS
    bmc_address: str | None = None  # Redfish: service root URL; IPMI: host[:port]
    bmc_username: str | None = None
    bmc_system_id: str | None = None  # Redfish system id; None: found by the host's MAC
    bmc_password_set: bool = False  # read only: the store says whether an encrypted password is kept
    site: str | None = None  # the site whose boot server boots it (docs/sites.md); None: any server, as before sites

    @property
    def netboot_mac(self) -> str:
        """The MAC this host network-boots with (its boot_mac, else its management MAC)."""
        return self.boot_mac or self.mac

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "Host":
        """Validate raw user input (CLI, CSV row, JSON body) into a Host; unknown fields are refused."""
        unknown = sorted(set(fields) - set(HOST_FIELDS))
        if unknown:
            raise ValidationError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(HOST_FIELDS)})")
        if fields.get("mac") in (None, ""):
            raise ValidationError("is required", "mac")
        firmware = _clean_text(fields.get("firmware"), "firmware", required=False) or "bios"
        if firmware.lower() not in FIRMWARES:
            raise ValidationError(f"{firmware!r} is not one of {', '.join(FIRMWARES)}", "firmware")
        ip = _clean_text(fields.get("ip"), "ip", required=False)
        if ip is not None:
            try:
                ip = str(ipaddress.ip_address(ip))
            except ValueError:
                raise ValidationError(f"{ip!r} is not an IP address", "ip") from None
        return cls(
            mac=normalize_mac(fields["mac"]),
            name=_clean_text(fields.get("name"), "name", required=True, pattern=NAME),
            pool=_clean_text(fields.get("pool"), "pool", required=True, pattern=NAME),
            disk=validate_disk(fields.get("disk")),
            firmware=firmware.lower(),
            ip=ip,
            notes=_clean_text(fields.get("notes"), "notes", required=False, max_len=2000) or "",
            site=_clean_text(fields.get("site"), "site", required=False, pattern=NAME),
            **_boot_fields(fields),
        )

    def with_changes(self, changes: Mapping[str, Any]) -> "Host":
        """Apply a partial update (PATCH) and re-validate the whole record (bmc_password_set is kept)."""
        fields = {k: v for k, v in self.as_dict().items() if k in HOST_FIELDS}
        return dataclasses.replace(Host.from_fields({**fields, **changes}), bmc_password_set=self.bmc_password_set)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_bool(value: Any, field: str) -> bool:
    """A yes/no field from JSON (true/false) or text (CSV, forms: true/false, yes/no, 1/0, on/off; blank = no)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("", "false", "no", "0", "off"):
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
        return True
    raise ValidationError(f"expected true or false, got {str(value)[:40]!r}", field)


def _choice(value: Any, field: str, choices: tuple[str, ...]) -> str | None:
    text = _clean_text(value, field, required=False)
    if text is not None and text.lower() not in choices:
        raise ValidationError(f"{text!r} is not one of {', '.join(choices)}", field)
    return text.lower() if text else None


_IPMI_ADDRESS = re.compile(r"(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])"
                           r"(?::(?P<port>[0-9]{1,5}))?")


_REDFISH_ROOT = "/redfish/v1"


def check_bmc_address(kind: str, address: str) -> str:
    """A Redfish service root URL (http:// or https://, no credentials in it) or an IPMI host[:port]."""
    if kind == "redfish":
        try:
            parts = urllib.parse.urlsplit(address)
            port = parts.port
        except ValueError:
            raise ValidationError("is not a valid URL (expected the Redfish service root, e.g. https://bmc:443)",
                                  "bmc_address") from None
        if "@" in parts.netloc:  # never echo it: it may carry a password
            raise ValidationError("must not contain credentials (user:password@): give --username and "
                                  "--password-file", "bmc_address")
        if parts.scheme not in ("http", "https") or not parts.hostname or (port is not None and not port):
            raise ValidationError(f"{address[:200]!r} is not a Redfish service root URL: expected http://HOST[:PORT] "
                                  "or https://HOST[:PORT] (e.g. https://bmc:443)", "bmc_address")
        # Stored as scheme://host[:port]: sushy puts its root prefix /redfish/v1/ there itself, so a pasted service
        # root URL loses its path and any other path is refused (docs/bmc-registry.md "BMC addresses").
        if parts.path.rstrip("/") not in ("", _REDFISH_ROOT) or parts.query or parts.fragment:
            raise ValidationError(f"{address[:200]!r}: give the BMC's URL with no path other than {_REDFISH_ROOT}, "
                                  "e.g. https://bmc:443", "bmc_address")
        return f"{parts.scheme}://{parts.netloc}"
    found = _IPMI_ADDRESS.fullmatch(address)
    if not found or (found["port"] is not None and not 1 <= int(found["port"]) <= 65535):
        raise ValidationError(f"{address[:200]!r} is not an IPMI address: expected HOST or HOST:PORT (port 1-65535, "
                              "an IPv6 address in brackets)", "bmc_address")
    return address


def _boot_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validate boot_mac, multipath, boot_method and the BMC fields of a host record."""
    boot_mac = _clean_text(fields.get("boot_mac"), "boot_mac", required=False)
    if boot_mac is not None:
        try:
            boot_mac = normalize_mac(boot_mac)
        except ValidationError as exc:
            raise ValidationError(str(exc).removeprefix("mac: "), "boot_mac") from None
    kind = _choice(fields.get("bmc_kind"), "bmc_kind", BMC_KINDS)
    address = _clean_text(fields.get("bmc_address"), "bmc_address", required=False, max_len=512)
    username = _clean_text(fields.get("bmc_username"), "bmc_username", required=False)
    system_id = _clean_text(fields.get("bmc_system_id"), "bmc_system_id", required=False)
    if kind is None:
        given = [name for name, value in (("bmc_address", address), ("bmc_username", username),
                                          ("bmc_system_id", system_id)) if value is not None]
        if given:
            raise ValidationError(f"is required with {', '.join(given)} (redfish or ipmi)", "bmc_kind")
    else:
        if address is None:
            raise ValidationError(f"is required with bmc_kind {kind}", "bmc_address")
        check_bmc_address(kind, address)
        if username is None:
            raise ValidationError(f"is required with bmc_kind {kind}", "bmc_username")
        if system_id is not None and kind != "redfish":
            raise ValidationError("is for Redfish BMCs only", "bmc_system_id")
    method = _choice(fields.get("boot_method"), "boot_method", BOOT_METHODS)
    if method in BMC_KINDS and kind != method:
        raise ValidationError(f"{method} needs a {method} BMC, and this host has "
                              f"{'a BMC of kind ' + kind if kind else 'no BMC'} (set it first: provisioner hosts bmc)",
                              "boot_method")
    normalized_mac = normalize_mac(fields["mac"]) if fields.get("mac") not in (None, "") else None
    return {"boot_mac": None if boot_mac == normalized_mac else boot_mac,
            "multipath": parse_bool(fields.get("multipath"), "multipath"), "boot_method": method,
            "bmc_kind": kind, "bmc_address": address, "bmc_username": username, "bmc_system_id": system_id}


@dataclass(frozen=True)
class Media:
    """An installation tree (extracted XenServer ISO) the hosts can be upgraded to."""

    name: str
    path: str
    product_name: str
    product_version: str
    platform_version: str
    build: str | None
    boot_files: tuple[str, ...] = ()
    added_at: str = ""

    @staticmethod
    def check_name(name: Any) -> str:
        return _clean_text(name, "name", required=True, pattern=MEDIA_NAME, max_len=64)

    @property
    def version_key(self) -> tuple[int, ...]:
        """product_version as a comparable tuple (8.4.0 < 9.0.0)."""
        return version_tuple(self.product_version)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["boot_files"] = list(self.boot_files)
        return data


def version_tuple(version: str) -> tuple[int, ...]:
    """'8.4.0' -> (8, 4, 0); non-numeric parts compare as 0 so that odd strings never crash a comparison."""
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.-]", version or "0"))


@dataclass(frozen=True)
class Attempt:
    """One arming of one host: the per-attempt token in the installer's URLs and where it got to.

    `runs` counts answer files served (the installer fetches it exactly once per run), `max_runs` caps it
    (config.attempts_per_arming at arming time): a run that dies before its start script cannot loop.
    """

    id: int
    mac: str
    media: str
    token: str
    state: str
    max_runs: int = 1
    runs: int = 0
    run_id: str | None = None
    window_until: str | None = None  # ISO UTC timestamp; None = no deadline
    exit_code: int | None = None
    created_at: str = ""
    updated_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    boot_client: str | None = None  # the first address its boot config went to: the booting host (binding)

    def as_dict(self, *, with_token: bool = False) -> dict[str, Any]:
        """JSON-ready; the token is a capability (it unlocks the answer file), so it is left out by default."""
        data = dataclasses.asdict(self)
        if not with_token:
            data.pop("token")
        return data


BOOT_INSTALLER = "installer"
BOOT_LOCAL = "local_boot"
BOOT_DEFAULT = "default"
BOOT_ACTIONS = (BOOT_INSTALLER, BOOT_LOCAL, BOOT_DEFAULT)


@dataclass(frozen=True)
class BootDecision:
    """What one MAC gets right now: the installer (with its attempt), an explicit local boot, or the default.

    DEFAULT (unknown MAC) is a local boot too: an unknown machine never gets an installer.
    """

    action: str
    mac: str | None
    reason: str
    host: Host | None = None
    attempt: Attempt | None = None

    @property
    def installer(self) -> bool:
        return self.action == BOOT_INSTALLER

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "mac": self.mac, "reason": self.reason,
                "attempt": self.attempt.id if self.attempt else None}


PACK_KINDS = ("driver", "pack")  # a driver disk (<driver-source>) or a supplemental pack (an extra <source>)


@dataclass(frozen=True)
class Pack:
    """A supplemental pack or driver disk a media carries (docs/packs.md): a repository tree served next to the
    media, named in the answer files of the hosts it applies to (`hosts` MACs, `pools` names; both empty: all)."""

    media: str
    name: str
    kind: str                       # PACK_KINDS
    path: str
    label: str                      # update.xml name-label: the installer's identifier for the repository
    version: str | None
    hosts: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # uuid, control, requires, drivers, ...
    added_at: str = ""

    def applies_to(self, host: "Host") -> bool:
        """Whether `host`'s answer files carry this pack: named by MAC or pool, or no scope at all."""
        if not self.hosts and not self.pools:
            return True
        return host.mac in self.hosts or host.pool in self.pools

    def as_dict(self) -> dict[str, Any]:
        return {"media": self.media, "name": self.name, "kind": self.kind, "path": self.path, "label": self.label,
                "version": self.version, "hosts": list(self.hosts), "pools": list(self.pools),
                "details": dict(self.details), "added_at": self.added_at}
