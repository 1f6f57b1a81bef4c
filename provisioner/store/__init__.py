"""The only database module (a package): schema, migrations, hosts, media, attempts and the event log.

SQLite in WAL mode (default) or PostgreSQL (database_url; store/postgres.py), one connection per thread, every
read-modify-write inside a transaction holding the database's write lock, and every state change writes an `events`
row in the same transaction. Split into mixins by responsibility: base
(connections, migrations, file checks), events (the bounded event log), hosts, media, attempts, runs (pools,
runs, host steps), updates (update repositories: bundles and mirrors), audit (the hash-chained audit trail),
tokens (named API tokens), webhooks (webhooks and their delivery outbox), leases (which server drives a flow), sites (servers, media copies per server), copy (`db copy`); lock (one serve per data dir). All SQL
stays inside this package.
"""

from __future__ import annotations

from provisioner.store.attempts import AttemptChange, AttemptsMixin
from provisioner.store.audit import AuditMixin
from provisioner.store.base import ConflictError, NotFoundError, StoreBase, StoreError, now
from provisioner.store.events import EventsMixin
from provisioner.store.hosts import HostsMixin
from provisioner.store.leases import Lease, LeasesMixin
from provisioner.store.media import MediaMixin
from provisioner.store.packs import PacksMixin
from provisioner.store.runs import PoolRecord, Run, RunHost, RunsMixin
from provisioner.store.schema import MIGRATIONS, SCHEMA_VERSION
from provisioner.store.sites import MediaCopy, Server, SitesMixin
from provisioner.store.tokens import TokensMixin
from provisioner.store.updates import UpdateRepo, UpdatesMixin
from provisioner.store.webhooks import WebhooksMixin


class Store(HostsMixin, MediaMixin, PacksMixin, AttemptsMixin, RunsMixin, UpdatesMixin, AuditMixin, TokensMixin,
            LeasesMixin, SitesMixin,
            WebhooksMixin, EventsMixin, StoreBase):
    """A handle on one database file; safe to share between threads (each thread gets its own connection)."""


__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "AttemptChange", "ConflictError", "Lease", "MediaCopy", "NotFoundError", "PoolRecord", "Run", "RunHost",
    "Server", "Store", "StoreError", "UpdateRepo", "now",
]
