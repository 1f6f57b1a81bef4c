"""Upgrade answer files: build the context, render `upgrade.xml`, and refuse anything that is not a pure upgrade.

The real installer parses answer files with minidom and has traps where a small slip wipes the disk
(docs/installer.md "Modes: which answer files wipe a disk", "What every upgrade answer file must guarantee"): a
missing/empty `mode`, a root `<upgrade>`, `mode="reinstall"`, a `<primary-disk>` left in the file. Every rendered file
is re-parsed here with the same minidom semantics and refused unless it is an upgrade of exactly the host's registered
disk, with exactly the sources and scripts we computed. `fresh-install.xml` (lab reinstall flow) can never be selected
from here: the name is a constant.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence
from xml.dom import Node, minidom
from xml.parsers.expat import ExpatError

from provisioner import packs
from provisioner.boot import urls
from provisioner.config import Config
# disk_problem is THE disk rule; it lives in model (registration validates with it) and is used here as is
from provisioner.model import ATTEMPT_TOKEN, Host, Media, ValidationError, disk_problem, normalize_mac, validate_disk
from provisioner.boot.render import TemplateError, render

if TYPE_CHECKING:
    from provisioner.store import Store

UPGRADE_TEMPLATE = "upgrade.xml"  # a constant on purpose: the upgrade path must never reach fresh-install.xml
STAGE_START = "installation-start"
STAGE_COMPLETE = "installation-complete"
SCRIPT_STAGES = (STAGE_START, STAGE_COMPLETE)
PREVIEW_TOKEN = "PREVIEW"

ALLOWED_ELEMENTS = frozenset({"existing-installation", "source", "driver-source", "script"})
# What each known-but-forbidden element would do to an upgrade (installer answerfile.py; docs/installer.md
# "Upgrade answer files", "What every upgrade answer file must guarantee").
_FRESH = ("is a fresh-install element: an upgrade file must contain none, so that a file that ever lost its "
          "mode fails ('Missing mandatory element primary-disk') instead of wiping the disk")
FORBIDDEN_ELEMENTS: dict[str, str] = {
    **{name: _FRESH for name in (
        "guest-disk", "guest-disks", "admin-interface", "root-password", "name-server", "nameserver",
        "hostname", "timezone", "ntp", "ntp-server", "ntp-servers", "keymap", "service", "ssh-mode",
        "ip", "ipaddr", "subnet", "subnet-mask", "gateway", "ipv6", "gatewayv6")},
    "primary-disk": _FRESH + "; on the 8.x line it also overrides the upgrade's target disk",
    "ui-confirmation-prompt": "blocks the unattended run waiting for a key press (any text, even 'false')",
    "network-backend": "changes the installed network stack; not allowed in an upgrade",
    "bootloader": "changes boot-loader handling; not allowed in an upgrade",
    "post-install-script": "is a legacy script form (runs at filesystem-populated); only the two script stages "
                           "installation-start and installation-complete are allowed",
    "install-failed-script": "is a legacy script form; use <script stage=\"installation-complete\">",
    "backup-disk": "belongs to a restore, not an upgrade",
    "selected-multiversion-drivers": "selects driver variants; not allowed in an upgrade",
}
_ALLOWED_ATTRIBUTES = {"existing-installation": set(), "source": {"type"}, "driver-source": {"type"},
                       "script": {"stage", "type"}}
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")  # RFC 3986 characters, ASCII only
_XML_DECL = re.compile(
    r"<\?xml\s+version\s*=\s*(['\"])1\.0\1(?:\s+encoding\s*=\s*(['\"])(?i:utf-8)\2)?"
    r"(?:\s+standalone\s*=\s*(['\"])(?:yes|no)\3)?\s*\?>"
)


class AnswerfileError(ValueError):
    """No answer file can be produced (unknown boot disk, bad URL, unknown host/media, broken template)."""


class UnsafeAnswerfile(AnswerfileError):
    """A rendered answer file is not a pure upgrade of the expected disk: it must never be served."""

    def __init__(self, problem: str):
        self.problem = problem
        super().__init__(f"unsafe upgrade answer file, refused: {problem}")


@dataclass(frozen=True)
class UpgradeAnswerfile:
    """What the installer will read from a validated upgrade answer file."""

    disk: str
    sources: tuple[str, ...]
    driver_sources: tuple[str, ...]
    scripts: Mapping[str, str]


# --- values ---


def url_problem(url: Any) -> str | None:
    """Why `url` cannot go into an answer file (None when it can): http(s), a host, no credentials, ASCII."""
    if not isinstance(url, str):
        return f"is not text ({type(url).__name__})"
    if not url:
        return "is empty"
    if not _URL_CHARS.fullmatch(url):
        # Also keeps non-ASCII out: on the 8.x line xmlunwrap.getText() does .encode() (ASCII) on the text.
        return "contains characters not allowed in a URL (whitespace, quotes, <, >, backslash, non-ASCII, ...)"
    if not url.startswith(("http://", "https://")):
        return "is not an http:// or https:// URL"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if "@" in parts.netloc:
        # The 9-line installer crashes on user:pass@ in fetched URLs (NameError: urllib2); never needed.
        return "carries credentials (user:password@); the installer cannot fetch such URLs"
    if not parts.hostname:
        return "has no host name"
    if "?" in url or "#" in url:
        return "has a query string or fragment (the installer appends paths to source URLs)"
    return None


def _checked_url(url: Any, what: str) -> str:
    problem = url_problem(url)
    if problem:
        shown = "(redacted)" if isinstance(url, str) and "@" in url else repr(url)
        raise AnswerfileError(f"{what} URL {shown} {problem}")
    return url


def check_token(token: Any) -> str:
    """`token` if it may go into the script URLs: an attempt token (model.ATTEMPT_TOKEN) or PREVIEW_TOKEN."""
    if token != PREVIEW_TOKEN and (not isinstance(token, str) or not ATTEMPT_TOKEN.fullmatch(token)):
        raise AnswerfileError(f"attempt token must be 16-128 characters of A-Z a-z 0-9 _ - (or {PREVIEW_TOKEN})")
    return token


def upgrade_context(config: Config, host: Host, media: Media, token: str,
                    extra_sources: Sequence[str] = (), driver_sources: Sequence[str] = ()) -> dict[str, Any]:
    """The values `upgrade.xml` needs, built and checked in plain Python; refuses a host without a known disk."""
    raw_disk = host.disk
    if raw_disk is None or (isinstance(raw_disk, str) and not raw_disk.strip()):
        raise AnswerfileError(
            f"host {host.name!r} (MAC {host.mac}): cannot arm/render: boot disk unknown; register it with "
            "`provisioner hosts add --disk /dev/disk/by-id/...` (the PRIMARY_DISK of the host's "
            "/etc/xensource-inventory); a guessed /dev/sda could name another disk"
        )
    try:
        disk = validate_disk(raw_disk)
    except ValidationError as exc:
        raise AnswerfileError(f"host MAC {host.mac}: {exc}") from None
    problem = disk_problem(disk)
    if problem or disk != raw_disk:
        raise AnswerfileError(f"host MAC {host.mac}: disk {raw_disk!r} {problem or 'has surrounding whitespace'}")
    try:
        media_name = Media.check_name(media.name)
    except ValidationError as exc:
        raise AnswerfileError(f"media {media.name!r}: {exc}") from None
    check_token(token)
    base = config.base_url
    sources = (urls.media_tree(base, media_name), *extra_sources)
    return {
        "disk": disk,
        "sources": tuple(_checked_url(u, "source") for u in sources),
        "driver_sources": tuple(_checked_url(u, "driver-source") for u in driver_sources),
        "start_script": _checked_url(urls.script(base, token, STAGE_START), "script"),
        "complete_script": _checked_url(urls.script(base, token, STAGE_COMPLETE), "script"),
        # For operator overrides only (e.g. per-pool choices); the stock template does not print them.
        "host": {"mac": host.mac, "name": host.name, "pool": host.pool},
        "media": {"name": media_name, "product_version": media.product_version, "build": media.build},
    }


# --- rendering ---


def template_dirs(config: Config) -> list[Path]:
    """Where `upgrade.xml` is looked up: the operator's override directory first, then the shipped one."""
    dirs = []
    if config.answerfile_overrides_dir is not None:
        if not config.answerfile_overrides_dir.is_dir():
            raise AnswerfileError(
                f"answerfile_overrides_dir {config.answerfile_overrides_dir} is not a directory (fix or unset it)")
        dirs.append(config.answerfile_overrides_dir)
    dirs.append(config.answerfiles_dir)
    return dirs


