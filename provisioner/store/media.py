"""Store mixin: installation media records."""

from __future__ import annotations

import json
import sqlite3

from provisioner.model import Media
from provisioner.store.base import ConflictError, NotFoundError, now


def _media_from_row(row: sqlite3.Row) -> Media:
    return Media(name=row["name"], path=row["path"], product_name=row["product_name"],
                 product_version=row["product_version"], platform_version=row["platform_version"],
                 build=row["build"], boot_files=tuple(json.loads(row["boot_files"])), added_at=row["added_at"])


class MediaMixin:
    """Media records; every change writes a media.* event in the same transaction."""

    def add_media(self, media: Media) -> Media:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM media WHERE name = ?", (media.name,)).fetchone():
                raise ConflictError(f"media {media.name!r} already exists")
            conn.execute(
                "INSERT INTO media (name, path, product_name, product_version, platform_version, build, "
                "boot_files, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (media.name, media.path, media.product_name, media.product_version, media.platform_version,
                 media.build, json.dumps(list(media.boot_files)), media.added_at or now()),
            )
            self._event(conn, "media.added", details=media.as_dict())
        return self.get_media(media.name)

    def get_media(self, name: str) -> Media | None:
        row = self._connect().execute("SELECT * FROM media WHERE name = ?", (name,)).fetchone()
        return _media_from_row(row) if row else None

    def list_media(self) -> list[Media]:
        return [_media_from_row(r) for r in self._connect().execute("SELECT * FROM media ORDER BY name")]

    def remove_media(self, name: str) -> Media:
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM media WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no media named {name!r}")
            conn.execute("DELETE FROM media WHERE name = ?", (name,))
            self._forget_media_sites(conn, name)  # store/sites.py
            self._event(conn, "media.removed", details={"name": name})
        return _media_from_row(row)
