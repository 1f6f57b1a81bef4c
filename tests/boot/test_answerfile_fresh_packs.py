"""Fresh-install answer files with supplemental packs and driver disks (docs/packs.md): golden output, what the
installer reads, and the validator's refusals (the installer's driver-source rules)."""

from __future__ import annotations

import pytest

from answerfile_helpers import BASE, DISK, GOLDEN, HOST, MEDIA, TOKEN, installer_view, make_config
from provisioner.boot.answerfile import AnswerfileError
from provisioner.boot.answerfile_fresh import render_fresh
from provisioner.boot.answerfile_fresh_check import UnsafeFreshAnswerfile, parse_fresh

HASH = ("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
PACK = f"{BASE}/media/xs-8.4.0/packs/tools/"
DRIVER = f"{BASE}/media/xs-8.4.0/packs/raid/"


def fresh(**kw):
    return render_fresh(make_config(), HOST, MEDIA, TOKEN, root_password_hash=HASH, **kw)


def test_golden_with_a_pack_and_a_driver_disk():
    text = fresh(extra_sources=(PACK,), driver_sources=(DRIVER,))
    assert text == (GOLDEN / "fresh-install-packs.xml").read_text(encoding="utf-8")
    assert "driver-source" in installer_view(text)["elements"]
    found = parse_fresh(text, expected_disk=DISK, expected_mac=HOST.mac)
    assert found.sources == (f"{BASE}/media/xs-8.4.0/", PACK) and found.driver_sources == (DRIVER,)


def test_without_packs_nothing_changes():
    assert fresh() == (GOLDEN / "fresh-install-dhcp.xml").read_text(encoding="utf-8")


@pytest.mark.parametrize("kw, problem", [
    ({"driver_sources": ("http://u:p@10.0.0.5/d/",)}, "carries credentials"),
    ({"extra_sources": ("http://10.0.0.5/p/?x=1",)}, "has a query string"),
])
def test_bad_pack_urls_are_refused_before_rendering(kw, problem):
    with pytest.raises(AnswerfileError, match=problem):
        fresh(**kw)


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.replace('<driver-source type="url">', '<driver-source type="nfs">'), 'only type="url"'),
    (lambda t: t.replace('<driver-source type="url">', '<driver-source>'), 'only type="url"'),
])
def test_validator_refuses_a_changed_driver_source(edit, problem):
    text = edit(fresh(driver_sources=(DRIVER,)))
    with pytest.raises(UnsafeFreshAnswerfile, match=problem):
        parse_fresh(text, expected_disk=DISK, expected_mac=HOST.mac)