def render_upgrade(config: Config, host: Host, media: Media, token: str,
                   extra_sources: Sequence[str] = (), driver_sources: Sequence[str] = ()) -> str:
    """The validated upgrade answer file for one attempt; raises AnswerfileError/UnsafeAnswerfile, never a bad file.

    Serve it as `text.encode("utf-8")`: those are the bytes validated here.
    """
    context = upgrade_context(config, host, media, token, extra_sources, driver_sources)
    try:
        text = render(template_dirs(config), UPGRADE_TEMPLATE, context)
    except TemplateError as exc:
        raise AnswerfileError(str(exc)) from exc
    found = parse_upgrade(text, expected_disk=context["disk"])
    # An override may only change layout, never what the installer reads.
    expected_scripts = {STAGE_START: context["start_script"], STAGE_COMPLETE: context["complete_script"]}
    if found.sources != context["sources"]:
        raise UnsafeAnswerfile(f"<source> URLs {list(found.sources)} differ from the computed "
                               f"{list(context['sources'])} (pass extra sources in, do not hard-code them)")
    if found.driver_sources != context["driver_sources"]:
        raise UnsafeAnswerfile(f"<driver-source> URLs {list(found.driver_sources)} differ from the computed "
                               f"{list(context['driver_sources'])}")
    if dict(found.scripts) != expected_scripts:
        raise UnsafeAnswerfile(f"scripts {dict(found.scripts)} differ from this attempt's {expected_scripts}: "
                               "without the installation-start script the host is never disarmed")
    return text


