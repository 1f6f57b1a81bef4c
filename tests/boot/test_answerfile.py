"""Upgrade answer files: golden output, every installer trap refused, hostile input never yields a bad file."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from answerfile_helpers import BASE, DISK, GOLDEN, HOST, MEDIA, TOKEN, installer_view, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.boot.answerfile import (
    ALLOWED_ELEMENTS,
    FORBIDDEN_ELEMENTS,
    PREVIEW_TOKEN,
    UPGRADE_TEMPLATE,
    AnswerfileError,
    UnsafeAnswerfile,
    parse_upgrade,
    preview,
    render_upgrade,
    upgrade_context,
    validate_upgrade,
)
from provisioner.config import ConfigError
from provisioner.model import Host, Media, ValidationError
from provisioner.boot.render import render
from provisioner.store import Store

START = f"{BASE}/boot/script/{TOKEN}/installation-start"
COMPLETE = f"{BASE}/boot/script/{TOKEN}/installation-complete"


def upgrade_file(root='<installation mode="upgrade">', body="", disk=DISK, end="</installation>",
                 source=f'<source type="url">{BASE}/media/xs-8.4.0/</source>'):
    """A hand-written upgrade file (valid with the defaults) for the trap table."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{root}\n'
            f"  <existing-installation>{disk}</existing-installation>\n  {source}\n{body}"
            f'  <script stage="installation-start" type="url">{START}</script>\n'
            f'  <script stage="installation-complete" type="url">{COMPLETE}</script>\n{end}\n')


def assert_pure_upgrade_of(text: str, disk: str) -> None:
    view = installer_view(text)
    assert view["root"] == "installation"
    assert view["mode"] == "upgrade"
    assert view["disks"] == [disk]
    assert view["elements"] <= ALLOWED_ELEMENTS
    assert not view["cdata"]
    validate_upgrade(text, expected_disk=disk)


# --- golden files and the happy path ---


def test_rendered_upgrade_matches_golden():
    text = render_upgrade(make_config(), HOST, MEDIA, TOKEN)
    assert text == (GOLDEN / "upgrade.xml").read_text(encoding="utf-8")
    assert_pure_upgrade_of(text, DISK)


def test_rendered_upgrade_with_extra_and_driver_sources_matches_golden():
    text = render_upgrade(make_config(), HOST, MEDIA, TOKEN, extra_sources=(f"{BASE}/packs/a&b/",),
                          driver_sources=("http://10.0.0.5/drivers/x/",))
    assert text == (GOLDEN / "upgrade-extra-sources.xml").read_text(encoding="utf-8")
    found = parse_upgrade(text, expected_disk=DISK)
    assert found.sources == (f"{BASE}/media/xs-8.4.0/", f"{BASE}/packs/a&b/")
    assert found.driver_sources == ("http://10.0.0.5/drivers/x/",)
    assert dict(found.scripts) == {"installation-start": START, "installation-complete": COMPLETE}


def test_render_upgrade_cannot_be_given_a_template_name():
    params = set(inspect.signature(render_upgrade).parameters)
    assert params == {"config", "host", "media", "token", "extra_sources", "driver_sources"}
    assert UPGRADE_TEMPLATE == "upgrade.xml"


def test_context_is_plain_data_with_the_computed_urls():
    ctx = upgrade_context(make_config(), HOST, MEDIA, TOKEN)
    assert ctx["disk"] == DISK
    assert ctx["sources"] == (f"{BASE}/media/xs-8.4.0/",)
    assert ctx["driver_sources"] == ()
    assert (ctx["start_script"], ctx["complete_script"]) == (START, COMPLETE)


# --- refusals before rendering ---


@pytest.mark.parametrize("disk", [None, "", "   "])
def test_host_without_boot_disk_cannot_be_rendered(disk):
    host = Host(mac=HOST.mac, name="xs1", pool="lab", disk=disk)
    with pytest.raises(AnswerfileError) as err:
        render_upgrade(make_config(), host, MEDIA, TOKEN)
    assert "boot disk unknown" in str(err.value)
    assert "provisioner hosts add --disk" in str(err.value)
    assert "52:54:00:12:34:56" in str(err.value)


