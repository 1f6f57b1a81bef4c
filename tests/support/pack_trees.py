"""Build supplemental-pack / driver-disk repository trees for tests, shaped as the installer reads them
(docs/packs.md): update.xml, repodata/repomd.xml naming primary.xml.gz and comps.xml, the control package's
rpm requirement on the product's release package, and (driver disk) the comps group 'drivers'."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Sequence

REPO_NS = "http://linux.duke.edu/metadata/repo"


def make_pack_tree(root: Path, label: str = "acme-tools", *, version: str = "1.2.0",
                   drivers: Sequence[str] | None = None, requires: tuple[str, str, str] | None = (
                       "xenserver-release", "GE", "8.4.0"), control: str | None = None,
                   description: str = "test pack") -> Path:
    """A pack tree at ROOT; `drivers` (package names) makes it a driver disk; `requires` = (name, flags, ver)."""
    root = Path(root)
    (root / "repodata").mkdir(parents=True, exist_ok=True)
    control = control or f"{label}-control"
    (root / "update.xml").write_text(
        f'<?xml version="1.0" ?>\n<update control="{control}" name-label="{label}" version="{version}" '
        f'uuid="6f1b4b8e-0000-4000-8000-{abs(hash(label)) % 10**12:012d}">\n'
        f"  <name-description>{description}</name-description>\n</update>\n")
    req = ""
    if requires:
        req = (f'<rpm:requires><rpm:entry name="{requires[0]}" flags="{requires[1]}" epoch="0" '
               f'ver="{requires[2]}"/></rpm:requires>')
    packages = [(control, req)] + [(name, "") for name in (drivers or ())]
    primary = ('<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/common" '
               f'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{len(packages)}">\n')
    for name, extra in packages:
        primary += (f'<package type="rpm"><name>{name}</name><arch>x86_64</arch>'
                    f'<checksum type="sha256" pkgid="YES">{"0" * 64}</checksum><size package="100"/>'
                    f'<location href="{name}-1.0-1.x86_64.rpm"/><format>{extra}</format></package>\n')
        (root / f"{name}-1.0-1.x86_64.rpm").write_bytes(b"\xed\xab\xee\xdb fake rpm " + name.encode())
    primary += "</metadata>\n"
    (root / "repodata" / "primary.xml.gz").write_bytes(gzip.compress(primary.encode()))
    data = '  <data type="primary"><location href="repodata/primary.xml.gz"/></data>\n'
    if drivers is not None:
        reqs = "".join(f"<packagereq type=\"mandatory\">{d}</packagereq>" for d in drivers)
        (root / "repodata" / "comps.xml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<comps>\n  <group><id>drivers</id><name>Drivers</name>'
            f"<packagelist>{reqs}</packagelist></group>\n</comps>\n")
        data += '  <data type="group"><location href="repodata/comps.xml"/></data>\n'
    (root / "repodata" / "repomd.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="{REPO_NS}">\n{data}</repomd>\n')
    return root


def build_pack_iso(tree: Path, iso_path: Path) -> Path:
    """TREE as an ISO with Rock Ridge names (pack ISOs are made with genisoimage -R); pycdlib writes it."""
    import io
    import os

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="PACK", rock_ridge="1.09")
    dirs, counter = {Path(tree): ""}, iter(range(1, 10_000))
    for dirpath, dirnames, filenames in os.walk(tree):
        base = Path(dirpath)
        for dirname in sorted(dirnames):
            dirs[base / dirname] = f"{dirs[base]}/D{next(counter):04d}"
            iso.add_directory(dirs[base / dirname], rr_name=dirname)
        for filename in sorted(filenames):
            data = (base / filename).read_bytes()
            iso.add_fp(io.BytesIO(data), len(data), f"{dirs[base]}/F{next(counter):04d}.;1", rr_name=filename)
    iso.write(str(iso_path))
    iso.close()
    return iso_path
