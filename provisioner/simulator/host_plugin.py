"""host.call_plugin in the simulated XAPI: XenCenter's `prepare_host_upgrade.py` on each simulated host
(docs/host-plugin.md; the plugin of the host-upgrade-plugin package, and how XenCenter calls it).

- `testUrl {url}`: from dom0, over real HTTP (from the host's own address), the URL must hold install.img,
  boot/vmlinuz and boot/xen.gz (plugin 3.0.2 dropped boot/isolinux/isolinux.cfg, CA-403628) and a yum repository
  (.treeinfo + repodata/repomd.xml, xcp.repository YumRepository.isRepo) whose product_version is >= the host's
  PRODUCT_VERSION; answers "true".
- `testSafe2Upgrade`, `getDom0DefaultMemory`: from the host's disk layout and dom0 facts (host_facts.py,
  host_fact_calls.py).
- `main {url}`: the same test, then downloads the three files, writes its own answer file (upgrade of the
  inventory's PRIMARY_DISK from `url`, installation-start script file:///revert-bootloader.py) and the revert
  script, and makes a one-shot "upgrade" entry the default of dom0's bootloader (dom0boot.py); answers "true".
  Nothing changes in the firmware: the next reboot's disk boot takes that entry (machine.py).

Errors have the real shapes: an unknown plugin XENAPI_MISSING_PLUGIN [name] (xapi_plugins.ml find_plugin), an
unknown function UNKNOWN_XENAPI_PLUGIN_FUNCTION [fn] (XenAPIPlugin.dispatch), and the plugin's own failures
XENAPI_PLUGIN_FAILURE [fn, "Exception", KEY] (XenAPIPlugin.dispatch turns `raise Exception(KEY)` into that; XenCenter
reads ErrorDescription[3] as the key: PrepareToUpgradeCheck.cs). KEY per docs/host-plugin.md "Error keys".
"""

from __future__ import annotations

import configparser
import http.client
import urllib.parse

from .errors import XapiError
from .hosts import SimHost
from .reconnect import forward
from .registry import Call, api, sim_host
from . import dom0boot, host_fact_calls

PLUGIN = "prepare_host_upgrade.py"
BOOT_FILES = ("install.img", "boot/vmlinuz", "boot/xen.gz")
REPO_FILES = (".treeinfo", "repodata/repomd.xml")
UNSIMULATED = ("getVersion",)  # a real function this simulator lacks
TIMEOUT = 10.0


class PluginFailure(Exception):
    """`raise Exception(KEY)` inside the plugin."""


def primary_disk(h: SimHost) -> str:
    """The simulated /etc/xensource-inventory PRIMARY_DISK: a stable by-id name per machine."""
    return "/dev/disk/by-id/scsi-SSIM_" + h.mac.replace(":", "")


@api("host.call_plugin", 5)
def call_plugin(c: Call, ref, plugin, fn, args):
    h = sim_host(c, ref)
    forward(c, ref)  # forwarded to the host (message_forwarding.ml:3787-3795; reconnect.py)
    if plugin != PLUGIN:
        raise XapiError("XENAPI_MISSING_PLUGIN", plugin)
    if fn in UNSIMULATED:
        raise XapiError("NOT_IMPLEMENTED", f"{PLUGIN} {fn} is not simulated")
    if fn in host_fact_calls.FUNCTIONS:  # testSafe2Upgrade, getDom0DefaultMemory: from the host's facts
        return host_fact_calls.call(c, h, fn)
    if fn not in ("testUrl", "main"):
        raise XapiError("UNKNOWN_XENAPI_PLUGIN_FUNCTION", fn)
    args = dict(args or {})
    try:
        if "url" not in args:
            raise PluginFailure("MISSING_URL")
        if fn == "testUrl":
            _test_repo(c, h, args["url"], main=False)
        else:
            _main(c, h, args["url"])
    except PluginFailure as exc:
        raise XapiError("XENAPI_PLUGIN_FAILURE", fn, "Exception", str(exc)) from None
    return "true"


# ---- HTTP from dom0 ---------------------------------------------------------------------------

