"""bootservice: TFTP names and iPXE URLs in, the policy's config out, fetches on the attempt's timeline."""

import pytest
from helpers import make_media_tree

from provisioner.boot import attempts, configs, filenames, service
from provisioner.media import import_media
from provisioner.model import Host, ValidationError

MAC = "52:54:00:12:34:56"
UNKNOWN = "52:54:00:99:99:99"
CLIENT = "10.0.0.50"


@pytest.fixture
def world(store, config, tmp_path):
    store.add_host(Host.from_fields({"mac": MAC, "name": "h1", "pool": "p", "disk": "/dev/sda", "firmware": "uefi"}))
    import_media(store, config, "xs84", make_media_tree(tmp_path / "xs84"))
    import_media(store, config, "xs90", make_media_tree(tmp_path / "xs90", version="9.0.0"))
    return store


def names(mac):
    return [filenames.format_pxelinux(mac), filenames.format_grub(mac), filenames.format_grub(mac, "", "colon"),
            filenames.format_grub(mac, "EFI/xenserver", "colon"), filenames.format_grub(mac, "boot/grub", "dashed")]


def tftp(world, config, name):
    return service.tftp_payload(world, config, name, CLIENT)


def is_installer(body):
    """An installer config: its boot line (answerfile=), or iPXE on BIOS chaining to pxelinux.0 (docs/firmware.md)."""
    return b"answerfile=" in body or b"chain ${210:string}pxelinux.0" in body


def test_every_path_gives_the_same_answer_through_the_reinstall_loop(world, config):
    # Known, not armed: explicit local boot on every path.
    for name in names(MAC):
        body = tftp(world, config, name)
        assert body and not is_installer(body) and (b"localboot 0" in body or b"\nexit\n" in body)
    assert service.ipxe_payload(world, config, MAC, CLIENT).endswith(b"exit\n")
    # Armed: the installer on every path, each fetch on the timeline.
    attempt = attempts.arm(world, config, MAC, "xs84")
    for name in names(MAC):
        assert is_installer(tftp(world, config, name))
    assert is_installer(service.ipxe_payload(world, config, MAC, CLIENT, platform="pcbios"))
    assert b"chain " in service.ipxe_payload(world, config, MAC, CLIENT)  # UEFI host: chain to GRUB
    fetches = world.events(kind="attempt.fetch", mac=MAC)
    assert [f["details"]["name"] for f in fetches[:5]] == names(MAC)
    assert {f["details"]["decision"] for f in fetches} == {"installer"}
    assert [f["details"]["what"] for f in fetches[5:]] == ["ipxe", "ipxe"]
    # The installer runs: answer file, start script. The next boot is local everywhere.
    assert attempts.claim_answerfile(world, attempt.token, CLIENT)
    assert attempts.start_script_fetched(world, attempt.token, CLIENT).changed
    for name in names(MAC):
        assert not is_installer(tftp(world, config, name))
    assert not is_installer(service.ipxe_payload(world, config, MAC, CLIENT, platform="pcbios"))
    last = world.events(kind="attempt.fetch", mac=MAC)[-1]["details"]
    assert (last["decision"], last["state"]) == ("local_boot", "started") and "is started" in last["reason"]


def test_unknown_mac_gets_the_default_and_no_event(world, config):
    before = len(world.events())
    for name in names(UNKNOWN):
        body = tftp(world, config, name)
        assert body and not is_installer(body) and b"default for 52:54:00:99:99:99" in body
    assert service.ipxe_payload(world, config, UNKNOWN, CLIENT).endswith(b"exit\n")
    assert len(world.events()) == before


@pytest.mark.parametrize("name", ["pxelinux.cfg/C000025B", "pxelinux.cfg/b8945908-d6a6-41a9-611d-74a6ab80b83d",
                                  "grub/grub.cfg-0A000082", "grub/grub.cfg-7726a678-7fc0-4853-a4f6-c85ac36a120a",
                                  "pxelinux.0", "xenserver/xs84/boot/xen.gz"])