def preview(config: Config, store: "Store", mac: str, media_name: str | None = None) -> str:
    """What `mac` would get as its upgrade answer file (validated), with a placeholder token; arms nothing."""
    mac = normalize_mac(mac)
    host = store.get_host(mac)
    if host is None:
        raise AnswerfileError(f"no host with MAC {mac} is registered (add it with `provisioner hosts add`)")
    if media_name is not None:
        media = store.get_media(media_name)
        if media is None:
            known = ", ".join(m.name for m in store.list_media()) or "none"
            raise AnswerfileError(f"no media named {media_name!r} (known: {known})")
    else:
        all_media = store.list_media()
        if not all_media:
            raise AnswerfileError("no media imported yet (add one with `provisioner media add`)")
        media = max(all_media, key=lambda m: (m.version_key, m.added_at, m.name))
    extra, drivers = urls.pack_sources(config.base_url, packs.packs_for(store, media.name, host))
    return render_upgrade(config, host, media, PREVIEW_TOKEN, extra, drivers)


# --- validation (the same code the tests use) ---


def validate_upgrade(text: str, expected_disk: str | None = None) -> None:
    """Raise UnsafeAnswerfile unless `text` is a pure upgrade answer file (of `expected_disk` when given)."""
    parse_upgrade(text, expected_disk=expected_disk)


def _walk(node: Node) -> Iterator[Node]:
    for child in node.childNodes:
        yield child
        yield from _walk(child)


def _text(element: Node) -> str:
    """The installer's view of an element's text (xmlunwrap.getText): direct TEXT nodes only, stripped."""
    raw = "".join(n.data for n in element.childNodes if n.nodeType == Node.TEXT_NODE)
    if not raw.isascii():
        # xs8 getText() does unicode.encode() (ASCII) BEFORE strip(): even a trailing U+00A0 crashes it.
        raise UnsafeAnswerfile(f"<{element.tagName}> text contains non-ASCII characters (the 8.x installer "
                               "encodes element text as ASCII and would crash)")
    return raw.strip()


