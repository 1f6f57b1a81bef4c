"""Validation of fresh-install answer files (the lab reinstall's `fresh-install.xml`, rendered by answerfile_fresh):
parse_fresh re-reads a file with the installer's minidom semantics and refuses anything but a fresh install of
exactly the host's registered disk, on its own management NIC, with a crypt(3) root-password hash, our media tree
and the attempt's two scripts (docs/installer.md "Fresh-install answer files"); is_fresh_install reads the mode
the way the installer does. This is the one file we serve that WIPES a disk, so nothing doubtful passes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Mapping
from xml.dom import Node, minidom
from xml.parsers.expat import ExpatError

from provisioner import cryptpw
from provisioner.boot.answerfile import (
    STAGE_COMPLETE, STAGE_START, UnsafeAnswerfile, _check_raw, _text, _walk, disk_problem, url_problem)
from provisioner.model import NAME, ValidationError, normalize_mac

DEFAULT_TIMEZONE = "Etc/UTC"
ALLOWED_ELEMENTS = frozenset({"primary-disk", "admin-interface", "ipaddr", "subnet", "gateway", "hostname",
                              "timezone", "ntp", "ntp-server", "name-server", "root-password", "source", "driver-source",
                              "script"})
_IN_ADMIN = frozenset({"ipaddr", "subnet", "gateway"})
_ONCE = ("primary-disk", "admin-interface", "hostname", "root-password", "timezone", "ntp")
_ATTRIBUTES = {"admin-interface": {"hwaddr", "proto"}, "ntp": {"source"}, "root-password": {"type"},
               "source": {"type"}, "driver-source": {"type"}, "script": {"stage", "type"}}
# Known elements we never emit, and why each one would hurt (installer answerfile.py; docs/installer.md
# "Fresh-install answer files", "Upgrade answer files").
FORBIDDEN_ELEMENTS: dict[str, str] = {
    "existing-installation": "belongs to an upgrade; a fresh install names only its <primary-disk>",
    "guest-disk": "would wipe another disk into the local SR: a fresh install may touch only the registered disk",
    "guest-disks": "would wipe other disks into the local SR: a fresh install may touch only the registered disk",
    "ui-confirmation-prompt": "blocks the unattended run waiting for a key press (any text, even 'false')",
    "backup-disk": "belongs to a restore",
    "post-install-script": "is a legacy script form; only installation-start and installation-complete are used",
    "install-failed-script": "is a legacy script form; use <script stage=\"installation-complete\">",
    "bootloader": "changes boot-loader handling; not part of our fresh installs",
    "network-backend": "changes the network stack; not part of our fresh installs",
}
TIMEZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}")
SERVER = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


class UnsafeFreshAnswerfile(UnsafeAnswerfile):
    """A rendered fresh-install file is not exactly the reinstall we meant: it must never be served."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.args = (f"unsafe fresh-install answer file, refused: {problem}",)

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class FreshAnswerfile:
    """What the installer will read from a validated fresh-install answer file."""

    disk: str
    mac: str
    proto: str  # "dhcp" | "static"
    ip: str | None
    netmask: str | None
    gateway: str | None
    hostname: str
    timezone: str
    ntp_servers: tuple[str, ...]
    name_servers: tuple[str, ...]
    root_password_hash: str = field(repr=False)
    sources: tuple[str, ...] = ()
    driver_sources: tuple[str, ...] = ()  # driver disks (docs/packs.md), loaded before the installer looks at disks
    scripts: Mapping[str, str] = field(default_factory=dict)


def _leaf_text(element: Node) -> str:
    for child in element.childNodes:
        if child.nodeType != Node.TEXT_NODE:
            raise UnsafeFreshAnswerfile(f"<{element.tagName}> must contain plain text only (found {child.nodeName})")
    return _text(element)


