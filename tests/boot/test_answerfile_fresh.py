"""Fresh-install answer files (lab reinstall only): golden output, the validator's refusals, and the wall between
them and the upgrade path (which can never render or accept a fresh install)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from answerfile_helpers import BASE, DISK, GOLDEN, HOST, MEDIA, TOKEN, installer_view, make_config

from provisioner.boot.answerfile import AnswerfileError, UnsafeAnswerfile, parse_upgrade, render_upgrade
from provisioner.boot.answerfile_fresh import render_for_reinstall, render_fresh
from provisioner.boot.answerfile_fresh_check import (
    ALLOWED_ELEMENTS,
    FORBIDDEN_ELEMENTS,
    UnsafeFreshAnswerfile,
    is_fresh_install,
    parse_fresh,
)

HASH = ("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
STATIC = {"mode": "static", "ip": "10.0.1.11", "netmask": "255.255.255.0", "gateway": "10.0.1.1",
          "dns": ["10.0.1.1", "10.0.1.2"]}
START = f"{BASE}/boot/script/{TOKEN}/installation-start"
COMPLETE = f"{BASE}/boot/script/{TOKEN}/installation-complete"
SHIPPED = Path(__file__).parent.parent.parent / "answerfiles" / "fresh-install.xml"


def fresh(**kw):
    kw.setdefault("root_password_hash", HASH)
    return render_fresh(kw.pop("config", make_config()), kw.pop("host", HOST), MEDIA, TOKEN, **kw)


@pytest.mark.parametrize("network, golden", [(None, "fresh-install-dhcp.xml"), (STATIC, "fresh-install-static.xml")])
def test_golden_and_what_the_installer_reads(network, golden):
    text = fresh(network=network)
    assert text == (GOLDEN / golden).read_text(encoding="utf-8")
    view = installer_view(text)
    assert view["root"] == "installation" and view["mode"] == ""  # no mode: a FRESH install, on purpose
    assert view["elements"] <= ALLOWED_ELEMENTS
    found = parse_fresh(text, expected_disk=DISK, expected_mac=HOST.mac)
    assert (found.disk, found.mac, found.hostname, found.root_password_hash) == (DISK, HOST.mac, "xs1", HASH)
    assert found.sources == (f"{BASE}/media/xs-8.4.0/",) and dict(found.scripts) == {
        "installation-start": START, "installation-complete": COMPLETE}
    assert found.proto == ("static" if network else "dhcp")
    assert HASH not in repr(found)
    assert is_fresh_install(text)


def test_the_upgrade_path_never_renders_or_accepts_a_fresh_install(tmp_path):
    # The upgrade validator refuses the fresh file outright ...
    with pytest.raises(UnsafeAnswerfile, match="no mode attribute"):
        parse_upgrade(fresh(), expected_disk=DISK)
    # ... and an override named upgrade.xml that IS the fresh-install template is refused, never served.
    (tmp_path / "upgrade.xml").write_text(SHIPPED.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(AnswerfileError):
        render_upgrade(make_config(answerfile_overrides_dir=str(tmp_path)), HOST, MEDIA, TOKEN)
    # The fresh validator refuses an upgrade file in turn.
    with pytest.raises(UnsafeFreshAnswerfile, match="an upgrade"):
        parse_fresh(render_upgrade(make_config(), HOST, MEDIA, TOKEN))


def _swap(old: str, new: str, text: str | None = None) -> str:
    text = text or fresh(network=STATIC)
    assert old in text, old
    return text.replace(old, new, 1)


BAD = [
    ("mode-upgrade", lambda: _swap("<installation>", '<installation mode="upgrade">'), "an upgrade"),
    ("mode-reinstall", lambda: _swap("<installation>", '<installation mode="reinstall">'), "mode='reinstall'"),
    ("root-upgrade", lambda: _swap("<installation>", "<upgrade>").replace("</installation>", "</upgrade>"),
     "is not <installation>"),
    ("sr-type", lambda: _swap("<installation>", '<installation sr-type="ext">'), "root attribute"),
    ("other-disk", lambda: _swap(DISK, "/dev/sda"), "not the host's registered disk"),
    ("no-disk", lambda: _swap(f"<primary-disk>{DISK}</primary-disk>", ""), "no <primary-disk>"),
    ("two-disks", lambda: _swap("<hostname>", f"<primary-disk>{DISK}</primary-disk>\n  <hostname>"),
     "more than once"),
    ("guest-disk", lambda: _swap("<hostname>", "<guest-disk>/dev/sdb</guest-disk>\n  <hostname>"),
     "<guest-disk> would wipe another disk"),
    ("existing-installation", lambda: _swap("<hostname>", f"<existing-installation>{DISK}</existing-installation>"
                                                          "<hostname>"), "belongs to an upgrade"),
    ("prompt", lambda: _swap("<hostname>", "<ui-confirmation-prompt>false</ui-confirmation-prompt><hostname>"),
     "key press"),
    ("disk-attribute", lambda: _swap("<primary-disk>", '<primary-disk guest-storage="no">'), "attribute(s)"),
    ("plaintext-password", lambda: _swap('type="hash">' + HASH, 'type="plaintext">s3cret'), 'type="hash"'),
    ("not-a-hash", lambda: _swap(HASH, "s3cret"), "not a SHA-512"),
    ("no-password", lambda: _swap(f'<root-password type="hash">{HASH}</root-password>', ""), "no <root-password"),
    ("other-nic", lambda: _swap(HOST.mac, "52:54:00:99:99:99"), "is not the host's MAC"),
    ("nic-by-name", lambda: _swap(f'hwaddr="{HOST.mac}"', 'name="eth0"'), "attribute(s) name not allowed"),
    ("no-hwaddr", lambda: _swap(f'hwaddr="{HOST.mac}" ', ""), "needs hwaddr"),
    ("no-gateway", lambda: _swap("<gateway>10.0.1.1</gateway>", ""), "exactly one <gateway>"),
    ("nested-disk", lambda: _swap("<gateway>10.0.1.1</gateway>", f"<gateway>10.0.1.1</gateway><primary-disk>"
                                                                  f"{DISK}</primary-disk>"), "direct child"),
    ("no-start-script", lambda: _swap(f'<script stage="installation-start" type="url">{START}</script>', ""),
     "both the installation-start script"),
    ("odd-stage", lambda: _swap('stage="installation-start"', 'stage="filesystem-populated"'), "only one"),
    ("cdata", lambda: _swap(f"{BASE}/media/xs-8.4.0/", f"<![CDATA[{BASE}/media/xs-8.4.0/]]>"), "CDATA"),
    ("doctype", lambda: _swap('<?xml version="1.0" encoding="UTF-8"?>',
                              '<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE x [<!ENTITY d "/dev/sda">]>'),
     "DOCTYPE"),
    ("unknown", lambda: _swap("<hostname>", "<keymap>us</keymap><hostname>"), "unknown element <keymap>"),
    ("credentials", lambda: _swap(f"{BASE}/media", "http://u:p@10.0.0.5:8080/media"), "(redacted)"),
    ("ntp-without-manual", lambda: _swap('<ntp source="manual"/>', '<ntp source="default"/>',
                                         fresh(network=STATIC, ntp_servers=["10.0.1.1"])), "<ntp-server>"),
    ("not-xml", lambda: _swap("</installation>", "</installatio>"), "not well-formed"),
]


@pytest.mark.parametrize("make, words", [pytest.param(m, w, id=i) for i, m, w in BAD])
def test_validator_refuses(make, words):
    with pytest.raises(UnsafeFreshAnswerfile) as err:
        parse_fresh(make(), expected_disk=DISK, expected_mac=HOST.mac)
    assert words in str(err.value) and "unsafe fresh-install answer file" in str(err.value)
    assert "s3cret" not in str(err.value) or "plaintext" in str(err.value)


def test_every_forbidden_element_is_refused_by_name():
    for name, why in FORBIDDEN_ELEMENTS.items():
        text = _swap("<hostname>", f"<{name}>x</{name}>\n  <hostname>")
        with pytest.raises(UnsafeFreshAnswerfile, match=f"<{name}>"):
            parse_fresh(text)


@pytest.mark.parametrize("template, words", [
    (SHIPPED.read_text(encoding="utf-8").replace("</installation>", "<guest-disk>/dev/sdb</guest-disk>"
                                                                     "</installation>"), "guest-disk"),
    (SHIPPED.read_text(encoding="utf-8").replace("{{ hostname }}", "other-name"), "hostname"),
    (SHIPPED.read_text(encoding="utf-8").replace("{{ disk }}", "/dev/sda"), "registered disk"),
    (SHIPPED.read_text(encoding="utf-8").replace('type="hash">{{ root_password_hash }}',
                                                 'type="hash">$6$x$' + "A" * 86), "root-password"),
])
def test_an_override_may_change_layout_only(tmp_path, template, words):
    (tmp_path / "fresh-install.xml").write_text(template, encoding="utf-8")
    with pytest.raises(UnsafeFreshAnswerfile, match=words):
        fresh(config=make_config(answerfile_overrides_dir=str(tmp_path)))


@pytest.mark.parametrize("kw, words", [
    ({"root_password_hash": "s3cret"}, "not a SHA-512"),
    ({"host": HOST.with_changes({"disk": None})}, "boot disk is unknown"),
    ({"network": {"mode": "static", "ip": "10.0.0.1"}}, "netmask"),
    ({"timezone": "Europe/<Paris>"}, "tz database"),
    ({"ntp_servers": ["ntp server"]}, "NTP server"),
])
def test_context_refusals(kw, words):
    with pytest.raises(AnswerfileError, match=words) as err:
        fresh(**kw)
    assert "s3cret" not in str(err.value)


@dataclass
class _Attempt:
    id: int
    mac: str
    media: str
    token: str


@dataclass
class _Reinstall:
    id: int
    mac: str
    media: str
    attempt_id: int | None
    root_password_hash: str | None
    network: dict


def test_render_for_reinstall_only_for_its_own_attempt():
    attempt = _Attempt(7, HOST.mac, MEDIA.name, TOKEN)
    ok = _Reinstall(1, HOST.mac, MEDIA.name, 7, HASH, {"mode": "dhcp"})
    assert is_fresh_install(render_for_reinstall(make_config(), HOST, MEDIA, attempt, ok))
    for bad, words in [(None, "not the attempt of a lab reinstall"),
                       (_Reinstall(1, HOST.mac, MEDIA.name, 8, HASH, {}), "not the attempt of a lab reinstall"),
                       (_Reinstall(1, HOST.mac, "other", 7, HASH, {}), "disagree"),
                       (_Reinstall(1, HOST.mac, MEDIA.name, 7, None, {}), "served once")]:
        with pytest.raises(AnswerfileError, match=words):
            render_for_reinstall(make_config(), HOST, MEDIA, attempt, bad)


@pytest.mark.parametrize("text, expected", [
    ("<installation/>", True), ('<installation mode=""/>', True), ('<installation mode="reinstall"/>', True),
    ('<installation mode="fresh"/>', True), ("<upgrade/>", True), ('<installation mode="upgrade"/>', False),
    ("<restore/>", False), ("<installation", False),
])
def test_is_fresh_install_reads_the_mode_like_the_installer(text, expected):
    assert is_fresh_install(text) is expected
