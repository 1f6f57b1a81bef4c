"""Doctor checks as a booting host sees us: the address DHCP sends it to (next-server), TFTP answering there,
public_url answering with our own files, and the DHCP snippet agreeing with the config (docs/deploy.md)."""

from __future__ import annotations

import ipaddress
import logging
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from provisioner.boot.urls import TFTP_FILES_PREFIX, boot_base_problem
from provisioner.config import Config
from provisioner.dhcp.plan import DhcpPlanError, build_plan, next_server_of
from provisioner.doctor.findings import Finding, fail, ok, skip, warn
from provisioner.store import Store
from provisioner.tftp.client import TftpFetchError, fetch

SET_PUBLIC_URL = ("set public_url in provisioner.toml to http://<this machine's address on the hosts' network> "
                  "(e.g. public_url = \"http://10.0.0.5\"), the address DHCP gives as next-server")
WILDCARDS = ("0.0.0.0", "::")
PROBE_TIMEOUT = 3.0


def _loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_url_for_hosts(config: Config, store: Store) -> list[Finding]:
    """public_url is what every boot config, answer file and script URL carries: it must be reachable by hosts."""
    host = urllib.parse.urlsplit(config.base_url).hostname
    remote = sorted(h.name for h in store.list_hosts() if h.ip and not _loopback(h.ip))
    results = []
    if _loopback(host) and (remote or config.bind_address in WILDCARDS or not _loopback(config.bind_address)):
        who = f"registered hosts ({', '.join(remote[:5])}) are remote" if remote else \
            f"serve listens on {config.bind_address} for other machines"
        results.append(fail("public_url.loopback", f"booting hosts are told {config.base_url} (public_url "
                            f"{'unset' if not config.public_url else 'is loopback'}), but {who}: they cannot reach "
                            "their answer file, kernel or install.img", SET_PUBLIC_URL))
    else:
        results.append(ok("public_url.loopback", f"booting hosts are told {config.base_url}"))
    problem = boot_base_problem(config.base_url)
    results.append(fail("public_url.https", problem, "set public_url to the http:// URL of this server "
                        "(docs/boot-urls.md)") if problem else ok("public_url.https", "public_url is plain http"))
    parts = urllib.parse.urlsplit(config.base_url)
    mismatch = []
    if config.bind_address not in WILDCARDS and host and not _loopback(host) and host != config.bind_address:
        mismatch.append(f"public_url names {host} but serve listens only on {config.bind_address}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if config.public_url and config.http_port and port != config.http_port:
        mismatch.append(f"public_url's port is {port} but http_port is {config.http_port}")
    if mismatch:
        results.append(warn("public_url.bind", "; ".join(mismatch) + " (fine only behind a reverse proxy or NAT "
                            "that forwards it)", "make public_url's host and port those serve listens on: "
                            "bind_address = that address (or 0.0.0.0) and http_port = its port"))
    else:
        results.append(ok("public_url.bind", "public_url's address and port are those serve listens on"))
    return results


def tftp_reachable(config: Config, loader: str = "pxelinux.0") -> Finding:
    """An RRQ for the BIOS loader at next-server:tftp_port, as PXE firmware sends it."""
    try:
        server = next_server_of(config)
    except DhcpPlanError:
        server = "127.0.0.1" if config.bind_address in WILDCARDS else config.bind_address
    where = f"tftp://{server}:{config.tftp_port}"
    fix = (f"start serve (systemctl start provisioner) and check that it listens on udp {config.tftp_port} at "
           f"{server} (bind_address {config.bind_address}); open udp {config.tftp_port} in the firewall")
    quiet = logging.getLogger("tftpy")  # the TFTP client logs each timeout and error packet itself
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        data = fetch(server, config.tftp_port, loader, timeout=PROBE_TIMEOUT / 3, retries=1)
    except FileNotFoundError:
        return warn("tftp.reachable", f"{where} answers, but has no {loader}", "see loaders.missing")
    except TftpFetchError as exc:
        return fail("tftp.reachable", f"nothing answers a TFTP read request at {where} ({exc})", fix)
    finally:
        quiet.setLevel(level)
    mine = Path(config.tftp_root) / loader
    if mine.is_file() and mine.read_bytes() != data:
        return fail("tftp.reachable", f"{where} serves a {loader} that is not the one in {config.tftp_root}: "
                    "another TFTP server answers there", f"stop the other TFTP server (tftpd-hpa, dnsmasq "
                    f"enable-tftp) on {server}, or give serve an address of its own; {fix}")
    return ok("tftp.reachable", f"{where} served {loader} ({len(data)} bytes)")


def http_reachable(config: Config, loader: str = "pxelinux.0") -> Finding:
    """GET public_url's copy of a loader (the TFTP root over HTTP): proves it is our server answering there."""
    url = f"{config.base_url}{TFTP_FILES_PREFIX}/{loader}"
    fix = (f"start serve and check it listens on tcp {config.http_port} at the address public_url names "
           f"({config.base_url}); open that port in the firewall; public_url must be this server, not a proxy "
           "that does not forward to it")
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and not (Path(config.tftp_root) / loader).is_file():
            return warn("http.reachable", f"{config.base_url} answers (404 for {loader}, which tftp_root lacks)",
                        "see loaders.missing")
        return fail("http.reachable", f"GET {url} answered {exc.code}: public_url does not reach this server", fix)
    except (urllib.error.URLError, OSError) as exc:
        return fail("http.reachable", f"nothing answers GET {url} ({getattr(exc, 'reason', exc)})", fix)
    mine = Path(config.tftp_root) / loader
    if mine.is_file() and mine.read_bytes() != body:
        return fail("http.reachable", f"GET {url} returned another {loader} than tftp_root's: public_url points "
                    "at another server", fix)
    return ok("http.reachable", f"public_url {config.base_url} answers (GET {TFTP_FILES_PREFIX}/{loader})")


def dhcp_consistent(config: Config, store: Store) -> list[Finding]:
    """The plan `provisioner dhcp-config` renders: next-server derivable, loaders it names present."""
    try:
        plan = build_plan(store, config, require_hosts=False)
    except DhcpPlanError as exc:
        return [fail("dhcp.snippet", f"no DHCP snippet can be made: {exc}", SET_PUBLIC_URL)]
    results = [warn("dhcp.snippet", note, "see docs/dhcp.md") for note in plan.warnings]
    missing = [n for n in (plan.bios_loader, plan.uefi_loader) if not (Path(config.tftp_root) / n).is_file()]
    if missing:
        results.append(fail("dhcp.snippet", f"the DHCP snippet sends hosts to {', '.join(missing)}, which "
                            f"{config.tftp_root} lacks", "run `provisioner tftp-root prepare`"))
    if not plan.hosts:
        results.append(skip("dhcp.snippet", "no registered network-booting host yet"))
    if not results:
        results.append(ok("dhcp.snippet", f"next-server {plan.next_server}, {plan.bios_loader} / "
                          f"{plan.uefi_loader} present, {len(plan.hosts)} host(s); regenerate the site's snippet "
                          "with `provisioner dhcp-config` after adding hosts"))
    return results
