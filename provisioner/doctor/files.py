"""Doctor checks on this machine's files: boot loaders (present, one syslinux build, no per-MAC strays), media
trees complete, room in the data dir, the store writable and migrated (docs/deploy.md "doctor")."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from provisioner import media as media_mod
from provisioner import sites
from provisioner.boot import loaders
from provisioner.config import Config
from provisioner.doctor.findings import Finding, fail, ok, skip, warn
from provisioner.store import Store
from provisioner.store.schema import SCHEMA_VERSION

PREPARE = "run `provisioner tftp-root prepare` (as the service user) to copy them from one syslinux build"
# pxelinux.0 / lpxelinux.0 carry their banner in clear: "PXELINUX 6.04 PXE 20200816" (the .c32 modules do not)
BANNER = re.compile(rb"PXELINUX (\S+) (?:PXE|lwIP) (\d{8})")
DISK_FAIL_BYTES = 1 << 30  # an ISO extraction alone needs about this much
DISK_WARN_BYTES = 4 << 30


def loaders_present(config: Config) -> Finding:
    root = Path(config.tftp_root)
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        return fail("loaders.missing", f"tftp_root {root} cannot be read by this user (uid {os.geteuid()}): "
                    "serve finds no loader there", f"run doctor as the service user, and make {root} and its "
                    "parents readable by it (e.g. chmod o+rx; a checkout under /root is not), or move tftp_root")
    unreadable = [p.name for p in sorted(root.glob("*")) if p.is_file() and not os.access(p, os.R_OK)]
    if unreadable:
        return fail("loaders.missing", f"{', '.join(unreadable)} in {root} cannot be read by this user (uid "
                    f"{os.geteuid()})", f"chmod a+r them (tftp-root prepare writes 0644), or chown them to the "
                    "service user")
    missing = loaders.missing_loaders(config.tftp_root)
    if missing:
        return fail("loaders.missing", f"{config.tftp_root} lacks {', '.join(missing)}: PXE firmware asking for "
                    "them gets 'file not found' and the host boots its disk", PREPARE)
    return ok("loaders.missing", f"every boot loader is in {config.tftp_root}")


def loaders_one_build(config: Config, *, pxelinux_dir: Path = loaders.PXELINUX_DIR,
                      syslinux_dir: Path = loaders.SYSLINUX_BIOS_DIR) -> Finding:
    """pxelinux.0 loads ldlinux.c32 and mboot.c32 and links them against itself: files of two syslinux builds
    fail at boot ("Failed to load ldlinux.c32", "Undefined symbol"). The .c32 files carry no version, so they
    are compared with the installed syslinux packages' copies, and the two .0 banners with each other."""
    root = Path(config.tftp_root)
    present = [s for s in loaders.syslinux_sources(pxelinux_dir, syslinux_dir) if (root / s.name).is_file()]
    if not present:
        return skip("loaders.mixed", "no syslinux loader in tftp_root (see loaders.missing)")
    banners = {}
    for name in ("pxelinux.0", "lpxelinux.0"):
        if (root / name).is_file():
            found = BANNER.search((root / name).read_bytes())
            banners[name] = f"{found[1].decode()} {found[2].decode()}" if found else "no banner"
    if len(set(banners.values())) > 1:
        return fail("loaders.mixed", "pxelinux.0 and lpxelinux.0 are from different syslinux builds ("
                    + ", ".join(f"{n}: {b}" for n, b in banners.items()) + ")", PREPARE)
    packaged = [s for s in present if s.path.is_file()]
    if not packaged:
        return ok("loaders.mixed", f"pxelinux banners agree ({', '.join(set(banners.values()))}); no installed "
                  "syslinux package to compare the .c32 modules with")
    same = {s.name: (root / s.name).read_bytes() == s.path.read_bytes() for s in packaged}
    if all(same.values()):
        return ok("loaders.mixed", "every syslinux loader is the installed syslinux build's")
    differ = sorted(name for name, equal in same.items() if not equal)
    if any(same.values()):
        return fail("loaders.mixed", f"{', '.join(differ)} in {root} come from another syslinux build than the rest "
                    "(they differ from the installed package's copies): pxelinux.0 refuses modules of another "
                    "build at boot", PREPARE)
    return warn("loaders.mixed", f"none of the syslinux loaders in {root} is the installed package's build, so "
                "whether they are one build cannot be checked", PREPARE)


