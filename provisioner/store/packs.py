"""Store mixin: supplemental packs and driver disks of a media (provisioner/packs.py reads and imports them)."""

from __future__ import annotations

import json
import sqlite3

from provisioner.model import Pack
from provisioner.store.base import ConflictError, NotFoundError, now


def _pack_from_row(row: sqlite3.Row) -> Pack:
    return Pack(media=row["media"], name=row["name"], kind=row["kind"], path=row["path"], label=row["label"],
                version=row["version"], hosts=tuple(json.loads(row["hosts"])), pools=tuple(json.loads(row["pools"])),
                details=json.loads(row["details"]), added_at=row["added_at"])


class PacksMixin:
    """Pack records; every change writes a pack.* event in the same transaction."""

    def add_pack(self, pack: Pack) -> Pack:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM media WHERE name = ?", (pack.media,)).fetchone() is None:
                raise NotFoundError(f"no media named {pack.media!r}")
            if conn.execute("SELECT 1 FROM packs WHERE media = ? AND name = ?", (pack.media, pack.name)).fetchone():
                raise ConflictError(f"media {pack.media!r} already has a pack named {pack.name!r}")
            conn.execute(
                "INSERT INTO packs (media, name, kind, path, label, version, hosts, pools, details, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pack.media, pack.name, pack.kind, pack.path, pack.label, pack.version, json.dumps(list(pack.hosts)),
                 json.dumps(list(pack.pools)), json.dumps(dict(pack.details)), pack.added_at or now()))
            self._event(conn, "pack.added", details=pack.as_dict())
        return self.get_pack(pack.media, pack.name)

    def get_pack(self, media: str, name: str) -> Pack | None:
        row = self._connect().execute("SELECT * FROM packs WHERE media = ? AND name = ?", (media, name)).fetchone()
        return _pack_from_row(row) if row else None

    def list_packs(self, media: str | None = None) -> list[Pack]:
        """The packs of `media` (all media: None) in the order they were added: the answer files' order."""
        sql, args = "SELECT * FROM packs", ()
        if media is not None:
            sql, args = sql + " WHERE media = ?", (media,)
        return [_pack_from_row(r) for r in self._connect().execute(sql + " ORDER BY media, added_at, name", args)]

    def remove_pack(self, media: str, name: str) -> Pack:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM packs WHERE media = ? AND name = ?", (media, name)).fetchone()
            if row is None:
                raise NotFoundError(f"media {media!r} has no pack named {name!r}")
            conn.execute("DELETE FROM packs WHERE media = ? AND name = ?", (media, name))
            self._event(conn, "pack.removed", details={"media": media, "name": name})
        return _pack_from_row(row)