def _check_tree(root: Node) -> list[Node]:
    if root.tagName != "installation":
        raise UnsafeFreshAnswerfile(f"root element <{root.tagName}> is not <installation> (a fresh install)")
    if root.hasAttribute("mode"):
        mode = root.getAttribute("mode")
        what = "an upgrade" if mode == "upgrade" else f"mode={mode!r}"
        raise UnsafeFreshAnswerfile(f"root <installation> carries {what}: our fresh installs have no mode attribute")
    if root.attributes.length:
        raise UnsafeFreshAnswerfile(f"root attribute(s) {', '.join(sorted(root.attributes.keys()))} not allowed")
    elements = [n for n in _walk(root) if n.nodeType == Node.ELEMENT_NODE]
    for node in elements:
        if node.tagName in FORBIDDEN_ELEMENTS:
            raise UnsafeFreshAnswerfile(f"<{node.tagName}> {FORBIDDEN_ELEMENTS[node.tagName]}")
        if node.tagName not in ALLOWED_ELEMENTS:
            raise UnsafeFreshAnswerfile(f"unknown element <{node.tagName}> (the installer would silently ignore "
                                        f"it; allowed: {', '.join(sorted(ALLOWED_ELEMENTS))})")
        parent = node.parentNode
        wanted = "admin-interface" if node.tagName in _IN_ADMIN else "installation"
        if parent.nodeType != Node.ELEMENT_NODE or parent.tagName != wanted or (wanted == "installation"
                                                                                and parent is not root):
            raise UnsafeFreshAnswerfile(f"<{node.tagName}> must be a direct child of <{wanted}>")
        extra = sorted(set(node.attributes.keys()) - _ATTRIBUTES.get(node.tagName, set()))
        if extra:
            raise UnsafeFreshAnswerfile(f"<{node.tagName}> attribute(s) {', '.join(extra)} not allowed")
    for node in [root, *elements]:
        for child in node.childNodes:
            if child.nodeType == Node.TEXT_NODE and child.data.strip() and node.tagName in ("installation",
                                                                                              "admin-interface"):
                raise UnsafeFreshAnswerfile(f"stray text {child.data.strip()[:40]!r} inside <{node.tagName}>")
    for name in _ONCE:
        if len(root.getElementsByTagName(name)) > 1:
            raise UnsafeFreshAnswerfile(f"<{name}> appears more than once (the installer silently uses the first)")
    return elements


def _ipv4(admin: Node, name: str) -> str:
    found = admin.getElementsByTagName(name)
    if len(found) != 1:
        raise UnsafeFreshAnswerfile(f"a static <admin-interface> needs exactly one <{name}>")
    text = _leaf_text(found[0])
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise UnsafeFreshAnswerfile(f"<{name}> {text!r} is not an IPv4 address") from None


def _admin(root: Node, expected_mac: str | None) -> tuple[str, str, str | None, str | None, str | None]:
    found = root.getElementsByTagName("admin-interface")
    if not found:
        raise UnsafeFreshAnswerfile("no <admin-interface>: the installer needs the management NIC")
    admin = found[0]
    try:
        mac = normalize_mac(admin.getAttribute("hwaddr"))
    except ValidationError:
        raise UnsafeFreshAnswerfile("<admin-interface> needs hwaddr=\"<the host's management MAC>\"") from None
    if expected_mac is not None and mac != normalize_mac(expected_mac):
        raise UnsafeFreshAnswerfile(f"<admin-interface hwaddr={mac!r}> is not the host's MAC {expected_mac}")
    proto = admin.getAttribute("proto")
    if proto == "dhcp":
        if admin.getElementsByTagName("*").length:
            raise UnsafeFreshAnswerfile("a DHCP <admin-interface> must be empty")
        return mac, proto, None, None, None
    if proto != "static":
        raise UnsafeFreshAnswerfile(f"<admin-interface proto={proto!r}>: only dhcp or static")
    return mac, proto, _ipv4(admin, "ipaddr"), _ipv4(admin, "subnet"), _ipv4(admin, "gateway")


def _url(element: Node) -> str:
    url = _leaf_text(element)
    problem = url_problem(url)
    if problem:
        raise UnsafeFreshAnswerfile(f"<{element.tagName}> URL {'(redacted)' if '@' in url else repr(url)} {problem}")
    return url


def _scripts(root: Node) -> dict[str, str]:
    scripts: dict[str, str] = {}
    for element in root.getElementsByTagName("script"):
        stage, kind = element.getAttribute("stage"), element.getAttribute("type")
        if stage not in (STAGE_START, STAGE_COMPLETE) or kind != "url" or stage in scripts:
            raise UnsafeFreshAnswerfile(f"<script stage={stage!r} type={kind!r}>: only one type=\"url\" script per "
                                        f"stage, stages {STAGE_START} and {STAGE_COMPLETE}")
        scripts[stage] = _url(element)
    if set(scripts) != {STAGE_START, STAGE_COMPLETE}:
        raise UnsafeFreshAnswerfile("both the installation-start script (it closes the boot window) and the "
                                    "installation-complete script are required")
    return scripts


def _servers(root: Node, name: str) -> tuple[str, ...]:
    found = tuple(_leaf_text(e) for e in root.getElementsByTagName(name))
    for text in found:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not SERVER.fullmatch(text):
                raise UnsafeFreshAnswerfile(f"<{name}> {text!r} is not an IP address or host name") from None
    return found


def _ntp(root: Node, proto: str) -> tuple[str, ...]:
    servers = _servers(root, "ntp-server")
    ntp = root.getElementsByTagName("ntp")
    source = ntp[0].getAttribute("source") if ntp else ("manual" if servers else "dhcp")
    if source not in ("manual", "default", "dhcp"):
        raise UnsafeFreshAnswerfile(f"<ntp source={source!r}>: only manual, default or dhcp")
    if (source == "manual") != bool(servers):
        raise UnsafeFreshAnswerfile("<ntp-server> elements go with <ntp source=\"manual\"> and it needs at least one")
    if source == "dhcp" and proto != "dhcp":
        raise UnsafeFreshAnswerfile("<ntp source=\"dhcp\"> needs a DHCP <admin-interface>")
    return servers