def _check_raw(text: Any) -> bytes:
    if not isinstance(text, str):
        raise UnsafeAnswerfile(f"expected the answer file as text, got {type(text).__name__}")
    lowered = text.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise UnsafeAnswerfile("DOCTYPE/entity declarations are not allowed (entities could rewrite any text)")
    if "<![cdata[" in lowered:
        raise UnsafeAnswerfile("CDATA section: the installer ignores CDATA text (a CDATA <source> is empty)")
    body = text.lstrip("\ufeff")
    if body.startswith("<?xml") and body[5:6].isspace() and not _XML_DECL.match(body):
        raise UnsafeAnswerfile("XML declaration must be <?xml version=\"1.0\" encoding=\"UTF-8\"?>")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeAnswerfile("text cannot be encoded as UTF-8 (lone surrogate characters)") from None


def _check_root(root: Node) -> None:
    if root.tagName == "upgrade":
        raise UnsafeAnswerfile("root element <upgrade> is not <installation mode=\"upgrade\">: the installer takes "
                               "the mode from the mode attribute, and without one <upgrade> is a FRESH INSTALL")
    if root.tagName != "installation":
        raise UnsafeAnswerfile(f"root element <{root.tagName}> is not <installation mode=\"upgrade\">")
    if not root.hasAttribute("mode"):
        raise UnsafeAnswerfile("root <installation> has no mode attribute: a missing mode is a FRESH INSTALL "
                               "(the disk is wiped)")
    mode = root.getAttribute("mode")
    if mode == "":
        raise UnsafeAnswerfile("mode=\"\" (empty mode) is read as no mode: a FRESH INSTALL (the disk is wiped)")
    if mode in ("reinstall", "fresh"):
        raise UnsafeAnswerfile(f"mode={mode!r} is a FRESH INSTALL to the installer (the disk is wiped, "
                               "no backup is taken)")
    if mode != "upgrade":
        raise UnsafeAnswerfile(f"mode={mode!r} is not exactly 'upgrade' (values are case-sensitive; the installer "
                               "stops with 'Unknown mode')")
    extra = sorted(set(root.attributes.keys()) - {"mode"})
    if extra:
        raise UnsafeAnswerfile(f"root attribute(s) {', '.join(extra)} not allowed (sr-type etc. are fresh-install "
                               "settings)")


def _check_leaf(element: Node) -> None:
    name = element.tagName
    for child in element.childNodes:
        if child.nodeType != Node.TEXT_NODE:
            raise UnsafeAnswerfile(f"<{name}> must contain plain text only (found {child.nodeName}): the installer "
                                   "reads only direct text")
    extra = sorted(set(element.attributes.keys()) - _ALLOWED_ATTRIBUTES[name])
    if extra:
        hint = " (fs-type would reformat the root file system)" if "fs-type" in extra else ""
        raise UnsafeAnswerfile(f"<{name}> attribute(s) {', '.join(extra)} not allowed{hint}")


def _checked_source(element: Node) -> str:
    name = element.tagName
    if element.getAttribute("type") != "url":
        raise UnsafeAnswerfile(f"<{name} type={element.getAttribute('type')!r}>: only type=\"url\" is allowed")
    url = _text(element)
    problem = url_problem(url)
    if problem:
        raise UnsafeAnswerfile(f"<{name}> URL {'(redacted)' if '@' in url else repr(url)} {problem}")
    return url