@pytest.mark.parametrize("disk, words", [
    ("sda", "device path"),
    (" /dev/sda", "whitespace"),
    ("/dev/disk/by-id/\u00e9", "ASCII"),
    ("/dev/../etc/passwd", "device path"),
    ("/dev/sd a", "without whitespace"),
])
def test_bad_disk_is_refused_before_rendering(disk, words):
    host = Host(mac=HOST.mac, name="xs1", pool="lab", disk=disk)
    with pytest.raises(AnswerfileError, match=words):
        render_upgrade(make_config(), host, MEDIA, TOKEN)


@pytest.mark.parametrize("url, words", [
    ("http://user:secret@10.0.0.5/packs/", "credentials"),
    ("ftp://10.0.0.5/packs/", "not an http"),
    ("nfs://10.0.0.5:/packs/", "not an http"),
    ("http://10.0.0.5/a b/", "not allowed in a URL"),
    ("http:///packs/", "no host"),
    ("http://10.0.0.5/packs/?x=1", "query string"),
    ("http://10.0.0.5:99999/", "not a valid URL"),
    ("", "empty"),
])
def test_bad_extra_source_urls_are_refused(url, words):
    with pytest.raises(AnswerfileError, match=words) as err:
        render_upgrade(make_config(), HOST, MEDIA, TOKEN, extra_sources=(url,))
    assert "secret" not in str(err.value)
    with pytest.raises(AnswerfileError, match=words):
        render_upgrade(make_config(), HOST, MEDIA, TOKEN, driver_sources=(url,))


@pytest.mark.parametrize("token", ["", "a/b", "x" * 129, "tok en", None])
def test_bad_token_is_refused(token):
    with pytest.raises(AnswerfileError, match="token"):
        render_upgrade(make_config(), HOST, MEDIA, token)


def test_bad_media_name_is_refused():
    media = Media(name="../etc", path="/x", product_name="XenServer", product_version="8.4.0",
                  platform_version="3.4.0", build=None)
    with pytest.raises(AnswerfileError, match="media"):
        render_upgrade(make_config(), HOST, media, TOKEN)


# --- the validator: every installer trap is refused with a message that names it ---

