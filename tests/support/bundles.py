"""A builder of REAL-format XenServer 8 offline update bundles (.xsbundle) and update repositories for tests.

The format (docs/updates.md has the sources): an .xsbundle is a plain tar (ustar: regular files and directories
only, relative paths without "." or ".." components) of a yum repository whose root is the tar's root, since
XAPI unpacks it into /var/xapi/bundle-repo and uses file:///var/xapi/bundle-repo as the repository URL:

    repodata/repomd.xml             <repomd> with one <data type=...> per metadata file (checksum, location)
    repodata/repomd.xml.asc         detached armored OpenPGP signature of repomd.xml (repo_gpgcheck=1)
    repodata/<sha256>-primary.xml.gz     the packages (name, version, checksum, location)
    repodata/<sha256>-updateinfo.xml.gz  <updates xapi-api-version=...><update type=...>: id, title, summary,
                                         description, guidance (mandatory/recommended/full/livepatch <value>s),
                                         issued, severity, pkglist
    Packages/<name>-<version>-<release>.<arch>.rpm

The product version a repository is for is the version of its `xenserver-release` package (the RPM that
carries /etc/xensource-inventory's PRODUCT_VERSION on a host).
Limit: the .rpm files are placeholders of the right name, size and checksum, not RPM payloads (nothing here
installs them).

API (other helpers use it; see /work/briefs/contracts.md):
    key = signing_key(root)                       # a test OpenPGP key (gpg, generated once per process)
    info = build_bundle(path, key=key, product_version="8.4.0", updates=[Update("XS84E001", ...)], ...)
    info = build_repo(directory, key=key, ...)     # the same repository unpacked (for a mirror served over HTTP)
    info.update_ids, info.update_level, info.product_version, info.sha256, info.path
"""

from __future__ import annotations

import atexit
import dataclasses
import gzip
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "Update", "SigningKey", "BundleInfo", "signing_key", "build_repo", "build_bundle", "DEFAULT_UPDATES",
    "update_level",
]

REPO_NS = "http://linux.duke.edu/metadata/repo"
COMMON_NS = "http://linux.duke.edu/metadata/common"
RPM_NS = "http://linux.duke.edu/metadata/rpm"


@dataclasses.dataclass(frozen=True)
class Update:
    """One <update> of updateinfo.xml. Guidances are XAPI's names (updateinfo.ml Guidance.of_string):
    RebootHost, RestartToolstack, EvacuateHost, RestartDeviceModel, RestartVM."""

    id: str
    mandatory: tuple[str, ...] = ("RestartToolstack",)
    recommended: tuple[str, ...] = ()
    full: tuple[str, ...] = ()
    livepatch: tuple[str, ...] = ()
    type: str = "security"
    issued: str = "2024-05-01 00:00:00"  # "%Y-%m-%d %H:%M:%S", as updateinfo.ml parses it
    severity: str = "High"  # "High" or "None"
    title: str = ""
    packages: tuple[tuple[str, str, str], ...] = ()  # (name, version, release) of the RPMs it ships


DEFAULT_UPDATES = (
    Update("XS8E001", mandatory=("RestartToolstack",), issued="2024-05-01 00:00:00",
           packages=(("xapi-core", "24.19.1", "1.1.xs8"),)),
    Update("XS8E002", mandatory=("RebootHost",), issued="2024-06-01 00:00:00",
           packages=(("kernel", "4.19.19", "8.0.33.xs8"),)),
)


@dataclasses.dataclass(frozen=True)
class SigningKey:
    """A test OpenPGP key: its gpg home (secret key), fingerprint and the public key as a binary keyring (what
    `gpgv --keyring` reads) and armored (what XAPI's gpgkey_path file holds)."""

    home: Path
    fingerprint: str
    keyring: Path
    armored: Path


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    path: Path  # the .xsbundle file, or the repository directory for build_repo
    product_version: str
    update_ids: tuple[str, ...]
    update_level: str  # the newest `issued` date of its updates (update_level())
    updates: tuple[Update, ...]
    signed: bool
    sha256: str  # of the bundle file ("" for a directory)


def update_level(updates) -> str:
    """The update level a host reaches by applying `updates`: the newest issued date ("" for none)."""
    return max((u.issued for u in updates), default="")


_KEYS: dict[str, SigningKey] = {}


