"""How the simulated XenServer installer reads an answer file: the installer's own rules, not the product's.

Written from the installer's behaviour (docs/installer.md sections "How answer files are parsed", "Modes: which
answer files wipe a disk", "Upgrade answer files", "Fresh-install answer files"; docs/simulator.md section
"The simulated firmware and installer"): xml.dom.minidom, the first element of a name anywhere in the tree,
unknown elements ignored, the root's `mode` deciding fresh or upgrade. It shares no code with provisioner/boot/,
so a bug in the product's answer files makes the two disagree instead of agree.
"""

from __future__ import annotations

import xml.dom.minidom
from dataclasses import dataclass, field, replace
from xml.dom import Node
from xml.parsers.expat import ExpatError

STAGE_START = "installation-start"  # the script stages the simulated installer runs (docs/installer.md "Scripts")
STAGE_COMPLETE = "installation-complete"


class AnswerfileRejected(ValueError):
    """The installer's AnswerfileException: it shows the error and reboots, no script runs."""


@dataclass(frozen=True)
class Answers:
    """What the installer took from an answer file (only what the simulated machine acts on)."""

    fresh: bool                      # a fresh install (the disk is wiped) rather than an upgrade
    disk: str                        # existing-installation (upgrade) or primary-disk (fresh), /dev/ prefixed
    sources: tuple[str, ...]         # <source type="url"> addresses, in order
    driver_sources: tuple[str, ...] = ()  # <driver-source type="url"> addresses, in order (docs/packs.md)
    scripts: dict[str, list[str]] = field(default_factory=dict)  # stage -> script URLs, in order
    hostname: str | None = None
    root_password: tuple[str, str] | None = None  # ("hash" | "plaintext", value); None: none given
    proto: str | None = None         # admin-interface proto: "static" | "dhcp"
    ip: str = ""
    netmask: str = ""
    gateway: str = ""
    name_servers: tuple[str, ...] = ()


def _elements(node, *names: str) -> list:
    """Every element of any of `names` anywhere below `node`, in document order (getElementsByTagName)."""
    return [e for e in node.getElementsByTagName("*") if e.tagName in names]


def _mandatory(node, *names: str):
    found = _elements(node, *names)
    if not found:
        raise AnswerfileRejected(f"Missing mandatory element {names[0]}")
    return found[0]


def _text(element) -> str:
    """The element's direct TEXT children, joined and stripped: CDATA and child elements do not count."""
    return "".join(c.data for c in element.childNodes if c.nodeType == Node.TEXT_NODE).strip()


def _attribute(element, *names: str, mandatory: bool = False) -> str | None:
    """The first of `names` with a non-empty value; an empty value counts as absent."""
    for name in names:
        value = element.getAttribute(name)
        if value:
            return value
    if mandatory:
        raise AnswerfileRejected(f"Missing mandatory attribute {names[0]} of {element.tagName}")
    return None


def _disk(text: str) -> str:
    return text if text.startswith("/dev/") else "/dev/" + text


def _sources(root) -> tuple[str, ...]:
    _mandatory(root, "source")
    return _url_sources(root, "source", "url sources")


def _driver_sources(root) -> tuple[str, ...]:
    """host-installer answerfile.py parseDriverSource (267-288): type mandatory, local/url/nfs; optional."""
    return _url_sources(root, "driver-source", "url driver sources")


def _url_sources(root, tag: str, what: str) -> tuple[str, ...]:
    """Every <tag>: its type is mandatory and one of local/url/nfs, as the installer's parser says; only url ones
    are simulated."""
    sources = []
    for node in _elements(root, tag):
        kind = _attribute(node, "type", mandatory=True)
        if kind not in ("local", "url", "nfs"):
            raise AnswerfileRejected(f"Invalid type for <{tag}> media specified.")
        address = _text(node)
        if kind != "url" or address.startswith("nfs://"):
            raise AnswerfileRejected(f"<{tag} type={kind!r}>: only {what} are simulated")
        sources.append(address)
    return tuple(sources)


def _scripts(root) -> dict[str, list[str]]:
    scripts: dict[str, list[str]] = {}
    for node in _elements(root, "script"):
        stage = _attribute(node, "stage", mandatory=True).lower()  # stage and type are lower-cased; a stage
        _attribute(node, "type", mandatory=True)                   # nobody reaches is silently never run
        scripts.setdefault(stage, []).append(_text(node))
    return scripts


def _fresh(root) -> Answers:
    disk = _disk(_text(_mandatory(root, "primary-disk")))
    admin = _mandatory(root, "admin-interface")
    if not _attribute(admin, "name") and not _attribute(admin, "hwaddr"):
        raise AnswerfileRejected("<admin-interface> tag must have one of 'name' or 'hwaddr'")
    proto = _attribute(admin, "proto", mandatory=True)
    ip = netmask = gateway = ""
    if proto == "static":
        ip = _text(_mandatory(admin, "ip", "ipaddr"))
        netmask = _text(_mandatory(admin, "subnet-mask", "subnet"))
        gateway = _text(_mandatory(admin, "gateway"))
    elif proto != "dhcp":  # no IPv4 and (in the simulator) no IPv6
        raise AnswerfileRejected("<admin-interface> tag must have IPv4 or IPv6 defined.")
    password = None
    found = _elements(root, "root-password")
    if found:
        kind = _attribute(found[0], "type") or "plaintext"
        if kind not in ("plaintext", "hash"):
            raise AnswerfileRejected(f"root-password type {kind!r} is neither plaintext nor hash")
        password = (kind, _text(found[0]))
    hostnames = _elements(root, "hostname")
    return Answers(True, disk, (), hostname=_text(hostnames[0]) if hostnames else None,
                   root_password=password, proto=proto, ip=ip, netmask=netmask, gateway=gateway,
                   name_servers=tuple(_text(n) for n in _elements(root, "name-server", "nameserver")))


def read_answerfile(text: str) -> Answers:
    """The answers of an installation answer file, or AnswerfileRejected with the installer's message."""
    try:
        root = xml.dom.minidom.parseString(text).documentElement
    except (ExpatError, ValueError):
        raise AnswerfileRejected("Answerfile is incorrectly formatted.") from None
    if root.tagName == "restore":
        raise AnswerfileRejected("restore answer files are not simulated")
    if root.tagName not in ("installation", "upgrade"):
        raise AnswerfileRejected("Unexpected top level element")
    drivers = _driver_sources(root)  # processAnswerfileSetup, before the mode is read (install.py 176-187)
    mode = _attribute(root, "mode") or "fresh"  # missing or empty: a fresh install
    if mode not in ("fresh", "reinstall", "upgrade"):
        raise AnswerfileRejected(f"Unknown mode, {mode}")
    if mode != "upgrade":  # mode "reinstall" is a fresh install too (no backup is taken)
        answers = _fresh(root)
    else:
        answers = Answers(False, _disk(_text(_mandatory(root, "existing-installation"))), ())
    return replace(answers, sources=_sources(root), driver_sources=drivers, scripts=_scripts(root))  # the installer's order: mode first