def no_stray_files(config: Config) -> Finding:
    stray = loaders.stray_per_mac_files(config.tftp_root)
    if stray:
        return fail("loaders.stray", loaders.describe_stray(stray, config.tftp_root),
                    f"remove {', '.join(stray[:5])} from {config.tftp_root} (serve refuses to start with them)")
    return ok("loaders.stray", "no per-MAC-looking file in tftp_root")


def media_complete(store: Store, config: Config | None = None) -> list[Finding]:
    """Each media tree complete; with `config`, this server's own copy of it (a tree synced from another site's
    server lives in this data_dir: sites.local_media, docs/sites.md)."""
    found = [sites.local_media(store, config, m) if config else m for m in store.list_media()]
    if not found:
        return [warn("media.none", "no installation media imported: armed hosts have nothing to boot",
                     "import an extracted XenServer ISO: provisioner media add NAME /path/to/tree-or.iso")]
    results = []
    for media in found:
        problems = media_mod.tree_problems(media)
        if problems:
            results.append(fail("media.incomplete", f"media {media.name} ({media.path}): " + "; ".join(problems),
                                f"restore the tree at {media.path} (hosts booting it fail mid-way), or remove "
                                f"the media and import it again: provisioner media add {media.name} PATH"))
        else:
            results.append(ok("media.incomplete", f"media {media.name}: .treeinfo, repodata and "
                              f"{len(media.boot_files)} boot files present"))
    return results


def disk_space(config: Config) -> Finding:
    where = Path(config.data_dir)
    probe = where if where.exists() else next((p for p in where.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    text = f"{free / (1 << 30):.1f} GiB free for the data dir {where}"
    fix = (f"free space on the file system of {where}, or move data_dir to a larger one (ISO imports are "
           "extracted there; the events table and database grow with every boot)")
    if free < DISK_FAIL_BYTES:
        return fail("disk.space", text + f" (under {DISK_FAIL_BYTES >> 30} GiB)", fix)
    if free < DISK_WARN_BYTES:
        return warn("disk.space", text + f" (under {DISK_WARN_BYTES >> 30} GiB)", fix)
    return ok("disk.space", text)


def store_ready(config: Config) -> Finding:
    """The data dir takes a new file, and the database (SQLite, or database_url's) opens at this program's schema
    version; checked before anything opens the store, since opening it migrates."""
    where = Path(config.data_dir)
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where, prefix=".doctor-"):
            pass
    except OSError as exc:
        return fail("store.writable", f"the data dir {where} cannot take a new file ({exc.strerror or exc})",
                    f"give the service user write access to {where} (chown provisioner: it; the unit's "
                    "StateDirectory does this for /var/lib/provisioner) or set data_dir to a writable directory")
    if not config.database_url and not config.db_path.exists():
        return ok("store.writable", f"data dir {where} writable; the database is created at the first command")
    name = config.database_url.rsplit("@", 1)[-1] if config.database_url else str(config.db_path)
    try:
        db = Store.from_config(config, migrate=False)
    except Exception as exc:  # StoreError, or the driver's own connection error
        return fail("store.writable", f"the database {name} cannot be opened ({exc})",
                    "check database_url (server up, credentials, network)" if config.database_url else
                    f"restore {config.db_path} from a backup (provisioner settings restore), or move it away")
    try:
        version = db.schema_version()
    except Exception as exc:  # sqlite3.DatabaseError: not a database (only store/ imports sqlite3)
        return fail("store.writable", f"{name} cannot be read as our database ({exc})",
                    f"restore {name} from a backup (provisioner settings restore), or move it away")
    finally:
        db.close()
    if version > SCHEMA_VERSION:
        return fail("store.schema", f"{name} is at schema version {version}, newer than this program's "
                    f"{SCHEMA_VERSION}", "upgrade the provisioner package (pip install -U, or `make venv` in the "
                    "newer checkout) before serving this database")
    if version < SCHEMA_VERSION:
        return warn("store.schema", f"{name} is at schema version {version}, this program's is "
                    f"{SCHEMA_VERSION}", "the next command or serve migrates it; run one as the service user "
                    "(e.g. provisioner hosts list)")
    return ok("store.writable", f"data dir {where} writable; {name} at schema version {version}")