TRAPS = [
    pytest.param(upgrade_file(root="<installation>"), "no mode attribute", id="no-mode"),
    pytest.param(upgrade_file(root='<installation mode="">'), 'empty mode', id="empty-mode"),
    pytest.param(upgrade_file(root='<installation mode="Upgrade">'), "'Upgrade' is not exactly 'upgrade'",
                 id="mode-Upgrade"),
    pytest.param(upgrade_file(root='<installation mode=" upgrade">'), "not exactly 'upgrade'", id="mode-space"),
    pytest.param(upgrade_file(root='<installation mode="reinstall">'), "mode='reinstall' is a FRESH INSTALL",
                 id="mode-reinstall"),
    pytest.param(upgrade_file(root='<installation mode="fresh">'), "mode='fresh' is a FRESH INSTALL",
                 id="mode-fresh"),
    pytest.param(upgrade_file(root="<upgrade>", end="</upgrade>"), "root element <upgrade>", id="root-upgrade"),
    pytest.param(upgrade_file(root='<upgrade mode="upgrade">', end="</upgrade>"), "root element <upgrade>",
                 id="root-upgrade-with-mode"),
    pytest.param(upgrade_file(root="<restore>", end="</restore>"), "root element <restore>", id="root-restore"),
    pytest.param(upgrade_file(root='<x:installation xmlns:x="urn:x" mode="upgrade">', end="</x:installation>"),
                 "root element <x:installation>", id="root-prefixed"),
    pytest.param(upgrade_file(root='<installation xmlns="urn:x" mode="upgrade">'), "root attribute(s) xmlns",
                 id="root-xmlns"),
    pytest.param(upgrade_file(root='<installation mode="upgrade" sr-type="ext">'), "root attribute(s) sr-type",
                 id="root-sr-type"),
    pytest.param(upgrade_file(body="  <primary-disk>/dev/sda</primary-disk>\n"),
                 "<primary-disk> is a fresh-install element", id="primary-disk"),
    pytest.param(upgrade_file(source=f'<source type="url">{BASE}/m/<primary-disk>/dev/sda</primary-disk></source>'),
                 "<primary-disk> is a fresh-install element", id="primary-disk-nested-in-source"),
    pytest.param(upgrade_file(body="  <foo><bar><primary-disk>/dev/sda</primary-disk></bar></foo>\n"),
                 "<primary-disk> is a fresh-install element", id="primary-disk-nested-deep"),
    pytest.param(upgrade_file(source=f'<source type="url"><![CDATA[{BASE}/media/xs-8.4.0/]]></source>'),
                 "CDATA", id="cdata-source"),
    pytest.param(upgrade_file(source=f'<source type="url"><![cdata[{BASE}/]]></source>'), "CDATA",
                 id="cdata-lowercase"),
    pytest.param(upgrade_file(source='<source type="url">http://user:pw@10.0.0.5/media/x/</source>'),
                 "carries credentials", id="credentials-in-source"),
    pytest.param(upgrade_file(body='  <driver-source type="url">http://u@10.0.0.5/d/</driver-source>\n'),
                 "carries credentials", id="credentials-in-driver-source"),
    pytest.param(upgrade_file(body='  <script stage="filesystem-populated" type="url">'
                                   f'{BASE}/s</script>\n'),
                 "script stage 'filesystem-populated'", id="stage-filesystem-populated"),
    pytest.param(upgrade_file(body=f'  <script stage="installation-star" type="url">{BASE}/s</script>\n'),
                 "script stage 'installation-star'", id="stage-typo"),
    pytest.param(upgrade_file(body=f'  <script stage="Installation-Start" type="url">{BASE}/s</script>\n'),
                 "script stage 'Installation-Start'", id="stage-case"),
    pytest.param(upgrade_file(body=f'  <script stage="installation-start" type="url">{BASE}/s</script>\n'),
                 "'installation-start' appears twice", id="stage-twice"),
    pytest.param(upgrade_file(body=f'  <script stage="packages-installed" type="nfs">{BASE}/s</script>\n'),
                 "script stage 'packages-installed'", id="stage-packages-installed"),
    pytest.param(upgrade_file(body="  <ui-confirmation-prompt>false</ui-confirmation-prompt>\n"),
                 "<ui-confirmation-prompt> blocks the unattended run", id="confirmation-prompt"),
    pytest.param(upgrade_file(body="  <existing-installation>/dev/sdb</existing-installation>\n"),
                 "2 <existing-installation> elements", id="two-existing-installations"),
    pytest.param(upgrade_file(disk=""), "<existing-installation> '' is empty", id="empty-existing-installation"),
    pytest.param(upgrade_file(disk="sda"), "not a device path", id="disk-without-dev"),
    pytest.param(upgrade_file(disk="/dev/disk/by-id/caf\u00e9"), "ASCII", id="disk-non-ascii"),
    pytest.param(upgrade_file(root='<installation mode="upgrade">').replace(
        "<existing-installation>", '<existing-installation fs-type="ext4">'), "fs-type", id="fs-type"),
    pytest.param(upgrade_file(disk=f"<!-- x -->{DISK}"), "plain text only", id="comment-in-disk"),
    pytest.param(upgrade_file(body="  <foo/>\n"), "unknown element <foo>", id="unknown-element"),
    pytest.param(upgrade_file(body="  <Primary-Disk>/dev/sda</Primary-Disk>\n"), "unknown element <Primary-Disk>",
                 id="unknown-case-variant"),
    pytest.param(upgrade_file(body="  stray\n"), "stray text", id="stray-text"),
    pytest.param('<!DOCTYPE installation [<!ENTITY d "/dev/sda">]>\n'
                 + upgrade_file(disk="&d;").split("\n", 1)[1], "DOCTYPE", id="doctype-entity"),
    pytest.param(upgrade_file(body="  <?foo bar?>\n"), "processing instruction", id="processing-instruction"),
    pytest.param(upgrade_file().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"'), "XML declaration",
                 id="declaration-latin1"),
    pytest.param(upgrade_file(source=""), 'no <source type="url">', id="no-source"),
    pytest.param(upgrade_file(source='<source type="nfs">10.0.0.5:/m/</source>'), "type='nfs'", id="source-nfs"),
    pytest.param(upgrade_file(source='<source type="url">nfs://10.0.0.5:/m/</source>'), "not an http",
                 id="source-nfs-url"),
    pytest.param(upgrade_file(source='<source type="url">ftp://10.0.0.5/m/</source>'), "not an http",
                 id="source-ftp"),
    pytest.param(upgrade_file(source='<source type="url"></source>'), "is empty", id="source-empty"),
    pytest.param(upgrade_file(source='<source type="url">http://10.0.0.5/caf\u00e9/</source>'),
                 "non-ASCII", id="source-non-ascii"),
    pytest.param(upgrade_file(source='<source type="url">http://10.0.0.5/\u2028</source>'),
                 "<source> text contains non-ASCII", id="source-unicode-whitespace"),
    pytest.param(upgrade_file(disk=DISK + "\u00a0"), "<existing-installation> text contains non-ASCII",
                 id="disk-trailing-nbsp"),
    pytest.param(upgrade_file(source='<source type="url">http://10.0.0.5/a&b/</source>'), "not well-formed",
                 id="raw-ampersand"),
    pytest.param(upgrade_file(body=f'  <source type="url">{BASE}/<existing-installation>/dev/sdb'
                                   "</existing-installation></source>\n"),
                 "must be a direct child", id="existing-installation-nested"),
    pytest.param(upgrade_file(body=f'  <script stage="installation-complete" type="url">{BASE}/x</script>\n'),
                 "appears twice", id="complete-twice"),
    pytest.param(upgrade_file(body=f'  <script stage="installation-start">{BASE}/x</script>\n'),
                 "only type=\"url\"", id="script-without-type"),
    pytest.param(upgrade_file(body='  <script stage="installation-start" type="url">'
                                   "http://a:b@10.0.0.5/x</script>\n"), "credentials", id="script-credentials"),
]