def _single(root: Node, name: str) -> str | None:
    found = root.getElementsByTagName(name)
    return _leaf_text(found[0]) if found else None


def parse_fresh(text: str, expected_disk: str | None = None, expected_mac: str | None = None) -> FreshAnswerfile:
    """Refuse (UnsafeFreshAnswerfile) unless `text` is exactly one of our fresh installs; return what it says."""
    try:
        data = _check_raw(text)
    except UnsafeAnswerfile as exc:
        raise UnsafeFreshAnswerfile(exc.problem) from None
    try:
        doc = minidom.parseString(data)
    except ExpatError as exc:
        raise UnsafeFreshAnswerfile(f"not well-formed XML ({exc})") from None
    try:
        for node in _walk(doc):
            if node.nodeType in (Node.DOCUMENT_TYPE_NODE, Node.PROCESSING_INSTRUCTION_NODE, Node.CDATA_SECTION_NODE,
                                 Node.ENTITY_REFERENCE_NODE):
                raise UnsafeFreshAnswerfile(f"{node.nodeName} nodes are not allowed (the installer ignores CDATA; "
                                            "DOCTYPE and entities could rewrite any text)")
        root = doc.documentElement
        _check_tree(root)
        return _contents(root, expected_disk, expected_mac)
    except UnsafeAnswerfile as exc:  # the shared helpers word their problems for upgrades
        raise UnsafeFreshAnswerfile(exc.problem) from None
    finally:
        doc.unlink()


def _contents(root: Node, expected_disk: str | None, expected_mac: str | None) -> FreshAnswerfile:
    disk = _single(root, "primary-disk")
    if disk is None:
        raise UnsafeFreshAnswerfile("no <primary-disk>: a fresh install must name the registered disk")
    problem = disk_problem(disk)
    if problem:
        raise UnsafeFreshAnswerfile(f"<primary-disk> {disk!r} {problem}")
    if expected_disk is not None and disk != expected_disk:
        raise UnsafeFreshAnswerfile(f"<primary-disk> {disk!r} is not the host's registered disk {expected_disk!r}")
    mac, proto, ip, netmask, gateway = _admin(root, expected_mac)
    hostname = _single(root, "hostname")
    if hostname is None or not NAME.fullmatch(hostname):
        raise UnsafeFreshAnswerfile("<hostname> is missing or not a host name")
    timezone = _single(root, "timezone") or DEFAULT_TIMEZONE
    if not TIMEZONE.fullmatch(timezone):
        raise UnsafeFreshAnswerfile(f"<timezone> {timezone!r} is not a tz database name")
    password = root.getElementsByTagName("root-password")
    if not password:
        raise UnsafeFreshAnswerfile("no <root-password type=\"hash\">: the installer would leave root without a "
                                    "usable password")
    if password[0].getAttribute("type") != "hash":
        raise UnsafeFreshAnswerfile("<root-password> must be type=\"hash\" (a crypt(3) hash, never plain text)")
    hashed = _leaf_text(password[0])
    problem = cryptpw.hash_problem(hashed)
    if problem:
        raise UnsafeFreshAnswerfile(f"<root-password> {problem}")
    sources = tuple(_url(e) for e in root.getElementsByTagName("source") if e.getAttribute("type") == "url")
    if not sources or len(sources) != root.getElementsByTagName("source").length:
        raise UnsafeFreshAnswerfile("<source type=\"url\"> is required, and only type=\"url\"")
    drivers = root.getElementsByTagName("driver-source")
    if any(e.getAttribute("type") != "url" for e in drivers):
        raise UnsafeFreshAnswerfile("<driver-source>: only type=\"url\" is allowed")
    return FreshAnswerfile(disk=disk, mac=mac, proto=proto, ip=ip, netmask=netmask, gateway=gateway,
                           hostname=hostname, timezone=timezone, ntp_servers=_ntp(root, proto),
                           name_servers=_servers(root, "name-server"), root_password_hash=hashed, sources=sources,
                           driver_sources=tuple(_url(e) for e in drivers), scripts=_scripts(root))


def is_fresh_install(text: str) -> bool:
    """Does the installer read `text` as a fresh install (root <installation>/<upgrade> with no/empty/fresh/
    reinstall mode)? For the simulated installer; False for an upgrade, a restore or unparsable XML."""
    try:
        doc = minidom.parseString(text.encode("utf-8"))
    except (ExpatError, UnicodeEncodeError):
        return False
    try:
        root = doc.documentElement
        return root.tagName in ("installation", "upgrade") and root.getAttribute("mode") in ("", "fresh",
                                                                                              "reinstall")
    finally:
        doc.unlink()
