"""bootpaths: every name firmware asks for, parsed; malformed MACs give BAD_MAC, never an exception."""

import pytest

from provisioner.boot import filenames as bp

MAC = "52:54:00:ab:cd:ef"

TFTP_CASES = [
    # name as the firmware sends it -> (kind, mac, expected info items)
    ("pxelinux.cfg/01-52-54-00-ab-cd-ef", bp.PXE_MAC, MAC, {}),
    ("pxelinux.cfg/01-52-54-00-AB-CD-EF", bp.PXE_MAC, MAC, {}),
    ("/pxelinux.cfg/01-52-54-00-ab-cd-ef", bp.PXE_MAC, MAC, {}),
    ("\\pxelinux.cfg\\01-52-54-00-ab-cd-ef", bp.PXE_MAC, MAC, {}),
    ("pxelinux.cfg/b8945908-d6a6-41a9-611d-74a6ab80b83d", bp.PXE_UUID, None,
     {"uuid": "b8945908-d6a6-41a9-611d-74a6ab80b83d"}),
    ("pxelinux.cfg/C000025B", bp.PXE_IP, None, {"hex": "C000025B", "ip": "192.0.2.91"}),
    ("pxelinux.cfg/C00002", bp.PXE_IP, None, {"hex": "C00002"}),
    ("pxelinux.cfg/C", bp.PXE_IP, None, {"hex": "C"}),
    ("pxelinux.cfg/default", bp.PXE_DEFAULT, None, {}),
    ("grub/grub.cfg-01-52-54-00-ab-cd-ef", bp.GRUB_MAC, MAC, {"prefix": "grub"}),
    ("grub.cfg-01-52-54-00-ab-cd-ef", bp.GRUB_MAC, MAC, {"prefix": ""}),
    ("/boot/grub/grub.cfg-52-54-00-ab-cd-ef", bp.GRUB_MAC, MAC, {"prefix": "boot/grub"}),
    ("grub/grub.cfg-52:54:00:ab:cd:ef", bp.GRUB_MAC, MAC, {}),
    ("EFI/xenserver/grub.cfg-52:54:00:ab:cd:ef", bp.GRUB_MAC, MAC, {"prefix": "EFI/xenserver"}),
    ("grub/grub.cfg-01-52:54:00:ab:cd:ef", bp.GRUB_MAC, MAC, {}),
    ("grub/grub.cfg-01-52-54-00-ab-cd-ef-", bp.GRUB_MAC, MAC, {"quirk": "trailing-hyphen"}),
    ("grub2/grub.cfg-7726a678-7fc0-4853-a4f6-c85ac36a120a", bp.GRUB_UUID, None,
     {"uuid": "7726a678-7fc0-4853-a4f6-c85ac36a120a"}),
    ("grub/grub.cfg-0A000082", bp.GRUB_IP, None, {"hex": "0A000082", "ip": "10.0.0.130"}),
    ("grub/grub.cfg-0A0", bp.GRUB_IP, None, {"hex": "0A0"}),
    ("grub/grub.cfg-10.0.0.130", bp.GRUB_IP, None, {"ip": "10.0.0.130"}),
    ("grub/grub.cfg-fe80--5054-ff-feab-cdef", bp.GRUB_IP, None, {"ip": "fe80::5054:ff:feab:cdef"}),
    ("grub/grub.cfg", bp.GRUB_DEFAULT, None, {"prefix": "grub"}),
    ("grub.cfg", bp.GRUB_DEFAULT, None, {"prefix": ""}),
    ("EFI/xenserver/grub.cfg", bp.GRUB_DEFAULT, None, {"prefix": "EFI/xenserver"}),
    ("\\EFI\\xenserver\\grub.cfg", bp.GRUB_DEFAULT, None, {"prefix": "EFI/xenserver"}),
    ("/EFI/BOOT/grub.cfg", bp.GRUB_DEFAULT, None, {"prefix": "EFI/BOOT"}),
]


@pytest.mark.parametrize("name,kind,mac,info", TFTP_CASES, ids=[c[0] for c in TFTP_CASES])
def test_parse_tftp(name, kind, mac, info):
    path = bp.parse_tftp(name)
    assert (path.kind, path.mac) == (kind, mac)
    assert info.items() <= dict(path.info).items()
    assert path.family == kind.split("-")[0]
    assert path.problem is None