@pytest.mark.parametrize("text, words", TRAPS)
def test_validator_rejects_each_installer_trap(text, words):
    with pytest.raises(UnsafeAnswerfile) as err:
        validate_upgrade(text)
    assert words in str(err.value)
    assert "pw@" not in str(err.value) and "a:b@" not in str(err.value)  # credentials never echoed


@pytest.mark.parametrize("name", sorted(FORBIDDEN_ELEMENTS))
def test_validator_rejects_every_forbidden_element_by_name(name):
    with pytest.raises(UnsafeAnswerfile, match=f"<{name}>"):
        validate_upgrade(upgrade_file(body=f"  <{name}>x</{name}>\n"))


def test_validator_checks_the_expected_disk():
    validate_upgrade(upgrade_file(), expected_disk=DISK)
    with pytest.raises(UnsafeAnswerfile, match="not the host's registered disk '/dev/sdb'"):
        validate_upgrade(upgrade_file(), expected_disk="/dev/sdb")


@pytest.mark.parametrize("value", [b"<installation/>", None, "\ud800"])
def test_validator_rejects_non_text_and_unencodable(value):
    with pytest.raises(UnsafeAnswerfile):
        validate_upgrade(value)


def test_validator_accepts_comments_and_no_declaration_outside_values():
    text = upgrade_file().replace('<?xml version="1.0" encoding="UTF-8"?>\n', "<!-- made by hand -->\n")
    found = parse_upgrade(text.replace("</installation>", "  <!-- end -->\n</installation>"), expected_disk=DISK)
    assert found.disk == DISK
    assert found.sources == (f"{BASE}/media/xs-8.4.0/",)


def test_entities_are_decoded_like_the_installer_does():
    found = parse_upgrade(upgrade_file(source='<source type="url">http://10.0.0.5/a&amp;b/</source>'))
    assert found.sources == ("http://10.0.0.5/a&b/",)


# --- fresh-install.xml belongs to the lab flow only ---

