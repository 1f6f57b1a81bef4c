"""Store mixin: update repositories (issue 20): imported offline bundles and registered mirrors.

One row per repository (migration 11); `details` holds what its metadata says (updates, guidances, update level,
signer), read by provisioner/updates at import. Every change writes an updates.* event in the same transaction.
A repository a run still uses (its `run.options` journal entry names it as `updates`) cannot be removed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from provisioner import states
from provisioner.store.base import ConflictError, NotFoundError, now

KINDS = ("bundle", "mirror")


@dataclass(frozen=True)
class UpdateRepo:
    """An update repository: kind 'bundle' (the .xsbundle file and its unpacked yum tree under `path`) or
    'mirror' (a yum repository at `url`, nothing downloaded)."""

    name: str
    kind: str
    source: str  # the path or URL the operator gave
    path: str | None = None  # bundle: the directory holding bundle_file and repo/
    url: str | None = None  # mirror: the repository's base URL (ends with "/")
    bundle_file: str | None = None  # bundle: the file name under path
    sha256: str | None = None  # bundle: of the file
    size: int | None = None  # bundle: bytes
    product_version: str | None = None  # what its xenserver-release package says (mirror --no-check: as given)
    signed: bool = False  # repomd.xml.asc verified against updates_keyring
    unsigned: bool = False  # imported with --allow-unsigned (recorded)
    checked: bool = True  # its metadata was read and checked (mirror --no-check: False)
    details: Mapping[str, Any] = field(default_factory=dict)
    added_at: str = ""

    @property
    def update_ids(self) -> list[str]:
        return [u["id"] for u in self.details.get("updates", ())]

    @property
    def update_level(self) -> str:
        return str(self.details.get("update_level") or "")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["details"] = dict(self.details)
        data["update_ids"] = self.update_ids
        data["update_level"] = self.update_level
        return data


def _repo(row: sqlite3.Row) -> UpdateRepo:
    return UpdateRepo(name=row["name"], kind=row["kind"], source=row["source"], path=row["path"], url=row["url"],
                      bundle_file=row["bundle_file"], sha256=row["sha256"], size=row["size"],
                      product_version=row["product_version"], signed=bool(row["signed"]),
                      unsigned=bool(row["unsigned"]), checked=bool(row["checked"]),
                      details=json.loads(row["details"]), added_at=row["added_at"])


class UpdatesMixin:
    """Update repository records; every change writes an updates.* event in the same transaction."""

    def add_update_repo(self, repo: UpdateRepo) -> UpdateRepo:
        if repo.kind not in KINDS:
            raise ValueError(f"update repository kind must be one of {', '.join(KINDS)}, not {repo.kind!r}")
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM updates WHERE name = ?", (repo.name,)).fetchone():
                raise ConflictError(f"update repository {repo.name!r} already exists")
            conn.execute(
                "INSERT INTO updates (name, kind, source, path, url, bundle_file, sha256, size, product_version, "
                "signed, unsigned, checked, details, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (repo.name, repo.kind, repo.source, repo.path, repo.url, repo.bundle_file, repo.sha256, repo.size,
                 repo.product_version, int(repo.signed), int(repo.unsigned), int(repo.checked),
                 json.dumps(dict(repo.details)), repo.added_at or now()))
            event = {k: v for k, v in repo.as_dict().items() if k != "details"}
            self._event(conn, "updates.added", details=event)
        return self.get_update_repo(repo.name)

    def get_update_repo(self, name: str) -> UpdateRepo | None:
        row = self._connect().execute("SELECT * FROM updates WHERE name = ?", (name,)).fetchone()
        return _repo(row) if row else None

    def list_update_repos(self) -> list[UpdateRepo]:
        return [_repo(r) for r in self._connect().execute("SELECT * FROM updates ORDER BY name")]

    def runs_using_updates(self, name: str, conn: sqlite3.Connection | None = None) -> list[str]:
        """Ids of the runs not yet ended whose options (the run.options journal entry) name repository `name`."""
        terminal = sorted(states.RUN_TERMINAL)
        marks = ", ".join("?" for _ in terminal)
        rows = (conn or self._connect()).execute(
            f"SELECT DISTINCT r.id FROM runs r JOIN events e ON e.run_id = r.id AND e.kind = 'run.options' "
            f"WHERE r.state NOT IN ({marks}) AND json_extract(e.details, '$.updates') = ? ORDER BY r.id",
            (*terminal, name)).fetchall()
        return [row[0] for row in rows]

    def remove_update_repo(self, name: str) -> UpdateRepo:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM updates WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no update repository named {name!r}")
            using = self.runs_using_updates(name, conn)
            if using:
                raise ConflictError(f"update repository {name!r} is used by run(s) {', '.join(using)} that have not "
                                    "ended: wait for them to finish (or abort them) before removing it")
            conn.execute("DELETE FROM updates WHERE name = ?", (name,))
            self._event(conn, "updates.removed", details={"name": name, "kind": row["kind"]})
        return _repo(row)
