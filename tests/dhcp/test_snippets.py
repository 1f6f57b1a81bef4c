"""Each DHCP format from one plan, checked by the real server's own config checker (kea-dhcp4 -t, dhcpd -t,
dnsmasq --test; Debian packages kea-dhcp4-server, isc-dhcp-server, dnsmasq-base); a broken file is refused by each
checker, so a pass means something. Windows has no checker here: its script's structure is tested."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from provisioner import registry
from provisioner.config import load_config
from provisioner.dhcp import dnsmasq, isc, kea, snippets, windows
from provisioner.dhcp.plan import DhcpPlanError, build_plan, next_server_of

MACS = ("52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:12:34:58")


def _config(tmp_path, **overrides):
    return load_config(file=None, environ={}, overrides={
        "data_dir": tmp_path / "data", "bind_address": "0.0.0.0", "public_url": "http://10.0.0.5", **overrides})


@pytest.fixture
def cfg(tmp_path):
    return _config(tmp_path)


@pytest.fixture
def hosts(store):
    registry.add_host(store, {"mac": MACS[0], "name": "xs1", "pool": "p"})
    registry.add_host(store, {"mac": MACS[1], "name": "xs2.uefi", "pool": "p", "firmware": "uefi"})
    registry.add_host(store, {"mac": "52:54:00:aa:aa:aa", "name": "bonded", "pool": "p", "boot_mac": MACS[2]})
    registry.add_host(store, {"mac": "52:54:00:bb:bb:bb", "name": "plugin", "pool": "p", "boot_method": "host-plugin"})
    return store


def _check(argv: list[str]) -> subprocess.CompletedProcess:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed: make deps-debian (Makefile DEBIAN_PACKAGES)")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _kea_full(tmp_path, snippet: str):
    """The snippet merged into a minimal kea-dhcp4.conf (what an operator does with it)."""
    conf = {"Dhcp4": {"interfaces-config": {"interfaces": []},
                      "subnet4": [{"id": 1, "subnet": "10.0.0.0/24", "pools": [{"pool": "10.0.0.100-10.0.0.200"}]}],
                      **json.loads(snippet)["Dhcp4"]}}
    path = tmp_path / "kea-dhcp4.conf"
    path.write_text(json.dumps(conf))
    return path


ISC_SUBNET = "subnet 10.0.0.0 netmask 255.255.255.0 { range 10.0.0.100 10.0.0.200; }\n"


@pytest.mark.parametrize("ipxe", [False, True])
def test_plan_names_our_netbooting_macs_and_boot_files(hosts, cfg, ipxe):
    plan = build_plan(hosts, cfg, ipxe=ipxe)
    assert sorted(plan.macs) == sorted(MACS)  # boot_mac for the bonded host; the host-plugin one is left out
    assert [h.name for h in plan.skipped] == ["plugin"]
    assert (plan.next_server, plan.bios_loader, plan.uefi_loader) == ("10.0.0.5", "pxelinux.0", "grubx64.efi")
    assert plan.ipxe_url == ("http://10.0.0.5/boot/ipxe/${net0/mac:hexhyp}?platform=${platform}" if ipxe else None)


def test_plan_lpxelinux_when_pxelinux_http_and_the_errors_name_the_fix(store, hosts, tmp_path):
    assert build_plan(store, _config(tmp_path, pxelinux_http=True)).bios_loader == "lpxelinux.0"
    assert build_plan(store, _config(tmp_path, dhcp_ipxe=True)).ipxe_url is not None
    with pytest.raises(DhcpPlanError, match="not an IPv4 address.*--next-server"):
        next_server_of(_config(tmp_path, public_url="http://pxe.example.com"))
    with pytest.raises(DhcpPlanError, match="public_url is unset.*--next-server"):
        next_server_of(_config(tmp_path, public_url=""))
    assert next_server_of(_config(tmp_path, public_url="", bind_address="10.1.1.1")) == "10.1.1.1"
    assert next_server_of(_config(tmp_path, public_url="http://pxe.example.com"), "10.2.2.2") == "10.2.2.2"
    warned = build_plan(store, _config(tmp_path, tftp_port=6969)).warnings
    assert any("port 69" in w for w in warned)


def test_plan_without_hosts_is_refused(store, cfg):
    with pytest.raises(DhcpPlanError, match="hosts add"):
        build_plan(store, cfg)
    assert build_plan(store, cfg, require_hosts=False).hosts == ()


@pytest.mark.parametrize("ipxe", [False, True])
def test_kea_snippet_passes_kea_dhcp4_t(hosts, cfg, tmp_path, ipxe):
    plan = build_plan(hosts, cfg, ipxe=ipxe)
    text = kea.render(plan)
    found = {c["name"]: c for c in json.loads(text)["Dhcp4"]["client-classes"]}
    assert set(found) == {"provisioner-hosts", "provisioner-uefi", "provisioner-bios"} | (
        {"provisioner-ipxe"} if ipxe else set())
    assert all(f"pkt4.mac == 0x{m.replace(':', '')}" in found["provisioner-hosts"]["test"] for m in MACS)
    assert "52540bbbbbbb" not in text and "525400bbbbbb" not in text
    assert found["provisioner-uefi"]["boot-file-name"] == "grubx64.efi"
    assert found["provisioner-bios"]["boot-file-name"] == "pxelinux.0"
    assert "option[93].hex == 0x0007" in found["provisioner-uefi"]["test"]
    assert all(c.get("next-server", "10.0.0.5") == "10.0.0.5" for c in found.values())
    r = _check(["kea-dhcp4", "-t", str(_kea_full(tmp_path, text))])
    assert r.returncode == 0, r.stdout + r.stderr


def test_kea_checker_refuses_a_broken_class(hosts, cfg, tmp_path):
    text = kea.render(build_plan(hosts, cfg)).replace("option[93].hex", "option[93].hexx")
    r = _check(["kea-dhcp4", "-t", str(_kea_full(tmp_path, text))])
    assert r.returncode != 0


@pytest.mark.parametrize("ipxe", [False, True])
def test_isc_snippet_passes_dhcpd_t(hosts, cfg, tmp_path, ipxe):
    text = isc.render(build_plan(hosts, cfg, ipxe=ipxe))
    assert "next-server 10.0.0.5;" in text and 'filename "grubx64.efi";' in text and 'filename "pxelinux.0";' in text
    assert "host provisioner-xs2-uefi { hardware ethernet 52:54:00:12:34:57; }" in text
    assert "52:54:00:12:34:58" in text and "bb:bb:bb" not in text
    assert ('option user-class = "iPXE"' in text) == ipxe
    path = tmp_path / "dhcpd.conf"
    path.write_text(ISC_SUBNET + text)
    r = _check(["dhcpd", "-t", "-cf", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr
    path.write_text(ISC_SUBNET + text.replace("next-server 10.0.0.5;", "next-server 10.0.0.5"))
    assert _check(["dhcpd", "-t", "-cf", str(path)]).returncode != 0


def test_isc_host_names_stay_unique(store, cfg):
    registry.add_host(store, {"mac": MACS[0], "name": "a_b", "pool": "p"})
    registry.add_host(store, {"mac": MACS[1], "name": "a.b", "pool": "q"})
    names = re.findall(r"host (\S+) \{", isc.render(build_plan(store, cfg)))
    assert len(set(names)) == 2


@pytest.mark.parametrize("ipxe", [False, True])
def test_dnsmasq_snippet_passes_dnsmasq_test(hosts, cfg, tmp_path, ipxe):
    text = dnsmasq.render(build_plan(hosts, cfg, ipxe=ipxe))
    lines = text.splitlines()
    assert sorted(line for line in lines if line.startswith("dhcp-host=")) == [f"dhcp-host={m},set:provisioner"
                                                                             for m in sorted(MACS)]
    assert "dhcp-match=set:provisioner-efi,option:client-arch,7" in lines
    assert any(line.startswith("dhcp-boot=tag:provisioner,tag:provisioner-efi") and ",grubx64.efi,,10.0.0.5" in line
               for line in lines)
    assert any(",pxelinux.0,,10.0.0.5" in line and "tag:!provisioner-efi" in line for line in lines)
    path = tmp_path / "dnsmasq.conf"
    path.write_text(text)
    r = _check(["dnsmasq", "--test", f"--conf-file={path}"])
    assert r.returncode == 0, r.stdout + r.stderr
    path.write_text(text + "dhcp-boot=tag:\n")
    assert _check(["dnsmasq", "--test", f"--conf-file={path}"]).returncode != 0


def test_dnsmasq_proxy_config_passes_dnsmasq_test(hosts, cfg, tmp_path):
    plan = build_plan(hosts, cfg, ipxe=True)
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("".join(f"{line}\n" for line in dnsmasq.host_lines(plan)))
    text = dnsmasq.render_proxy(plan, subnet_address="10.0.0.5", hosts_file=hosts_file, interface="eth0")
    lines = text.splitlines()
    assert {"port=0", "dhcp-range=10.0.0.5,proxy", "dhcp-ignore=tag:!known", f"dhcp-hostsfile={hosts_file}"} <= set(lines)
    assert 'pxe-service=tag:!provisioner-ipxe,x86PC,"provisioner BIOS",pxelinux.0,10.0.0.5' in lines
    assert 'pxe-service=tag:!provisioner-ipxe,X86-64_EFI,"provisioner UEFI",grubx64.efi,10.0.0.5' in lines
    path = tmp_path / "proxy.conf"
    path.write_text(text)
    r = _check(["dnsmasq", "--test", f"--conf-file={path}"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_windows_script_structure(hosts, cfg):
    """No PowerShell or DHCP role here: the script's structure is what is checked."""
    text = windows.render(build_plan(hosts, cfg, ipxe=True))
    lines = text.splitlines()
    assert "param([Parameter(Mandatory = $true)][string]$ScopeId)" in lines
    assert "$Macs = @('52-54-00-12-34-58', '52-54-00-12-34-56', '52-54-00-12-34-57')" in lines
    for arch in ("00000", "00007", "00009"):
        assert (f"  Add-DhcpServerv4Class -Type Vendor -Name 'provisioner PXEClient Arch {arch}' "
                f"-Data 'PXEClient:Arch:{arch}'") in lines
    policies = [line for line in lines if line.startswith("Add-DhcpServerv4Policy")]
    assert [re.search(r"-ProcessingOrder (\d)", p).group(1) for p in policies] == ["1", "2", "3", "4"]
    assert all("-Condition AND -MacAddress $MacCondition" in p for p in policies)
    boot_files = re.findall(r"-PolicyName '([^']+)' -OptionId 67 -Value '([^']+)'", text)
    assert boot_files == [("provisioner iPXE", "http://10.0.0.5/boot/ipxe/${net0/mac:hexhyp}?platform=${platform}"),
                          ("provisioner arch 0", "pxelinux.0"), ("provisioner arch 7", "grubx64.efi"),
                          ("provisioner arch 9", "grubx64.efi")]
    assert len(re.findall(r"-OptionId 66 -Value '10\.0\.0\.5'", text)) == 4
    # single-quoted strings only: PowerShell expands nothing inside them (the iPXE ${...} stays literal)
    assert '"' not in text
    assert text.count("{") == text.count("}")


def test_render_refuses_an_unknown_format(hosts, cfg):
    with pytest.raises(ValueError, match="kea, isc, dnsmasq, windows"):
        snippets.render(build_plan(hosts, cfg), "bind")