def test_names_tried_before_the_mac_and_static_files_fall_through(world, config, name):
    attempts.arm(world, config, MAC, "xs84")
    assert tftp(world, config, name) is None


def test_default_names(world, config):
    body = tftp(world, config, "pxelinux.cfg/default")
    assert b"localboot 0" in body
    for name in ("EFI/xenserver/grub.cfg", "/grub/grub.cfg", "grub.cfg"):
        assert b'configfile "$prefix/grub.cfg-$net_default_mac"' in tftp(world, config, name)


@pytest.mark.parametrize("name", ["pxelinux.cfg/01-52-54-00-12-34-5g", "grub/grub.cfg-01-52-54-00-12",
                                  "grub/grub.cfg-52:54:00:12:34:56:78"])
def test_bad_macs_are_refused_with_an_event(world, config, name):
    attempts.arm(world, config, MAC, "xs84")
    assert tftp(world, config, name) is None
    event = world.events(kind="boot.bad_name")[-1]["details"]
    assert (event["protocol"], event["name"], event["client"]) == ("tftp", name, CLIENT)
    assert "bad MAC" in event["problem"]


def test_ipxe_bad_mac_raises_after_an_event(world, config):
    with pytest.raises(ValidationError, match="is not a MAC address"):
        service.ipxe_payload(world, config, "52-54-00-12", CLIENT)
    with pytest.raises(ValidationError, match="bad MAC"):
        service.ipxe_payload_for(world, config, "/boot/ipxe/nope", CLIENT)
    assert [e["details"]["protocol"] for e in world.events(kind="boot.bad_name")] == ["ipxe", "ipxe"]


def test_ipxe_payload_for_routes(world, config):
    attempts.arm(world, config, MAC, "xs84")
    assert is_installer(service.ipxe_payload_for(world, config, "/boot/ipxe/52-54-00-12-34-56?platform=pcbios",
                                                     CLIENT))
    assert b"chain " in service.ipxe_payload_for(world, config, f"/boot/ipxe?mac={MAC}&platform=efi", CLIENT)
    assert service.ipxe_payload_for(world, config, "/media/xs84/install.img", CLIENT) is None
    # An unknown ${platform} falls back to the registered firmware (UEFI here).
    assert b"chain " in service.ipxe_payload(world, config, MAC, CLIENT, platform="arm64")


def test_a_config_that_cannot_be_rendered_gives_local_boot_and_an_event(world, config):
    attempts.arm(world, config, MAC, "xs90")  # XenServer 9: UEFI only
    assert is_installer(tftp(world, config, filenames.format_grub(MAC)))
    body = tftp(world, config, filenames.format_pxelinux(MAC))
    assert b"localboot 0" in body and not is_installer(body)
    event = world.events(kind="boot.render_failed")[0]
    assert event["mac"] == MAC and "refuses legacy BIOS" in event["details"]["error"]


def test_media_removed_after_arming_gives_local_boot(world, config):
    attempts.arm(world, config, MAC, "xs84")
    world.remove_media("xs84")
    body = tftp(world, config, filenames.format_grub(MAC))
    assert body == configs.local_boot(configs.GRUB, mac=MAC, reason="installer config could not be rendered")
    assert body.startswith(b"# local_boot for 52:54:00:12:34:56: boot from the local disk (installer config could "
                           b"not be rendered).\n") and b"chainloader /EFI/xenserver/grubx64.efi" in body
    assert "attempt's media" in world.events(kind="boot.render_failed")[0]["details"]["error"]


def test_the_self_check_name_answers_this_machine_only(world, config):
    """provisioner-selfcheck/<per-MAC name> renders without recording (coordinator/selfcheck.py); to any other
    address it is an ordinary missing file, so nobody else reads a host's installer config through it."""
    attempts.arm(world, config, MAC, "xs84")
    name = service.self_check_name(names(MAC)[0])
    assert is_installer(service.tftp_payload(world, config, name, "127.0.0.1"))
    assert service.tftp_payload(world, config, name, "192.0.2.7") is None  # TEST-NET-1: never ours
    assert not world.events(mac=MAC, kind="attempt.fetch")
