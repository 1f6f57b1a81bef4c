"""MAC spellings, host validation and the one definition of each name and token pattern."""

import re

import pytest

from provisioner.boot import attempts, urls
from provisioner.model import ATTEMPT_TOKEN, MAC, TOKEN_PATHS, Host, Media, ValidationError, normalize_mac, version_tuple


@pytest.mark.parametrize("spelling", [
    "aa:bb:cc:dd:ee:ff", "AA:BB:CC:DD:EE:FF", "aa-bb-cc-dd-ee-ff", "AA-bb-CC-dd-EE-ff",
    "aabbccddeeff", "AABBCCDDEEFF", "aabb.ccdd.eeff", "AABB.CCDD.EEFF", "  aa:bb:cc:dd:ee:ff\n",
])
def test_good_mac_spellings(spelling):
    assert normalize_mac(spelling) == "aa:bb:cc:dd:ee:ff"


@pytest.mark.parametrize("bad", [
    "", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aa:bb-cc:dd:ee:ff", "gg:bb:cc:dd:ee:ff",
    "aabbccddeef", "aabbccddeeff0", "aabb.ccdd.eef", "aa:bb:cc:dd:ee:f", "a:b:c:d:e:f",
    "aa bb cc dd ee ff", "01-aa-bb-cc-dd-ee-ff", "aa::bb:cc:dd:ee", "../etc/passwd", "aa:bb:cc:dd:ee:ff;",
    "01:00:5e:00:00:01",  # multicast
])
def test_bad_mac_spellings(bad):
    with pytest.raises(ValidationError, match="mac") as err:
        normalize_mac(bad)
    assert err.value.field == "mac"


def test_non_string_mac():
    with pytest.raises(ValidationError, match="expected a MAC address string"):
        normalize_mac(1234)  # type: ignore[arg-type]


def test_host_from_fields_normalizes():
    host = Host.from_fields({"mac": "AABB.CCDD.EEFF", "name": " h1 ", "pool": "p", "firmware": "UEFI",
                             "ip": "10.0.0.1", "disk": "/dev/disk/by-id/scsi-1"})
    assert host == Host("aa:bb:cc:dd:ee:ff", "h1", "p", "/dev/disk/by-id/scsi-1", "uefi", "10.0.0.1", "")


@pytest.mark.parametrize("fields, field, text", [
    ({"name": "h", "pool": "p"}, "mac", "required"),
    ({"mac": "aabbccddeeff", "pool": "p"}, "name", "required"),
    ({"mac": "aabbccddeeff", "name": "h"}, "pool", "required"),
    ({"mac": "aabbccddeeff", "name": "h 1", "pool": "p"}, "name", "not allowed"),
    ({"mac": "aabbccddeeff", "name": "h", "pool": "p\nq"}, "pool", "control characters"),
    ({"mac": "aabbccddeeff", "name": "h", "pool": "p", "firmware": "coreboot"}, "firmware", "not one of"),
    ({"mac": "aabbccddeeff", "name": "h", "pool": "p", "ip": "10.0.0.300"}, "ip", "not an IP"),
    ({"mac": "aabbccddeeff", "name": "h", "pool": "p", "disk": "sda"}, "disk", "device path"),
    ({"mac": "aabbccddeeff", "name": "h", "pool": "p", "disk": "/dev/sda x"}, "disk", "without whitespace"),
    ({"mac": "aabbccddeeff", "name": "h", "pool": "p", "disk": "/dev/../etc/x"}, "disk", "device path"),
    ({"mac": "aabbccddeeff", "name": "h", "pool": "p", "colour": "red"}, None, "unknown field"),
])
def test_host_validation_errors(fields, field, text):
    with pytest.raises(ValidationError) as err:
        Host.from_fields(fields)
    assert err.value.field == field
    if text:
        assert text in str(err.value)


def test_with_changes_revalidates():
    host = Host.from_fields({"mac": "aabbccddeeff", "name": "h", "pool": "p"})
    assert host.with_changes({"disk": "/dev/sdb"}).disk == "/dev/sdb"
    with pytest.raises(ValidationError):
        host.with_changes({"firmware": "xx"})


def test_media_name_and_versions():
    assert Media.check_name("xs-8.4.0") == "xs-8.4.0"
    with pytest.raises(ValidationError):
        Media.check_name("../x")
    assert version_tuple("8.4.0") < version_tuple("9.0.1") and version_tuple("8.2.1") > version_tuple("8.2")
    assert version_tuple("weird") == (0,)


@pytest.mark.parametrize("disk, warned", [("/dev/sda", True), ("/dev/nvme0n1", True), ("/dev/xvda", True),
                                          ("/dev/disk/by-id/scsi-3600", False), (None, False)])
def test_disk_warning_for_kernel_names(disk, warned):
    from provisioner.model import disk_warning

    assert (disk_warning(disk) is not None) == warned


def test_the_one_token_patterns_match_what_boot_hands_out():
    token = attempts.new_token()
    assert ATTEMPT_TOKEN.fullmatch(token)
    for url in (urls.answerfile("http://h", token), urls.script("http://h", token, "installation-start"),
                urls.report("http://h", token)):
        assert re.search(TOKEN_PATHS + re.escape(token), url)
    assert MAC.fullmatch(normalize_mac("AA-BB-CC-DD-EE-FE"))