FRESH_CONTEXTS = [
    dict(disk=DISK, mac=HOST.mac, admin_proto="dhcp", hostname="xs1", timezone="Europe/Paris", ntp_servers=[],
         name_servers=[], root_password_hash="$6$salt$hash", source=f"{BASE}/media/xs-8.4.0/",
         sources=(f"{BASE}/media/xs-8.4.0/",), driver_sources=(), start_script=START, complete_script=COMPLETE),
    dict(disk=DISK, mac=HOST.mac, admin_proto="static", ip="10.0.0.21", netmask="255.255.255.0",
         gateway="10.0.0.1", hostname="xs1", timezone="Etc/UTC", ntp_servers=["10.0.0.1"],
         name_servers=["10.0.0.2", "10.0.0.3"], root_password_hash="$6$salt$hash",
         source=f"{BASE}/media/xs-8.4.0/", sources=(f"{BASE}/media/xs-8.4.0/",), driver_sources=(),
         start_script=START, complete_script=COMPLETE),
]


@pytest.mark.parametrize("context", FRESH_CONTEXTS, ids=["dhcp", "static"])
def test_fresh_install_template_is_a_fresh_install_and_is_rejected(context):
    text = render([make_config().answerfiles_dir], "fresh-install.xml", context)
    view = installer_view(text)
    assert view["root"] == "installation" and view["mode"] == ""
    assert {"primary-disk", "admin-interface", "root-password", "hostname", "timezone", "ntp"} <= view["elements"]
    assert '<root-password type="hash">$6$salt$hash</root-password>' in text
    with pytest.raises(UnsafeAnswerfile, match="no mode attribute"):
        validate_upgrade(text, expected_disk=DISK)
    # Even with the mode forced to upgrade, its fresh-install elements are still refused.
    with pytest.raises(UnsafeAnswerfile, match="fresh-install element"):
        validate_upgrade(text.replace("<installation>", '<installation mode="upgrade">'), expected_disk=DISK)


# --- operator overrides go through the same validator ---


def test_override_directory_is_used_first(tmp_path):
    (tmp_path / "upgrade.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<!-- site override -->\n<installation mode="upgrade">\n'
        '{% for url in sources %}<source type="url">{{ url }}</source>\n{% endfor %}'
        "<existing-installation>\n  {{ disk }}\n</existing-installation>\n"
        '<script type="url" stage="installation-complete">{{ complete_script }}</script>\n'
        '<script type="url" stage="installation-start">{{ start_script }}</script>\n</installation>\n')
    text = render_upgrade(make_config(answerfile_overrides_dir=str(tmp_path)), HOST, MEDIA, TOKEN)
    assert "<!-- site override -->" in text
    assert_pure_upgrade_of(text, DISK)


def test_override_directory_without_upgrade_xml_falls_back_to_the_shipped_one(tmp_path):
    # A fresh-install.xml in the override directory is never picked up by the upgrade path.
    (tmp_path / "fresh-install.xml").write_text("<installation><primary-disk>/dev/sda</primary-disk></installation>")
    text = render_upgrade(make_config(answerfile_overrides_dir=str(tmp_path)), HOST, MEDIA, TOKEN)
    assert text == (GOLDEN / "upgrade.xml").read_text(encoding="utf-8")


def test_missing_override_directory_is_a_clear_error(tmp_path):
    with pytest.raises(AnswerfileError, match="answerfile_overrides_dir .* is not a directory"):
        render_upgrade(make_config(answerfile_overrides_dir=str(tmp_path / "nope")), HOST, MEDIA, TOKEN)


_GOOD_BODY = ('  <existing-installation>{{ disk }}</existing-installation>\n'
              '{% for url in sources %}  <source type="url">{{ url }}</source>\n{% endfor %}'
              '  <script stage="installation-start" type="url">{{ start_script }}</script>\n'
              '  <script stage="installation-complete" type="url">{{ complete_script }}</script>\n')