def _gpg(home: Path, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["gpg", "--batch", "--quiet", "--homedir", str(home), *args], input=input,
                          capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def signing_key(root: Path, name: str = "test") -> SigningKey:
    """A test key under root/gpg-<name> (ed25519, no passphrase), generated once per process and root."""
    home = Path(root) / f"gpg-{name}"
    cache = str(home)
    if cache in _KEYS:
        return _KEYS[cache]
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    # gpg starts a gpg-agent for this home (key generation, signing): stop it when the test process ends
    atexit.register(subprocess.run, ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True,
                    timeout=30)
    if not (home / "fingerprint").exists():
        _gpg(home, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-generate-key",
             f"Provisioner {name} updates <{name}@updates.invalid>", "ed25519", "sign", "never")
        out = _gpg(home, "--with-colons", "--list-secret-keys").decode()
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        (home / "pubring.bin").write_bytes(_gpg(home, "--export", fpr))
        (home / "RPM-GPG-KEY-test").write_bytes(_gpg(home, "--armor", "--export", fpr))
        (home / "fingerprint").write_text(fpr)
    key = SigningKey(home=home, fingerprint=(home / "fingerprint").read_text(), keyring=home / "pubring.bin",
                     armored=home / "RPM-GPG-KEY-test")
    _KEYS[cache] = key
    return key


def _sign(key: SigningKey, data: bytes) -> bytes:
    """A detached armored signature of data, as repomd.xml.asc."""
    return _gpg(key.home, "--local-user", key.fingerprint, "--armor", "--detach-sign", "--output", "-",
                input=data)


def _rpm_name(name: str, version: str, release: str, arch: str = "x86_64") -> str:
    return f"{name}-{version}-{release}.{arch}.rpm"


def _updateinfo_xml(updates, api_version: str) -> bytes:
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<updates xapi-api-version={quoteattr(api_version)}>']
    for u in updates:
        out.append(f"  <update type={quoteattr(u.type)}>")
        out.append(f"    <id>{escape(u.id)}</id>")
        out.append(f"    <title>{escape(u.title or u.id)}</title>")
        out.append(f"    <summary>{escape(u.title or u.id)} summary</summary>")
        out.append(f"    <description>{escape(u.id)} description</description>")
        out.append("    <special_info></special_info>")
        out.append(f"    <url>https://updates.invalid/{escape(u.id)}</url>")
        out.append("    <guidance>")
        for kind in ("mandatory", "recommended", "full", "livepatch"):
            values = getattr(u, kind)
            out.append(f"      <{kind}>" + "".join(f"<value>{escape(v)}</value>" for v in values) + f"</{kind}>")
        out.append("    </guidance>")
        out.append("    <guidance_applicabilities/>")
        out.append(f"    <issued date={quoteattr(u.issued)}/>")
        out.append(f"    <severity>{escape(u.severity)}</severity>")
        out.append("    <pkglist>\n      <collection>")
        for name, version, release in u.packages:
            out.append(f"        <package name={quoteattr(name)} version={quoteattr(version)} "
                       f"release={quoteattr(release)} epoch=\"0\" arch=\"x86_64\">"
                       f"<filename>{escape(_rpm_name(name, version, release))}</filename></package>")
        out.append("      </collection>\n    </pkglist>")
        out.append("  </update>")
    out.append("</updates>\n")
    return "\n".join(out).encode()


def _primary_xml(packages: list[tuple[str, str, str, str, int]]) -> bytes:
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="{COMMON_NS}" xmlns:rpm="{RPM_NS}" '
           f'packages="{len(packages)}">']
    for name, version, release, digest, size in packages:
        out.append(
            f'<package type="rpm"><name>{escape(name)}</name><arch>x86_64</arch>'
            f'<version epoch="0" ver={quoteattr(version)} rel={quoteattr(release)}/>'
            f'<checksum type="sha256" pkgid="YES">{digest}</checksum><summary>{escape(name)}</summary>'
            f'<description>{escape(name)}</description><packager>tests</packager><url></url>'
            f'<time file="1714521600" build="1714521600"/>'
            f'<size package="{size}" installed="{size}" archive="{size}"/>'
            f'<location href={quoteattr("Packages/" + _rpm_name(name, version, release))}/>'
            f'<format><rpm:license>GPLv2</rpm:license></format></package>')
    out.append("</metadata>\n")
    return "\n".join(out).encode()


def _repomd_xml(entries: list[tuple[str, str, str, str, int, int]], revision: int) -> bytes:
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="{REPO_NS}" xmlns:rpm="{RPM_NS}">',
           f"  <revision>{revision}</revision>"]
    for kind, href, digest, open_digest, size, open_size in entries:
        out.append(f'  <data type="{kind}">\n    <checksum type="sha256">{digest}</checksum>\n'
                   f'    <open-checksum type="sha256">{open_digest}</open-checksum>\n'
                   f'    <location href={quoteattr(href)}/>\n    <timestamp>{revision}</timestamp>\n'
                   f'    <size>{size}</size>\n    <open-size>{open_size}</open-size>\n  </data>')
    out.append("</repomd>\n")
    return "\n".join(out).encode()


