"""bootconfig: golden files per loader / firmware / media generation, and values that could inject lines."""

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner import states
from provisioner.boot import configs, policy
from provisioner.boot.configs import GRUB, IPXE, PXELINUX, BootConfigError
from provisioner.config import load_config
from provisioner.model import Attempt, Host, Media

GOLDEN = Path(__file__).parent.parent / "golden" / "boot"
# Regenerate after an intended template change: UPDATE_GOLDEN=1 pytest tests/boot/test_configs.py, then review.
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

MAC = "52:54:00:12:34:56"
TOKEN = "Zm9vYmFyLWJhei1xdXV4LTAxMjM0NTY3"
HOST = Host.from_fields({"mac": MAC, "name": "h1", "pool": "p", "disk": "/dev/sda", "firmware": "uefi"})
BIOS_HOST = dataclasses.replace(HOST, firmware="bios")
XS8 = Media(name="xs84", path="/srv/xs84", product_name="XenServer", product_version="8.4.0",
            platform_version="3.4.0", build="1")
XS9 = Media(name="xs90", path="/srv/xs90", product_name="XenServer", product_version="9.0.0",
            platform_version="4.0.0", build="2",
            boot_files=("boot/xen.efi", "boot/vmlinuz", "install.img", "EFI/xenserver/grubx64.efi"))


@pytest.fixture
def config(tmp_path):
    return load_config(file=None, environ={}, overrides={"data_dir": tmp_path, "public_url": "http://192.0.2.1:8080"})


def installer(media=XS8, host=HOST, token=TOKEN):
    attempt = Attempt(id=42, mac=host.mac, media=media.name, token=token, state=states.ARMED)
    return policy.decide(host.mac, host, attempt)


def local():
    attempt = Attempt(id=42, mac=MAC, media="xs84", token=TOKEN, state=states.STARTED)
    return policy.decide(MAC, HOST, attempt)


def golden(name, body):
    path = GOLDEN / name
    if UPDATE:
        path.write_bytes(body)
    assert body == path.read_bytes(), f"{name} differs from its golden file"