MALICIOUS_OVERRIDES = [
    pytest.param("<installation>\n  <primary-disk>{{ disk }}</primary-disk>\n" + _GOOD_BODY + "</installation>\n",
                 "no mode attribute", id="fresh-install-with-upgrade-values"),
    pytest.param('<installation mode="reinstall">\n' + _GOOD_BODY + "</installation>\n", "reinstall",
                 id="reinstall"),
    pytest.param('<installation mode="{{ \'\' }}">\n' + _GOOD_BODY + "</installation>\n", "empty mode",
                 id="computed-empty-mode"),
    pytest.param("<upgrade>\n" + _GOOD_BODY + "</upgrade>\n", "root element <upgrade>", id="root-upgrade"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY.replace("{{ disk }}", "/dev/sda")
                 + "</installation>\n", "not the host's registered disk", id="hard-coded-sda"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY.replace(
        '<source type="url">{{ url }}</source>', '<source type="url"><![CDATA[{{ url }}]]></source>')
        + "</installation>\n", "CDATA", id="cdata"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY
                 + "  <ui-confirmation-prompt>false</ui-confirmation-prompt>\n</installation>\n",
                 "<ui-confirmation-prompt>", id="confirmation-prompt"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY.replace(
        '<script stage="installation-start" type="url">{{ start_script }}</script>', "")
        + "</installation>\n", "never disarmed", id="start-script-dropped"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY
                 + '  <source type="url">http://10.9.9.9/other-tree/</source>\n</installation>\n',
                 "differ from the computed", id="foreign-source"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY
                 + '  <driver-source type="url">http://10.9.9.9/drv/</driver-source>\n</installation>\n',
                 "differ from the computed", id="foreign-driver-source"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY.replace("{{ start_script }}", "{{ complete_script }}")
                 + "</installation>\n", "differ from this attempt", id="swapped-script"),
    pytest.param('<installation mode="upgrade">\n<!-- {{ host.name }} -->\n' + _GOOD_BODY + "</installation>\n",
                 "not well-formed", id="hostile-name-in-comment"),
    pytest.param('<!DOCTYPE x [<!ENTITY d "/dev/sda">]>\n<installation mode="upgrade">\n' + _GOOD_BODY
                 + "</installation>\n", "DOCTYPE", id="doctype"),
    pytest.param('<installation mode="upgrade">\n' + _GOOD_BODY + "  <primary-disk>{{ disk }}</primary-disk>\n"
                 "</installation>\n", "<primary-disk>", id="primary-disk-appended"),
]


@pytest.mark.parametrize("template, words", MALICIOUS_OVERRIDES)
def test_malicious_override_never_gets_past_render_upgrade(tmp_path, template, words):
    (tmp_path / "upgrade.xml").write_text(template, encoding="utf-8")
    host = Host(mac=HOST.mac, name="a-- <primary-disk>/dev/sda</primary-disk> --", pool="lab", disk=DISK)
    with pytest.raises(UnsafeAnswerfile) as err:
        render_upgrade(make_config(answerfile_overrides_dir=str(tmp_path)), host, MEDIA, TOKEN)
    assert words in str(err.value)


@pytest.mark.parametrize("template, words", [
    ('{% include "fresh-install.xml" %}', "undefined"),
    ((Path(__file__).parent.parent.parent / "answerfiles" / "fresh-install.xml").read_text(encoding="utf-8"),
     "undefined"),
    ('<installation mode="upgrade">{% if %}</installation>', "line 1"),
])
def test_override_that_does_not_render_is_refused(tmp_path, template, words):
    (tmp_path / "upgrade.xml").write_text(template, encoding="utf-8")
    with pytest.raises(AnswerfileError, match=words) as err:
        render_upgrade(make_config(answerfile_overrides_dir=str(tmp_path)), HOST, MEDIA, TOKEN)
    assert "upgrade.xml" in str(err.value)


# --- property-based: hostile input never yields a bad file ---

HOSTILE = ["<", ">", "&", "]]>", '"', "'", "\n", "\r\n", "\t", " ", 'mode="fresh"', "mode=''", "--", "-->",
           "<!--", "</existing-installation><primary-disk>/dev/sda</primary-disk><existing-installation>",
           "<![CDATA[", "<!DOCTYPE x>", "&amp;", "&#10;", "&lt;", "{{ disk }}", "{% raw %}", "\u00e9", "\u2028",
           "\ufeff", "\x00", "\x1b", "\ufffe", "\U0001f600", "/dev/sda", "@", "user:pw@", "?", "#", "%2F", "\\"]