def _repo_files(*, product_version: str, release: str, updates, key: SigningKey | None, api_version: str,
                corrupt: str | None) -> dict[str, bytes]:
    """The repository's files, path -> content (paths relative to the repository root)."""
    files: dict[str, bytes] = {}
    packages = [("xenserver-release", product_version, release)]
    for u in updates:
        packages.extend(p for p in u.packages if p not in packages)
    primary_rows = []
    for name, version, rel in packages:
        payload = f"placeholder RPM {name}-{version}-{rel}.x86_64\n".encode() * 8
        files["Packages/" + _rpm_name(name, version, rel)] = payload
        primary_rows.append((name, version, rel, hashlib.sha256(payload).hexdigest(), len(payload)))
    repomd_entries = []
    for kind, xml in (("primary", _primary_xml(primary_rows)), ("updateinfo", _updateinfo_xml(updates, api_version))):
        gz = gzip.compress(xml, mtime=0)
        digest = hashlib.sha256(gz).hexdigest()
        href = f"repodata/{digest}-{kind}.xml.gz"
        files[href] = gz
        repomd_entries.append((kind, href, digest, hashlib.sha256(xml).hexdigest(), len(gz), len(xml)))
    repomd = _repomd_xml(repomd_entries, revision=1714521600)
    files["repodata/repomd.xml"] = repomd
    if key is not None:
        files["repodata/repomd.xml.asc"] = _sign(key, repomd)
    if corrupt == "package":  # a file whose content no longer matches its checksum (same size)
        path = "Packages/" + _rpm_name(*packages[0])
        files[path] = bytes(b ^ 0x01 for b in files[path])
    elif corrupt == "signature" and key is not None:  # repomd.xml changed after signing
        files["repodata/repomd.xml"] = repomd.replace(b"<revision>", b"<revision>9")
    elif corrupt == "missing-metadata":
        del files[repomd_entries[1][1]]
    return files


def build_repo(directory: Path, *, key: SigningKey | None, product_version: str = "8.4.0",
               release: str = "1.xs8", updates=DEFAULT_UPDATES, api_version: str = "2.23",
               corrupt: str | None = None) -> BundleInfo:
    """Write the unpacked repository into `directory` (a mirror's tree). key=None: unsigned (no .asc).
    corrupt: "package" (an RPM fails its checksum), "signature" (repomd.xml altered after signing),
    "missing-metadata" (updateinfo named in repomd.xml absent)."""
    updates = tuple(updates)
    files = _repo_files(product_version=product_version, release=release, updates=updates, key=key,
                        api_version=api_version, corrupt=corrupt)
    for rel, data in files.items():
        target = Path(directory) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return BundleInfo(path=Path(directory), product_version=product_version,
                      update_ids=tuple(u.id for u in updates), update_level=update_level(updates),
                      updates=updates, signed=key is not None, sha256="")


def build_bundle(path: Path, *, key: SigningKey | None, product_version: str = "8.4.0", release: str = "1.xs8",
                 updates=DEFAULT_UPDATES, api_version: str = "2.23", corrupt: str | None = None,
                 truncate: int | None = None, extra_members: list[tarfile.TarInfo] | None = None) -> BundleInfo:
    """Write an .xsbundle at `path` (options as build_repo). truncate=N: keep only the first N bytes of the tar
    (an interrupted download); extra_members: raw TarInfo entries appended (e.g. "../escape", a symlink) with
    zero-filled content of their size, to test the unpacker's refusals."""
    updates = tuple(updates)
    files = _repo_files(product_version=product_version, release=release, updates=updates, key=key,
                        api_version=api_version, corrupt=corrupt)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for directory in sorted({str(Path(p).parent) for p in files}):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1714521600
            tar.addfile(info)
        for rel in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(files[rel]), 0o644, 1714521600
            tar.addfile(info, io.BytesIO(files[rel]))
        for info in extra_members or ():
            tar.addfile(info, io.BytesIO(b"\0" * info.size) if info.isreg() else None)
    data = buf.getvalue()
    if truncate is not None:
        data = data[:truncate]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)
    return BundleInfo(path=path, product_version=product_version, update_ids=tuple(u.id for u in updates),
                      update_level=update_level(updates), updates=updates, signed=key is not None,
                      sha256=hashlib.sha256(data).hexdigest())