VARIANTS = {
    "pxelinux-installer-tftp.cfg": lambda c: configs.config_for(installer(host=BIOS_HOST), PXELINUX, c, XS8),
    "pxelinux-installer-http.cfg": lambda c: configs.config_for(installer(host=BIOS_HOST), PXELINUX, c, XS8,
                                                                   pxelinux_http=True),
    "pxelinux-local.cfg": lambda c: configs.config_for(local(), PXELINUX, c),
    "pxelinux-default.cfg": lambda c: configs.config_for(policy.decide(MAC, None, None), PXELINUX, c),
    "grub-installer-xs8.cfg": lambda c: configs.config_for(installer(), GRUB, c, XS8),
    "grub-installer-xs9.cfg": lambda c: configs.config_for(installer(XS9), GRUB, c, XS9),
    "grub-local.cfg": lambda c: configs.config_for(local(), GRUB, c),
    "grub-dispatcher.cfg": lambda c: configs.dispatcher(),
    "ipxe-installer-bios.ipxe": lambda c: configs.config_for(installer(host=BIOS_HOST), IPXE, c, XS8),
    "ipxe-installer-efi.ipxe": lambda c: configs.config_for(installer(), IPXE, c, XS8),
    "ipxe-installer-xs9-efi.ipxe": lambda c: configs.config_for(installer(XS9), IPXE, c, XS9, platform="efi"),
    "ipxe-local.ipxe": lambda c: configs.config_for(local(), IPXE, c, platform="pcbios"),
    "ipxe-local-efi.ipxe": lambda c: configs.config_for(local(), IPXE, c, platform="efi"),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_golden(config, name):
    golden(name, VARIANTS[name](config))


@pytest.mark.parametrize("name", sorted(n for n in VARIANTS if n.startswith("grub-")))
def test_grub_configs_pass_grubs_own_parser(config, name, tmp_path):
    """grub-script-check (Debian package grub-common) is GRUB's real script parser."""
    checker = shutil.which("grub-script-check")
    assert checker, "grub-script-check not found: apt-get install grub-common"
    path = tmp_path / name
    path.write_bytes(VARIANTS[name](config))
    result = subprocess.run([checker, str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_bytes(VARIANTS[name](config) + b'echo "unterminated\n')  # the checker does catch errors
    assert subprocess.run([checker, str(path)], capture_output=True, timeout=30).returncode != 0


def test_golden_directory_has_no_stale_files():
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(VARIANTS)


def test_pxelinux_line_has_our_arguments_in_the_dom0_part(config):
    body = configs.config_for(installer(host=BIOS_HOST), PXELINUX, config, XS8).decode()
    append = next(line.strip() for line in body.splitlines() if line.strip().startswith("append "))
    xen, dom0, image = append[len("append "):].split(" --- ")
    assert xen.split()[0] == "xenserver/xs84/boot/xen.gz"
    assert dom0.split() == ["xenserver/xs84/boot/vmlinuz", "console=hvc0", "console=tty0",
                            f"answerfile=http://192.0.2.1:8080/boot/answerfile/{TOKEN}",
                            f"network_device={MAC}", "install"]
    assert image == "xenserver/xs84/install.img"
    assert "network_config" not in body  # DHCP: we do not know the netmask and gateway


def test_platform_overrides_registered_firmware_for_ipxe(config):
    efi = configs.config_for(installer(host=BIOS_HOST), IPXE, config, XS8, platform="efi").decode()
    assert "chain http://192.0.2.1:8080/tftp/grubx64.efi" in efi
    bios = configs.config_for(installer(), IPXE, config, XS8, platform="pcbios").decode()
    assert bios.startswith("#!ipxe\n") and "\nchain ${210:string}pxelinux.0 || goto local\n" in bios


def test_ipxe_on_bios_chains_to_pxelinux_on_our_tftp_server(config):
    """Debian's iPXE cannot load the gzip xen.gz (docs/firmware.md "iPXE on BIOS"): the script sets pxelinux's path
    prefix (option 210) to our TFTP server, the host of public_url, and chains to pxelinux.0 there."""
    body = configs.config_for(installer(host=BIOS_HOST), IPXE, config, XS8).decode()
    assert "\nset 210:string tftp://192.0.2.1/\n" in body and "\nkernel " not in body and "answerfile=" not in body
    other = config.replace(public_url="http://boot.example:8080", tftp_port=6969)
    body = configs.config_for(installer(host=BIOS_HOST), IPXE, other, XS8).decode()
    assert "\nset 210:string tftp://boot.example:6969/\n" in body
    v6 = config.replace(public_url="http://[2001:db8::1]:8080")
    assert "tftp://[2001:db8::1]/" in configs.config_for(installer(host=BIOS_HOST), IPXE, v6, XS8).decode()


def test_ipxe_on_uefi_chains_to_the_grub_that_can_boot_the_media(config):
    xs8 = configs.config_for(installer(), IPXE, config, XS8).decode()
    assert "chain http://192.0.2.1:8080/tftp/grubx64.efi || exit" in xs8  # the site's GRUB: multiboot2
    xs9 = configs.config_for(installer(XS9), IPXE, config, XS9).decode()
    assert "chain http://192.0.2.1:8080/media/xs90/EFI/xenserver/grubx64.efi || exit" in xs9
    without = dataclasses.replace(XS9, boot_files=("boot/xen.efi",))
    with pytest.raises(BootConfigError, match="XenServer 9 needs its own GRUB"):
        configs.config_for(installer(without), IPXE, config, without)


def test_default_port_gives_a_plain_grub_http_device(config):
    body = configs.config_for(installer(), GRUB, config.replace(public_url="http://boot.example"), XS8).decode()
    assert "multiboot2 (http,boot.example)/media/xs84/boot/xen.gz " in body


@pytest.mark.parametrize("media,host,loader,platform,match", [
    (XS9, BIOS_HOST, PXELINUX, None, "refuses legacy BIOS"),
    (XS9, BIOS_HOST, IPXE, None, "refuses legacy BIOS"),
    (XS8, HOST, "syslinux", None, "unknown loader"),
    (XS8, HOST, IPXE, "arm64", "unknown iPXE platform"),
])
def test_unsupported_combinations_are_refused(config, media, host, loader, platform, match):
    with pytest.raises(BootConfigError, match=match):
        configs.config_for(installer(media, host), loader, config, media, platform=platform)


def test_installer_needs_the_attempts_media(config):
    with pytest.raises(BootConfigError, match="needs its host, attempt and the attempt's media"):
        configs.config_for(installer(), GRUB, config, None)
    with pytest.raises(BootConfigError, match="needs its host, attempt and the attempt's media"):
        configs.config_for(installer(XS8), GRUB, config, XS9)


@pytest.mark.parametrize("loader,host,kw", [
    (GRUB, HOST, {}),
    (PXELINUX, BIOS_HOST, {}),  # TFTP paths for the files, but the answer-file and script URLs are https
    (PXELINUX, BIOS_HOST, {"pxelinux_http": True}),
    (IPXE, BIOS_HOST, {}),
    (IPXE, HOST, {"platform": "efi"}),
])
def test_an_https_public_url_is_refused_for_every_installer_line(config, loader, host, kw):
    https = config.replace(public_url="https://192.0.2.1")
    with pytest.raises(BootConfigError, match="public_url is https://.*set public_url to an http:// URL"):
        configs.config_for(installer(host=host), loader, https, XS8, **kw)
    # a local boot carries no URL: it is still served
    assert b"localboot" in configs.config_for(local(), PXELINUX, https)


INJECTIONS = [
    ("token", "abc\nkernel http://evil/x"),
    ("token", "abc answerfile=http://evil/x"),
    ("token", "abc;reboot"),
    ("token", "abc${root}"),
    ("token", 'abc"x'),
    ("token", "abc'x"),
    ("token", "abc\tx"),
    ("media", "xs84 evil"),
    ("media", "xs84\necho"),
    ("media", "xs84;x"),
    ("media", "../x"),
    ("mac", "52:54:00:12:34:56 x"),
    ("mac", "52:54:00:12:34:56\nboot"),
    ("public_url", "http://192.0.2.1/a b"),
    ("public_url", "http://192.0.2.1/a\nkernel"),
    ("public_url", "http://192.0.2.1/${prefix}"),
    ("public_url", "http://192.0.2.1/a;b"),
    ("public_url", "http://192.0.2.1/a'b"),
]


@pytest.mark.parametrize("field,value", INJECTIONS, ids=[f"{f}={v!r}" for f, v in INJECTIONS])
@pytest.mark.parametrize("loader,host,extra", [(PXELINUX, BIOS_HOST, {}), (PXELINUX, BIOS_HOST, {"pxelinux_http": True}),
                                               (GRUB, HOST, {}), (IPXE, BIOS_HOST, {}), (IPXE, HOST, {})],
                         ids=["pxelinux", "lpxelinux", "grub", "ipxe-bios", "ipxe-efi"])
def test_values_that_could_inject_are_refused(config, field, value, loader, host, extra):
    media, token = XS8, TOKEN
    if field == "token":
        token = value
    elif field == "media":
        media = dataclasses.replace(XS8, name=value)
    elif field == "mac":
        host = dataclasses.replace(host, mac=value)
    else:
        # Raw strings straight into the dataclass: the boot config must not rely on earlier validation.
        config = dataclasses.replace(config, public_url=value)
    attempt = Attempt(id=42, mac=host.mac, media=media.name, token=token, state=states.ARMED)
    decision = policy.decide(host.mac, host, attempt)
    assert decision.installer
    with pytest.raises(BootConfigError, match="refusing to put"):
        configs.config_for(decision, loader, config, media, **extra)


def test_local_boot_comments_stay_on_one_line():
    body = configs.local_boot(GRUB, mac="x\nboot", reason="a\nexit 0; ${x} 'q'").decode()
    assert body.splitlines()[0].startswith("# local_boot for x?boot: boot from the local disk (a?exit 0? ?")
    commands = [line.strip() for line in body.splitlines() if not line.startswith("#")]
    assert commands[-1] == "exit"  # after the chainloader blocks: the injected text stayed in the comment
    assert "if search --no-floppy --file --set=root /EFI/xenserver/grubx64.efi; then" in commands
    with pytest.raises(BootConfigError, match="unknown loader"):
        configs.local_boot("syslinux")


def test_helpers():
    assert configs.grub_http_path("http://[fd00::1]:8080/m/x") == "(http,[fd00::1]:8080)/m/x"
    with pytest.raises(BootConfigError, match="GRUB HTTP server"):
        configs.grub_http_path("http://a,b/x")