def parse_upgrade(text: str, expected_disk: str | None = None) -> UpgradeAnswerfile:
    """Validate like validate_upgrade() and return what the installer will read from the file."""
    data = _check_raw(text)
    try:
        # minidom, like the installer: CDATA stays a separate node type (ElementTree would merge it into text).
        doc = minidom.parseString(data)
    except ExpatError as exc:
        raise UnsafeAnswerfile(f"not well-formed XML ({exc}): the installer stops with 'Answerfile is incorrectly "
                               "formatted'") from None
    try:
        for node in _walk(doc):
            if node.nodeType == Node.DOCUMENT_TYPE_NODE:
                raise UnsafeAnswerfile("DOCTYPE is not allowed")
            if node.nodeType == Node.PROCESSING_INSTRUCTION_NODE:
                raise UnsafeAnswerfile(f"processing instruction <?{node.target} ...?> is not allowed")
            if node.nodeType == Node.CDATA_SECTION_NODE:
                raise UnsafeAnswerfile("CDATA section: the installer ignores CDATA text")
            if node.nodeType == Node.ENTITY_REFERENCE_NODE:
                raise UnsafeAnswerfile("entity reference is not allowed")
        root = doc.documentElement
        _check_root(root)
        elements = [n for n in _walk(root) if n.nodeType == Node.ELEMENT_NODE]
        # Known-dangerous elements first, at any depth: the installer finds them anywhere in the tree.
        for node in elements:
            if node.tagName in FORBIDDEN_ELEMENTS:
                raise UnsafeAnswerfile(f"<{node.tagName}> {FORBIDDEN_ELEMENTS[node.tagName]}")
        for node in root.childNodes:
            if node.nodeType == Node.TEXT_NODE and node.data.strip():
                raise UnsafeAnswerfile(f"stray text {node.data.strip()[:40]!r} directly inside <installation>")
        for node in elements:
            name = node.tagName
            if name not in ALLOWED_ELEMENTS:
                raise UnsafeAnswerfile(f"unknown element <{name}> (the installer would silently ignore it; allowed: "
                                       f"{', '.join(sorted(ALLOWED_ELEMENTS))})")
            if node.parentNode is not root:
                raise UnsafeAnswerfile(f"<{name}> must be a direct child of <installation>, not nested")
        for node in elements:
            _check_leaf(node)
        return _check_contents(root, expected_disk)
    finally:
        doc.unlink()


def _check_contents(root: Node, expected_disk: str | None) -> UpgradeAnswerfile:
    existing = root.getElementsByTagName("existing-installation")
    if not existing:
        raise UnsafeAnswerfile("no <existing-installation>: an upgrade must name the disk holding the installation")
    if len(existing) > 1:
        raise UnsafeAnswerfile(f"{len(existing)} <existing-installation> elements: exactly one is allowed (the "
                               "installer silently uses the first)")
    disk = _text(existing[0])
    problem = disk_problem(disk)
    if problem:
        raise UnsafeAnswerfile(f"<existing-installation> {disk!r} {problem}")
    if expected_disk is not None and disk != expected_disk:
        raise UnsafeAnswerfile(f"<existing-installation> {disk!r} is not the host's registered disk "
                               f"{expected_disk!r}")
    sources = tuple(_checked_source(e) for e in root.getElementsByTagName("source"))
    if not sources:
        raise UnsafeAnswerfile("no <source type=\"url\">: an upgrade needs the installation tree")
    driver_sources = tuple(_checked_source(e) for e in root.getElementsByTagName("driver-source"))
    scripts: dict[str, str] = {}
    for element in root.getElementsByTagName("script"):
        stage = element.getAttribute("stage")
        if stage not in SCRIPT_STAGES:
            # The installer does not validate stages: a typo silently never runs; other stages abort half-done.
            raise UnsafeAnswerfile(f"unknown or forbidden script stage {stage!r} (allowed: "
                                   f"{', '.join(SCRIPT_STAGES)})")
        if element.getAttribute("type") != "url":
            raise UnsafeAnswerfile(f"<script stage={stage!r} type={element.getAttribute('type')!r}>: only "
                                   "type=\"url\" is allowed")
        if stage in scripts:
            raise UnsafeAnswerfile(f"script stage {stage!r} appears twice (each stage at most once)")
        url = _text(element)
        problem = url_problem(url)
        if problem:
            raise UnsafeAnswerfile(f"<script stage={stage!r}> URL {'(redacted)' if '@' in url else repr(url)} "
                                   f"{problem}")
        scripts[stage] = url
    return UpgradeAnswerfile(disk=disk, sources=sources, driver_sources=driver_sources, scripts=scripts)
