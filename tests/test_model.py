"""MAC spellings, host validation and the one definition of each name and token pattern."""

import re

import pytest

from provisioner.boot import attempts, urls
from provisioner.model import (ATTEMPT_TOKEN, MAC, TOKEN_PATHS, Host, Media, ValidationError, check_bmc_address,
                               normalize_mac, parse_bool, version_tuple)


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


# --- boot MAC, multipath, boot method and BMC fields (issue 18) ---

@pytest.mark.parametrize("kind, address, expected", [
    ("redfish", "https://bmc:443", "https://bmc:443"),
    ("redfish", "http://10.0.0.5/", "http://10.0.0.5"),
    ("redfish", "https://[fd00::5]:8443", "https://[fd00::5]:8443"),
    ("redfish", "http://localhost:8000/redfish/v1/", "http://localhost:8000"),  # the service root, pasted
    ("ipmi", "bmc-01.example.com", "bmc-01.example.com"),
    ("ipmi", "10.0.0.5:623", "10.0.0.5:623"),
    ("ipmi", "[fd00::5]:623", "[fd00::5]:623"),
])
def test_bmc_addresses_accepted(kind, address, expected):
    assert check_bmc_address(kind, address) == expected


@pytest.mark.parametrize("kind, address, message", [
    ("redfish", "bmc:443", "not a Redfish service root URL"),
    ("redfish", "ftp://bmc", "not a Redfish service root URL"),
    ("redfish", "https://bmc:0", "not a Redfish service root URL"),
    ("redfish", "https://bmc/redfish/v2", "no path other than /redfish/v1"),
    ("redfish", "https://bmc/?x=1", "no path other than /redfish/v1"),
    ("redfish", "https://root:calvin@bmc", "must not contain credentials"),
    ("ipmi", "https://bmc", "not an IPMI address"),
    ("ipmi", "bmc:0", "not an IPMI address"),
    ("ipmi", "bmc:65536", "not an IPMI address"),
    ("ipmi", "-bmc", "not an IPMI address"),
])
def test_bmc_addresses_refused(kind, address, message):
    with pytest.raises(ValidationError, match=message) as caught:
        check_bmc_address(kind, address)
    assert caught.value.field == "bmc_address" and "calvin" not in str(caught.value)


def test_parse_bool_and_boot_fields():
    assert [parse_bool(v, "f") for v in (True, "yes", "1", "on", " TRUE ")] == [True] * 5
    assert [parse_bool(v, "f") for v in (None, False, "", "no", "0", "off")] == [False] * 6
    with pytest.raises(ValidationError, match="expected true or false"):
        parse_bool(2, "multipath")
    host = Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h", "pool": "p", "boot_mac": "AABBCCDDEE02"})
    assert host.boot_mac == "aa:bb:cc:dd:ee:02" and host.netboot_mac == "aa:bb:cc:dd:ee:02"
    with pytest.raises(ValidationError, match="is required with bmc_address"):
        Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h", "pool": "p", "bmc_address": "x"})
    with pytest.raises(ValidationError, match="bmc_username: is required with bmc_kind ipmi"):
        Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h", "pool": "p", "bmc_kind": "ipmi",
                          "bmc_address": "10.0.0.5"})
    with pytest.raises(ValidationError, match="unknown field"):
        Host.from_fields({"mac": "aa:bb:cc:dd:ee:01", "name": "h", "pool": "p", "bmc_password": "x"})
