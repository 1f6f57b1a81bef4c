"""The real XenServer installer's answer-file parser accepts our answer files with packs and driver disks.

Runs host-installer's own answerfile.py (vendored unmodified under tests/support/host_installer/, with its
constants.py and util.py and python-libs' xcp/xmlunwrap.py; see the README there) on what the boot service
renders. Stubbed, because they need a live installer environment, and said so here: `diskutil`/`disktools`
(disk names are taken as given, no RAID or multipath), `product.findXenSourceProducts` (one installation on the
answer file's disk, as on the host being upgraded), `scripts.add_script` (records instead of downloading),
`netutil`/`netinterface` (not reached in upgrade mode), `xcp.logger` (no log file), the build-time `version`
module, and `six` (xmlunwrap's Python 2 shim). A fresh-install file is checked with processAnswerfileSetup and
parseCommon (driver sources and sources, the parts packs change): parseFreshInstall's disk and NIC checks look
at the real /dev and NICs of an installer.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import xml.dom.minidom
from pathlib import Path

import pytest

from pack_trees import make_pack_tree
from provisioner import cryptpw, packs
from provisioner.boot import answers
from provisioner.model import Host

VENDORED = Path(__file__).resolve().parents[1] / "support" / "host_installer"
DISK = "/dev/disk/by-id/scsi-raid0"
MAC = "aa:bb:cc:dd:ee:01"


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def installer(monkeypatch):
    """host-installer's answerfile module, loaded with the stubs named in the module docstring."""
    added_scripts = []

    class Installation:
        primary_disk = DISK

    def raise_from(exc, cause):
        raise exc from cause

    stubs = {
        "six": _module("six", raise_from=raise_from),
        "version": _module("version"),
        "diskutil": _module("diskutil", partitionFromId=lambda d: d, is_raid=lambda d: False,
                            idFromPartition=lambda d: d, rfc4173_to_disk=lambda d: d,
                            isLargeBlockDisk=lambda d: False),
        "disktools": _module("disktools", getMpathMasterOrDisk=lambda d: d),
        "netutil": _module("netutil"),
        "netinterface": _module("netinterface"),
        "product": _module("product", findXenSourceProducts=lambda: [Installation()],
                           findXenSourceBackups=lambda: []),
        "scripts": _module("scripts", add_script=lambda stage, url: added_scripts.append((stage, url))),
        "xcp": _module("xcp", __path__=[str(VENDORED / "xcp")]),
        "xcp.logger": _module("xcp.logger", log=lambda *a: None, logException=lambda *a: None),
    }
    for name in ("constants", "util", "answerfile", "xcp.xmlunwrap"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    stubs["xcp"].logger = stubs["xcp.logger"]
    stubs["xcp"].xmlunwrap = _load("xcp.xmlunwrap", VENDORED / "xcp" / "xmlunwrap.py")
    _load("constants", VENDORED / "constants.py")
    _load("util", VENDORED / "util.py")
    module = _load("answerfile", VENDORED / "answerfile.py")
    module.added_scripts = added_scripts
    yield module
    for name in ("constants", "util", "answerfile", "xcp.xmlunwrap"):
        sys.modules.pop(name, None)


@pytest.fixture
def packed(store, config, tmp_path):
    """A host whose media carries a driver disk (for it) and a supplemental pack (for every host)."""
    from helpers import make_media_tree
    from provisioner.media import import_media

    store.add_host(Host(mac=MAC, name="h1", pool="alpha", disk=DISK, ip="10.0.0.7"))
    import_media(store, config, "xs84", make_media_tree(tmp_path / "xs84"))
    packs.import_pack(store, config, "xs84", make_pack_tree(tmp_path / "raid", "megaraid", drivers=["mr-module"]),
                      hosts=[MAC])
    packs.import_pack(store, config, "xs84", make_pack_tree(tmp_path / "tools", "acme-tools"))
    base = config.base_url.rstrip("/")
    return {"media": f"{base}/media/xs84/", "raid": f"{base}/media/xs84/packs/raid/",
            "tools": f"{base}/media/xs84/packs/tools/"}


def _served(store, config, fresh: bool) -> str:
    """The answer file the boot service serves the host: an upgrade, or (lab reinstall) a fresh install."""
    from provisioner.boot import attempts

    if fresh:  # what the lab reinstall flow does: a reinstall record armed once owns the attempt
        found = store.create_reinstall(MAC, "alpha", "xs84", host_name="h1", forget_first=False, old_uuid=None,
                                       old_pool="alpha", host_url="http://10.0.0.7/", network={"mode": "dhcp"},
                                       root_password_hash=cryptpw.hash_password("lab-secret"))
        attempt = attempts.arm_fresh_install(store, found.id)
    else:
        attempt = attempts.arm(store, config, MAC, "xs84")
    reply = answers.answer_file(store, config, attempt.token, "10.0.0.7", None)  # the host itself
    assert reply.status == 200, reply.body
    return reply.body.decode()


def test_installer_parses_our_upgrade_file_with_packs(installer, packed, store, config):
    text = _served(store, config, fresh=False)
    parsed = installer.Answerfile(xml.dom.minidom.parseString(text))
    setup = parsed.processAnswerfileSetup()  # what install.py reads first, to load drivers before disks
    assert [(kind, str(url)) for kind, url in setup["extra-repos"]] == [("url", packed["raid"])]
    results = parsed.processAnswerfile()
    assert results["install-type"] == installer.INSTALL_TYPE_REINSTALL and results["primary-disk"] == DISK
    assert [(s["media"], str(s["address"])) for s in results["sources"]] == [
        ("url", packed["media"]), ("url", packed["tools"])]
    parsed.parseScripts()
    assert [stage for stage, _ in installer.added_scripts] == ["installation-start", "installation-complete"]


def test_installer_parses_our_fresh_install_file_with_packs(installer, packed, store, config):
    text = _served(store, config, fresh=True)
    parsed = installer.Answerfile(xml.dom.minidom.parseString(text))
    setup = parsed.processAnswerfileSetup()
    assert [(kind, str(url)) for kind, url in setup["extra-repos"]] == [("url", packed["raid"])]
    common = parsed.parseCommon()
    assert [str(s["address"]) for s in common["sources"]] == [packed["media"], packed["tools"]]
    assert installer.getStrAttribute(parsed.top_node, ["mode"], default="fresh") == "fresh"


def test_installer_refuses_a_driver_source_without_type(installer):
    text = ('<installation mode="upgrade"><existing-installation>sda</existing-installation>'
            '<driver-source>http://x/</driver-source><source type="url">http://x/m/</source></installation>')
    with pytest.raises(installer.XmlUnwrapError, match="Missing mandatory attribute type"):
        installer.Answerfile(xml.dom.minidom.parseString(text)).processAnswerfileSetup()