hostile = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=4)), max_size=6).map("".join)
# Valid-looking values mixed in, so that every property also exercises files that ARE served.
prefixed_disk = st.one_of(hostile, hostile.map(lambda s: "/dev/disk/by-id/" + s),
                          st.sampled_from([DISK, "/dev/sdb", "/dev/disk/by-id/a&b'c\"<d>]]>"]))
hostile_url = st.one_of(hostile, hostile.map(lambda s: "http://10.0.0.5/" + s), hostile.map(lambda s: "http://" + s),
                        st.sampled_from([BASE, "http://10.0.0.5/a&b'c/", "https://[fd00::1]:8443/x/"]))
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REFUSED = (AnswerfileError, ValidationError, ConfigError)


VALID = {"name": "xs1", "pool": "lab", "disk": DISK, "notes": "rack 4", "mac": HOST.mac, "media_name": "xs-8.4.0",
         "public_url": BASE, "extra": ()}
HOSTILE_FIELD = {"name": hostile, "pool": hostile, "disk": prefixed_disk, "notes": hostile, "mac": hostile,
                 "media_name": hostile, "public_url": hostile_url, "extra": st.lists(hostile_url, min_size=1,
                                                                                     max_size=2).map(tuple)}


def _draw_fields(data, fields):
    """Valid values except for a few fields drawn hostile, so that served files are exercised too."""
    bad = data.draw(st.sets(st.sampled_from(sorted(fields)), max_size=3), label="hostile fields")
    return {f: data.draw(HOSTILE_FIELD[f], label=f) if f in bad else VALID[f] for f in fields}


def _render_or_refuse(v, host_factory):
    """(host, text) when rendered, None when refused with a clear error; anything else fails the test."""
    try:
        config = make_config(public_url=v["public_url"])
        host = host_factory()
    except REFUSED as exc:
        assert str(exc)
        return None
    media = Media(name=v["media_name"], path="/x", product_name="XenServer", product_version="8.4.0",
                  platform_version="3.4.0", build=None)
    try:
        return host, render_upgrade(config, host, media, TOKEN, extra_sources=v["extra"],
                                    driver_sources=v["extra"])
    except AnswerfileError as exc:
        assert str(exc)  # a clear message, never an empty one
        return None


@PROPERTY
@given(data=st.data())
def test_validated_hosts_with_hostile_fields_get_an_upgrade_of_their_disk_or_nothing(data):
    v = _draw_fields(data, ("name", "pool", "disk", "notes", "media_name", "public_url", "extra"))
    fields = {"mac": HOST.mac, "name": v["name"], "pool": v["pool"], "disk": v["disk"], "notes": v["notes"]}
    result = _render_or_refuse(v, lambda: Host.from_fields(fields))
    if result is not None:
        host, text = result
        assert_pure_upgrade_of(text, host.disk)


@PROPERTY
@given(data=st.data(), no_disk=st.booleans())
def test_raw_hosts_bypassing_validation_get_an_upgrade_of_their_disk_or_nothing(data, no_disk):
    v = _draw_fields(data, ("name", "pool", "disk", "notes", "mac", "media_name", "extra"))
    v["public_url"] = BASE
    disk = None if no_disk else v["disk"]

    def factory():
        return Host(mac=v["mac"], name=v["name"], pool=v["pool"], disk=disk, notes=v["notes"])

    result = _render_or_refuse(v, factory)
    if no_disk:
        assert result is None
    if result is not None:
        assert_pure_upgrade_of(result[1], disk)


