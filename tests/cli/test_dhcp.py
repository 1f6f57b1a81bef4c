"""`provisioner dhcp-config`: each format through the CLI, --json, --output (written whole), errors with the fix."""

import json

import pytest


@pytest.fixture
def env_run(tmp_path):
    from click.testing import CliRunner

    from provisioner.cli import main

    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_CONFIG": "",
           "PROVISIONER_PUBLIC_URL": "http://10.0.0.5"}

    def invoke(*args, **extra_env):
        return CliRunner().invoke(main, list(args), env={**env, **extra_env}, catch_exceptions=False)

    return invoke


def test_dhcp_config_formats_json_and_output(env_run, tmp_path):
    r = env_run("dhcp-config", "--format", "dnsmasq")
    assert r.exit_code == 1 and "hosts add" in r.output
    assert env_run("hosts", "add", "52:54:00:00:00:01", "--name", "a", "--pool", "p").exit_code == 0
    assert env_run("hosts", "add", "52:54:00:00:00:02", "--name", "b", "--pool", "p", "--firmware", "uefi").exit_code == 0

    r = env_run("dhcp-config", "--format", "dnsmasq")
    assert r.exit_code == 0 and "dhcp-host=52:54:00:00:00:01,set:provisioner" in r.output
    assert "dhcp-boot=tag:provisioner,tag:provisioner-efi,grubx64.efi,,10.0.0.5" in r.output
    assert "iPXE" not in r.output
    assert "dhcp-userclass=set:provisioner-ipxe,iPXE" in env_run("dhcp-config", "--format", "dnsmasq", "--ipxe").output
    assert "iPXE" in env_run("dhcp-config", "--format", "isc", PROVISIONER_DHCP_IPXE="true").output

    r = env_run("dhcp-config", "--format", "kea", "--json")
    data = json.loads(r.output)
    assert data["format"] == "kea" and data["next_server"] == "10.0.0.5" and data["ipxe_url"] is None
    assert [h["mac"] for h in data["hosts"]] == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    assert json.loads(data["snippet"])["Dhcp4"]["client-classes"][0]["name"] == "provisioner-hosts"

    out = tmp_path / "provisioner-dhcp.ps1"
    r = env_run("dhcp-config", "--format", "windows", "--output", str(out))
    assert r.exit_code == 0 and "to " + str(out) in r.output
    assert out.read_text().startswith("# provisioner") and not list(tmp_path.glob(".*.tmp"))

    r = env_run("dhcp-config", "--format", "isc", "--next-server", "10.9.9.9")
    assert "next-server 10.9.9.9;" in r.output


def test_dhcp_config_errors_name_the_fix(env_run):
    env_run("hosts", "add", "52:54:00:00:00:01", "--name", "a", "--pool", "p")
    r = env_run("dhcp-config", "--format", "isc", PROVISIONER_PUBLIC_URL="http://pxe.example.com")
    assert r.exit_code == 1 and "--next-server" in r.output and "IPv4" in r.output
    r = env_run("dhcp-config", "--format", "bind")
    assert r.exit_code == 2 and "kea" in r.output
    r = env_run("dhcp-config", "--format", "isc", PROVISIONER_TFTP_PORT="6969")
    assert r.exit_code == 0 and "warning: tftp_port is 6969" in r.output


def test_serve_proxy_dhcp_refused_without_dnsmasq(env_run, tmp_path):
    r = env_run("serve", "--allow-root", "--proxy-dhcp", PATH="/nonexistent", PROVISIONER_HTTP_PORT="0",
                PROVISIONER_TFTP_PORT="0", PROVISIONER_BIND_ADDRESS="127.0.0.1")
    assert r.exit_code == 1 and "needs dnsmasq" in r.output and "apt-get install dnsmasq-base" in r.output
