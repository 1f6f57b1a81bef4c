"""simulator/installer.py reads answer files by the installer's rules (docs/installer.md), not the product's."""

import pytest

from provisioner.simulator.installer import AnswerfileRejected, read_answerfile
from provisioner.simulator.firmware import canonical_mac, config_names

SRC = '<source type="url">http://m/</source>'
ADMIN = '<admin-interface hwaddr="52:54:00:00:00:01" proto="dhcp"/>'


@pytest.mark.parametrize("xml, fresh", [
    (f'<installation mode="upgrade"><existing-installation>sda</existing-installation>{SRC}</installation>', False),
    (f'<installation><primary-disk>sda</primary-disk>{ADMIN}{SRC}</installation>', True),            # no mode
    (f'<installation mode=""><primary-disk>sda</primary-disk>{ADMIN}{SRC}</installation>', True),    # empty = absent
    (f'<installation mode="reinstall"><primary-disk>sda</primary-disk>{ADMIN}{SRC}</installation>', True),
    (f'<upgrade><primary-disk>sda</primary-disk>{ADMIN}{SRC}</upgrade>', True),  # a root <upgrade> is not an upgrade
])
def test_the_mode_decides_whether_the_disk_is_wiped(xml, fresh):
    assert read_answerfile(xml).fresh is fresh


@pytest.mark.parametrize("xml, message", [
    ("<installation", "incorrectly formatted"),
    (f"<install>{SRC}</install>", "Unexpected top level element"),
    (f'<installation mode="Upgrade">{SRC}</installation>', "Unknown mode, Upgrade"),
    (f'<installation mode="upgrade">{SRC}</installation>', "existing-installation"),
    ('<installation mode="upgrade"><existing-installation>sda</existing-installation></installation>', "source"),
    (f'<installation>{ADMIN}{SRC}</installation>', "primary-disk"),
    (f'<installation><primary-disk>sda</primary-disk><admin-interface proto="dhcp"/>{SRC}</installation>',
     "'name' or 'hwaddr'"),
    (f'<installation><primary-disk>sda</primary-disk><admin-interface name="eth0" proto="static"/>{SRC}'
     '</installation>', "ip"),
])
def test_what_the_installer_refuses(xml, message):
    with pytest.raises(AnswerfileRejected, match=message):
        read_answerfile(xml)


def test_first_match_anywhere_unknown_ignored_cdata_is_not_text():
    answers = read_answerfile(
        '<installation mode="upgrade"><x><existing-installation>/dev/sdb</existing-installation></x>'
        '<existing-installation>sdc</existing-installation><typo-element/>'
        '<source type="url"><![CDATA[http://cdata/]]></source>'
        '<script stage="Installation-Start" type="url">http://s/start</script></installation>')
    assert answers.disk == "/dev/sdb"  # nesting does not matter, the second is ignored
    assert answers.sources == ("",)  # CDATA is not a TEXT node: an empty address
    assert answers.scripts == {"installation-start": ["http://s/start"]}  # stage is lower-cased


def test_the_names_firmware_asks_for():
    assert canonical_mac("52-54-00-AA-00-01") == "52:54:00:aa:00:01"
    assert config_names("pxelinux", "52:54:00:aa:00:01") == ["pxelinux.cfg/01-52-54-00-aa-00-01",
                                                              "pxelinux.cfg/default"]
    assert config_names("grub", "52:54:00:aa:00:01") == ["grub/grub.cfg-01-52-54-00-aa-00-01", "grub/grub.cfg"]
    with pytest.raises(ValueError):
        canonical_mac("52:54:00:aa:00")