def _get(h: SimHost, url: str, *, body: bool) -> tuple[int, bytes]:
    """One GET from the host's own address: (status, body or b""); status 0 when nothing answered."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=TIMEOUT, source_address=(h.address, 0))
    try:
        conn.request("GET", parts.path or "/", headers={"User-Agent": f"{PLUGIN} (simulated)"})
        reply = conn.getresponse()
        data = reply.read() if body else b""
        return reply.status, data
    except OSError:
        return 0, b""
    finally:
        conn.close()


def _key(status: int) -> str:
    """The error key of a failed access (docs/host-plugin.md "Error keys": xcp.accessor's lastError)."""
    if status == 404:
        return "NOT_FOUND"
    if status == 401:
        return "UNAUTH_URL"
    if status == 403:
        return "FORBIDDEN"
    if status >= 500:
        return f"REPO_SERVER_ERROR_{status}"
    return "INVALID_URL"


def _join(url: str, name: str) -> str:
    return url.rstrip("/") + "/" + name


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in text.strip().split("."))


def _test_repo(c: Call, h: SimHost, url: str, *, main: bool) -> None:
    """test_repo(): boot files, repository, version. `main` raises INVALID_URL for any of them (main())."""
    def fail(key: str) -> PluginFailure:
        return PluginFailure("INVALID_URL" if main else key)
    for name in BOOT_FILES + REPO_FILES[1:]:
        status, _ = _get(h, _join(url, name), body=False)
        if status != 200:
            raise fail(_key(status))
    status, text = _get(h, _join(url, REPO_FILES[0]), body=True)
    if status != 200:
        raise fail(_key(status))
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text.decode())
        repo = parser.get("system-v1", "product_version")
    except (configparser.Error, UnicodeDecodeError):
        raise fail("INVALID_URL") from None
    with c.db.lock:
        mine = c.db.get("host", h.ref)["software_version"].get("product_version", "")
    if _version(repo) < _version(mine):
        raise fail("INVALID_VER")


# ---- main ---------------------------------------------------------------------------------------

def _machine_boot(c: Call, h: SimHost) -> dom0boot.Dom0Boot | None:
    handler = c.world.boot_handler
    machine = getattr(handler, "machine", None)
    return machine(h.mac).dom0 if machine is not None else None


def answerfile(h: SimHost, url: str) -> str:
    """The answer file gen_answerfile() writes, text as the plugin builds it."""
    return ('<?xml version="1.0"?>\n'
            ' <installation mode="upgrade">\n'
            f'  <existing-installation>{primary_disk(h)}</existing-installation>\n'
            f'  <source type="url">{url}</source>\n'
            f'  <script stage="installation-start" type="url">file:///{dom0boot.REVERT_SCRIPT}</script>\n'
            ' </installation>\n')


def revert_script(default: str) -> str:
    """revert-bootloader.py as gen_answerfile() writes it (the default when `main` ran)."""
    return ("#!/usr/bin/env python\n\nimport xcp.bootloader as bootloader\nimport xcp.mount as mount\n\n"
            'rootfs = mount.TempMount("/dev/disk/by-label/root", "root", fstype = "ext3")\n'
            "cfg = bootloader.Bootloader.loadExisting(rootfs.mount_point)\n"
            f'cfg.default = "{default}"\n'
            f'cfg.remove("{dom0boot.UPGRADE}")\n'
            "cfg.commit()\nrootfs.unmount()\n")


def _main(c: Call, h: SimHost, url: str) -> None:
    _test_repo(c, h, url, main=True)
    boot = _machine_boot(c, h)
    if boot is None:  # no simulated machine behind this host (an external boot command): nothing to prepare
        raise PluginFailure("ERROR_PREPARING_HOST")
    files = {}
    for name in BOOT_FILES:  # get_boot_files(): into /boot/installer, by base name
        status, data = _get(h, _join(url, name), body=True)
        if status != 200:
            raise PluginFailure("ERROR_PREPARING_HOST")
        files[name.rsplit("/", 1)[-1]] = len(data)
    # the revert script keeps the default as it is NOW: after an earlier main that is "upgrade" itself
    # (docs/host-plugin.md "main twice")
    initrd = {dom0boot.ANSWERFILE: answerfile(h, url), dom0boot.REVERT_SCRIPT: revert_script(boot.default)}
    boot.stage_upgrade(files, initrd, f"install answerfile={dom0boot.ANSWERFILE_URL} network_device={h.mac}")
