"""Answer-file fixtures shared by test_answerfile.py and test_answerfile_fresh.py: the golden directory, a host with
its boot disk, a media, an attempt token, a config with a fixed public URL, and an independent installer-style
reading of a rendered file."""

from __future__ import annotations

from pathlib import Path
from xml.dom import minidom

from provisioner.config import load_config
from provisioner.model import Host, Media

GOLDEN = Path(__file__).parent.parent / "golden"
BASE = "http://10.0.0.5:8080"
DISK = "/dev/disk/by-id/scsi-36000c29f0a1b2c3d"
TOKEN = "tok_0123456789abcdef"
HOST = Host(mac="52:54:00:12:34:56", name="xs1", pool="lab", disk=DISK)
MEDIA = Media(name="xs-8.4.0", path="/srv/media/xs-8.4.0", product_name="XenServer", product_version="8.4.0",
              platform_version="3.4.0", build="123")


def make_config(**overrides):
    return load_config(file=None, environ={}, overrides={"public_url": BASE, "data_dir": "/nonexistent/data",
                                                         **overrides})


def installer_view(text: str) -> dict:
    """An independent reading of the file the way the installer does it (minidom, first match, direct text)."""
    doc = minidom.parseString(text.encode("utf-8"))
    root = doc.documentElement

    def text_of(el):
        return "".join(n.data for n in el.childNodes if n.nodeType == n.TEXT_NODE).strip()

    existing = root.getElementsByTagName("existing-installation")
    return {
        "root": root.tagName,
        "mode": root.getAttribute("mode"),
        "disks": [text_of(e) for e in existing],
        "elements": {e.tagName for e in root.getElementsByTagName("*")},
        "cdata": "<![CDATA[" in text,
    }