@PROPERTY
@given(data=st.data())
def test_template_plus_validator_alone_never_pass_a_bad_file(data):
    """No Python-side checks at all: raw hostile values straight into the template, then the validator."""
    valid = {"disk": DISK, "sources": [f"{BASE}/media/xs-8.4.0/"], "driver_sources": [], "start_script": START,
             "complete_script": COMPLETE}
    strategies = {"disk": prefixed_disk, "sources": st.lists(hostile_url, min_size=1, max_size=2),
                  "driver_sources": st.lists(hostile_url, max_size=2), "start_script": hostile_url,
                  "complete_script": hostile_url}
    bad = data.draw(st.sets(st.sampled_from(sorted(valid)), min_size=1, max_size=2), label="hostile fields")
    context = {k: data.draw(strategies[k], label=k) if k in bad else v for k, v in valid.items()}
    context.update(host={}, media={})
    disk, sources = context["disk"], context["sources"]
    text = render([make_config().answerfiles_dir], UPGRADE_TEMPLATE, context)
    try:
        found = parse_upgrade(text, expected_disk=disk)
    except UnsafeAnswerfile as exc:
        assert exc.problem
        return
    assert_pure_upgrade_of(text, disk)
    assert found.disk == disk
    assert list(found.sources) == [url.strip() for url in sources]  # the installer strips element text too


@PROPERTY
@given(disk=prefixed_disk, value=hostile)
def test_validator_never_crashes_on_hostile_documents(disk, value):
    for text in (upgrade_file(disk=disk), upgrade_file(body=value), upgrade_file(root=value), value):
        try:
            validate_upgrade(text)
        except UnsafeAnswerfile as exc:
            assert exc.problem
        else:
            view = installer_view(text)
            assert view["mode"] == "upgrade" and len(view["disks"]) == 1


# --- preview (the CLI's `provisioner answerfile MAC [--media NAME]`) ---


@pytest.fixture
def preview_store(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    store.add_host(Host.from_fields({"mac": "52:54:00:12:34:56", "name": "xs1", "pool": "lab", "disk": DISK}))
    store.add_host(Host.from_fields({"mac": "52:54:00:00:00:02", "name": "xs2", "pool": "lab"}))
    for name, version in (("xs-9.1.0", "9.1.0"), ("xs-10.0.0", "10.0.0"), ("xs-8.4.0", "8.4.0")):
        store.add_media(Media(name=name, path=f"/srv/{name}", product_name="XenServer", product_version=version,
                              platform_version="3.4.0", build="1"))
    yield store
    store.close()


def test_preview_uses_the_newest_media_by_version_and_arms_nothing(preview_store):
    before = preview_store.events()
    text = preview(make_config(), preview_store, "52-54-00-12-34-56".upper())
    assert_pure_upgrade_of(text, DISK)
    found = parse_upgrade(text)
    assert found.sources == (f"{BASE}/media/xs-10.0.0/",)  # 10.0.0 > 9.1.0 by version, not by name
    assert found.scripts["installation-start"] == f"{BASE}/boot/script/{PREVIEW_TOKEN}/installation-start"
    assert preview_store.events() == before


def test_preview_with_named_media(preview_store):
    text = preview(make_config(), preview_store, "525400123456", media_name="xs-8.4.0")
    assert parse_upgrade(text, expected_disk=DISK).sources == (f"{BASE}/media/xs-8.4.0/",)


def test_preview_errors_are_clear(preview_store, tmp_path):
    config = make_config()
    with pytest.raises(AnswerfileError, match="no host with MAC 52:54:00:99:99:99 is registered"):
        preview(config, preview_store, "52:54:00:99:99:99")
    with pytest.raises(ValidationError, match="not a MAC address"):
        preview(config, preview_store, "not-a-mac")
    with pytest.raises(AnswerfileError, match=r"no media named 'xs-7' \(known: xs-10.0.0, xs-8.4.0, xs-9.1.0\)"):
        preview(config, preview_store, "52:54:00:12:34:56", media_name="xs-7")
    with pytest.raises(AnswerfileError, match="boot disk unknown"):
        preview(config, preview_store, "52:54:00:00:00:02")
    empty = Store(tmp_path / "empty.sqlite")
    empty.add_host(Host.from_fields({"mac": "52:54:00:12:34:56", "name": "xs1", "pool": "lab", "disk": DISK}))
    try:
        with pytest.raises(AnswerfileError, match="no media imported yet"):
            preview(config, empty, "52:54:00:12:34:56")
    finally:
        empty.close()