BAD_CASES = [
    ("pxelinux.cfg/01-52-54-00-ab-cd-eg", "pxelinux", "expected 01-aa-bb-cc-dd-ee-ff"),
    ("pxelinux.cfg/01-52-54-00-ab-cd", "pxelinux", "expected 01-aa-bb-cc-dd-ee-ff"),
    ("pxelinux.cfg/01-52-54-00-ab-cd-ef-00", "pxelinux", "expected 01-aa-bb-cc-dd-ee-ff"),
    ("pxelinux.cfg/01-01-54-00-ab-cd-ef", "pxelinux", "multicast"),
    ("pxelinux.cfg/52-54-00-ab-cd-ef", "pxelinux", "hardware type first"),
    ("pxelinux.cfg/20-52-54-00-ab-cd-ef", "pxelinux", "hardware type 20 is not Ethernet"),
    ("pxelinux.cfg/01-52 54 00 ab cd ef", "pxelinux", "bad MAC"),
    ("pxelinux.cfg/01-52-54-00-ab-cd-ef\nkernel x", "pxelinux", "bad MAC"),
    ("pxelinux.cfg/menu.cfg", "pxelinux", "not a pxelinux.cfg name"),
    ("grub/grub.cfg-01-52-54-00-ab-cd", "grub", "bad MAC"),
    ("grub/grub.cfg-52:54:00:ab:cd:zz", "grub", "bad MAC"),
    ("grub/grub.cfg-01-01-54-00-ab-cd-ef", "grub", "multicast"),
    ("EFI/xenserver/grub.cfg-", "grub", "bad MAC"),
    ("grub/grub.cfg-..", "grub", "bad MAC"),
]


