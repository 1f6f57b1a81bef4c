"""Store mixin: sites (migration 15): the servers on this database, which media tree each holds, tree manifests.

A server row is keyed by the server's base URL (what hosts and the other servers reach it at), so a restarted server
finds its own row again; last_seen is a heartbeat on the DATABASE's clock (as leases), so servers need not agree on
theirs. media_sites says which server (and so which site) has which media tree, where on that server's disk, and
whether it is syncing, ready or failed; media_files is the tree's manifest, what a syncing server checks each file it
fetched against (docs/sites.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from provisioner.store.base import now

MEDIA_STATES = ("syncing", "ready", "failed")


@dataclass(frozen=True)
class Server:
    server: str  # its base URL: the row's key
    site: str
    public_url: str
    tftp_address: str  # host:port booting hosts of its site fetch TFTP configs from
    started_at: str
    last_seen: float  # seconds since the epoch, database clock
    age: float = 0.0  # seconds since last_seen when read

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MediaCopy:
    media: str
    server: str
    site: str
    state: str  # MEDIA_STATES
    path: str  # the tree on that server's disk
    error: str | None
    updated_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _server(row: Any, clock: float) -> Server:
    seen = float(row["last_seen"])
    return Server(server=row["server"], site=row["site"], public_url=row["public_url"],
                  tftp_address=row["tftp_address"], started_at=row["started_at"], last_seen=seen,
                  age=max(0.0, clock - seen))


def _copy(row: Any) -> MediaCopy:
    return MediaCopy(media=row["media"], server=row["server"], site=row["site"], state=row["state"], path=row["path"],
                     error=row["error"], updated_at=row["updated_at"])


class SitesMixin:
    """Server registration and heartbeat, media copies per server, media manifests."""

    def register_server(self, server: str, site: str, public_url: str, tftp_address: str) -> Server:
        """Insert or refresh this server's row (at start: a `server.registered` event when it is new or moved)."""
        with self._tx() as conn:  # type: ignore[attr-defined]
            clock = self.db_clock(conn)  # type: ignore[attr-defined]
            row = conn.execute("SELECT * FROM servers WHERE server = ?", (server,)).fetchone()
            stamp = now()
            if row is None:
                conn.execute("INSERT INTO servers (server, site, public_url, tftp_address, started_at, last_seen) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (server, site, public_url, tftp_address, stamp, clock))
            else:
                conn.execute("UPDATE servers SET site = ?, public_url = ?, tftp_address = ?, started_at = ?, "
                             "last_seen = ? WHERE server = ?", (site, public_url, tftp_address, stamp, clock, server))
            if row is None or row["site"] != site or row["tftp_address"] != tftp_address:
                self._event(conn, "server.registered", details={  # type: ignore[attr-defined]
                    "server": server, "site": site, "public_url": public_url, "tftp_address": tftp_address,
                    "previous_site": row["site"] if row is not None else None})
        return self.get_server(server)  # type: ignore[return-value]

    def server_seen(self, server: str) -> bool:
        """The heartbeat: last_seen = now (database clock). False when the row is gone (then register again)."""
        with self._tx() as conn:  # type: ignore[attr-defined]
            clock = self.db_clock(conn)  # type: ignore[attr-defined]
            return conn.execute("UPDATE servers SET last_seen = ? WHERE server = ?", (clock, server)).rowcount > 0

    def get_server(self, server: str) -> Server | None:
        conn = self._connect()  # type: ignore[attr-defined]
        row = conn.execute("SELECT * FROM servers WHERE server = ?", (server,)).fetchone()
        return _server(row, self.db_clock(conn)) if row else None  # type: ignore[attr-defined]

    def list_servers(self, site: str | None = None) -> list[Server]:
        """Servers (of `site`), the most recently seen first."""
        conn = self._connect()  # type: ignore[attr-defined]
        if site is None:
            rows = conn.execute("SELECT * FROM servers ORDER BY last_seen DESC, server").fetchall()
        else:
            rows = conn.execute("SELECT * FROM servers WHERE site = ? ORDER BY last_seen DESC, server",
                                (site,)).fetchall()
        clock = self.db_clock(conn)  # type: ignore[attr-defined]
        return [_server(row, clock) for row in rows]

    def site_names(self) -> list[str]:
        """Every site some server registered."""
        return [r[0] for r in self._connect().execute(  # type: ignore[attr-defined]
            "SELECT DISTINCT site FROM servers ORDER BY site")]

    # --- media copies ---

    def set_media_copy(self, media: str, server: str, site: str, state: str, path: str,
                       error: str | None = None) -> MediaCopy:
        """Record server's copy of `media` (state syncing / ready / failed) with a `media.site_<state>` event."""
        if state not in MEDIA_STATES:
            raise ValueError(f"media copy state {state!r} is not one of {', '.join(MEDIA_STATES)}")
        with self._tx() as conn:  # type: ignore[attr-defined]
            stamp = now()
            updated = conn.execute("UPDATE media_sites SET site = ?, state = ?, path = ?, error = ?, updated_at = ? "
                                   "WHERE media = ? AND server = ?", (site, state, path, error, stamp, media, server))
            if updated.rowcount == 0:
                conn.execute("INSERT INTO media_sites (media, server, site, state, path, error, updated_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (media, server, site, state, path, error, stamp))
            self._event(conn, f"media.site_{state}", details={  # type: ignore[attr-defined]
                "media": media, "server": server, "site": site, "path": path, "error": error})
        return MediaCopy(media, server, site, state, path, error, stamp)

    def media_copies(self, media: str | None = None) -> list[MediaCopy]:
        conn = self._connect()  # type: ignore[attr-defined]
        if media is None:
            rows = conn.execute("SELECT * FROM media_sites ORDER BY media, site, server").fetchall()
        else:
            rows = conn.execute("SELECT * FROM media_sites WHERE media = ? ORDER BY site, server", (media,)).fetchall()
        return [_copy(row) for row in rows]

    def media_copy(self, media: str, server: str) -> MediaCopy | None:
        row = self._connect().execute("SELECT * FROM media_sites WHERE media = ? AND server = ?",  # type: ignore
                                      (media, server)).fetchone()
        return _copy(row) if row else None

    # --- manifests ---

    def set_media_manifest(self, media: str, files: Iterable[tuple[str, int, str]]) -> int:
        """Replace `media`'s manifest with (relpath, size, sha256) rows, in one transaction; their count."""
        rows = list(files)
        with self._tx() as conn:  # type: ignore[attr-defined]
            conn.execute("DELETE FROM media_files WHERE media = ?", (media,))
            for relpath, size, digest in rows:
                conn.execute("INSERT INTO media_files (media, relpath, size, sha256) VALUES (?, ?, ?, ?)",
                             (media, relpath, size, digest))
        return len(rows)

    def media_manifest(self, media: str) -> list[tuple[str, int, str]]:
        return [(r["relpath"], int(r["size"]), r["sha256"]) for r in self._connect().execute(  # type: ignore
            "SELECT relpath, size, sha256 FROM media_files WHERE media = ? ORDER BY relpath", (media,))]

    @staticmethod
    def _forget_media_sites(conn: Any, media: str) -> None:
        """remove_media's part: the copies and the manifest go with the media row."""
        conn.execute("DELETE FROM media_sites WHERE media = ?", (media,))
        conn.execute("DELETE FROM media_files WHERE media = ?", (media,))