@pytest.mark.parametrize("name,family,problem", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_malformed_macs_are_a_result_not_an_exception(name, family, problem):
    path = bp.parse_tftp(name)
    assert path.kind == bp.BAD_MAC and path.mac is None
    assert path.family == family
    assert problem in path.problem


@pytest.mark.parametrize("name", [
    "pxelinux.0", "lpxelinux.0", "mboot.c32", "grubx64.efi", "EFI/xenserver/grubx64.efi",
    "xenserver/xs84/boot/xen.gz", "xenserver/xs84/EFI/xenserver/grub.cfg", "other/grub.cfg",
    "grub/grub.cfg.bak", "grub/grub.cfg-../../etc/passwd", "pxelinux.cfg/sub/01-52-54-00-ab-cd-ef", "", "a" * 300, "pxelinux.cfg/de\x00fault",
])
def test_static_names_are_not_dynamic(name):
    assert bp.parse_tftp(name) is None


def test_non_strings_are_not_dynamic():
    assert bp.parse_tftp(None) is None
    assert bp.parse_ipxe(b"/boot/ipxe/52-54-00-ab-cd-ef") is None


IPXE_CASES = [
    ("/boot/ipxe/52-54-00-ab-cd-ef", MAC, {}),
    ("boot/ipxe/52-54-00-ab-cd-ef", MAC, {}),
    ("/boot/ipxe/52:54:00:ab:cd:ef", MAC, {}),
    ("/boot/ipxe/52%3A54%3A00%3Aab%3Acd%3Aef", MAC, {}),
    ("/boot/ipxe/52-54-00-AB-CD-EF/", MAC, {}),
    ("/boot/ipxe?mac=52:54:00:ab:cd:ef", MAC, {}),
    ("/boot/ipxe?mac=52%3A54%3A00%3Aab%3Acd%3Aef&platform=efi", MAC, {"platform": "efi"}),
    ("/boot/ipxe/52-54-00-ab-cd-ef?platform=pcbios", MAC, {"platform": "pcbios"}),
    ("/boot/ipxe/52-54-00-ab-cd-ef?platform=arm64", MAC, {}),
]


@pytest.mark.parametrize("target,mac,info", IPXE_CASES, ids=[c[0] for c in IPXE_CASES])
def test_parse_ipxe(target, mac, info):
    path = bp.parse_ipxe(target)
    assert (path.kind, path.mac, dict(path.info)) == (bp.IPXE_MAC, mac, info)
    assert path.family == "ipxe"


@pytest.mark.parametrize("target,problem", [
    ("/boot/ipxe/52-54-00-ab-cd", "bad MAC"),
    ("/boot/ipxe/${net0/mac:hexhyp}", "bad MAC"),
    ("/boot/ipxe?mac=", "missing"),
    ("/boot/ipxe", "missing"),
    ("/boot/ipxe?mac=52:54:00:ab:cd:ef%0Akernel", "bad MAC"),
    ("/boot/ipxe/01-00-5e-00-00-01", "bad MAC"),
])
def test_parse_ipxe_bad_mac(target, problem):
    path = bp.parse_ipxe(target)
    assert path.kind == bp.BAD_MAC and path.family == "ipxe" and problem in path.problem


@pytest.mark.parametrize("target", ["/boot/ipxex/52-54-00-ab-cd-ef", "/media/xs84/install.img", "/boot/answerfile/x"])
def test_parse_ipxe_other_routes(target):
    assert bp.parse_ipxe(target) is None


def test_format_round_trips():
    for spelling in (MAC, "52-54-00-AB-CD-EF", "525400abcdef", "5254.00ab.cdef"):
        assert bp.format_pxelinux(spelling) == "pxelinux.cfg/01-52-54-00-ab-cd-ef"
        assert bp.parse_tftp(bp.format_pxelinux(spelling)).mac == MAC
        for style in ("01", "dashed", "colon"):
            for prefix in ("grub", "", "EFI/xenserver", "/boot/grub/"):
                name = bp.format_grub(spelling, prefix, style)
                assert bp.parse_tftp(name) == (bp.GRUB_MAC, MAC, {"prefix": prefix.strip("/")})
        for query in (False, True):
            assert bp.parse_ipxe(bp.format_ipxe(spelling, query=query)) == (bp.IPXE_MAC, MAC, {})
    assert bp.format_grub(MAC) == "grub/grub.cfg-01-52-54-00-ab-cd-ef"
    assert bp.format_grub(MAC, "", "colon") == "grub.cfg-52:54:00:ab:cd:ef"
    assert bp.format_ipxe(MAC) == "/boot/ipxe/52-54-00-ab-cd-ef"
    assert bp.format_ipxe(MAC, query=True) == "/boot/ipxe?mac=52:54:00:ab:cd:ef"
    assert bp.format_pxelinux_ip("192.0.2.91") == "pxelinux.cfg/C000025B"
    assert bp.parse_tftp(bp.format_pxelinux_ip("10.0.0.130")).info["ip"] == "10.0.0.130"
    with pytest.raises(ValueError, match="unknown GRUB name style"):
        bp.format_grub(MAC, style="upper")


def test_ipxe_entry_url_is_what_ipxe_expands():
    url = bp.ipxe_entry_url("http://10.0.0.1:8080/")
    assert url == "http://10.0.0.1:8080/boot/ipxe/${net0/mac:hexhyp}?platform=${platform}"
    expanded = url.replace("${net0/mac:hexhyp}", "52-54-00-ab-cd-ef").replace("${platform}", "efi")
    assert bp.parse_ipxe(expanded.split("10.0.0.1:8080", 1)[1]) == (bp.IPXE_MAC, MAC, {"platform": "efi"})


@pytest.mark.parametrize("name, mac", [
    ("pxelinux.cfg/01-aa-bb-cc-dd-ee-0f", "aa:bb:cc:dd:ee:0f"), ("grub/grub.cfg-01-aa-bb-cc-dd-ee-0f", "aa:bb:cc:dd:ee:0f"),
    ("pxelinux.0", None), (None, None), ("x" * 5000, None), ("\x00../..", None)])
def test_mac_of_tftp_name_names_the_mac_a_file_name_carries(name, mac):
    assert bp.mac_of_tftp_name(name) == mac


def test_tftp_media_path_and_its_inverse():
    assert bp.tftp_media_path("xs84", "/boot/xen.gz") == "xenserver/xs84/boot/xen.gz"
    assert bp.parse_tftp_media_path(bp.tftp_media_path("xs84", "/boot/xen.gz")) == ("xs84", "boot/xen.gz")
    assert bp.parse_tftp_media_path("/xenserver/xs84/install.img") == ("xs84", "install.img")
    for name in ("pxelinux.0", "xenserver/", "xenserver/xs84", "xenserver/xs84/", "xenserver//boot/xen.gz"):
        assert bp.parse_tftp_media_path(name) is None
