"""The schema as forward-only migrations; index + 1 is the schema version. Never edit a shipped entry."""

from __future__ import annotations

MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: host registry and the event log
        """CREATE TABLE hosts (
            mac VARCHAR(17) PRIMARY KEY,
            name VARCHAR(63) NOT NULL,
            pool VARCHAR(63) NOT NULL,
            disk VARCHAR(255),
            firmware VARCHAR(8) NOT NULL,
            ip VARCHAR(45),
            notes TEXT NOT NULL,
            created_at VARCHAR(32) NOT NULL,
            updated_at VARCHAR(32) NOT NULL,
            UNIQUE (pool, name))""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts VARCHAR(32) NOT NULL,
            mac VARCHAR(17),
            run_id VARCHAR(64),
            kind VARCHAR(64) NOT NULL,
            details TEXT NOT NULL)""",
        "CREATE INDEX events_mac ON events (mac, id)",
        "CREATE INDEX events_run ON events (run_id, id)",
    ),
    (  # 2: installation media
        """CREATE TABLE media (
            name VARCHAR(64) PRIMARY KEY,
            path TEXT NOT NULL,
            product_name VARCHAR(128) NOT NULL,
            product_version VARCHAR(32) NOT NULL,
            platform_version VARCHAR(32) NOT NULL,
            build VARCHAR(64),
            boot_files TEXT NOT NULL,
            added_at VARCHAR(32) NOT NULL)""",
    ),
    (  # 3: installer attempts (one arming of one host; see provisioner.states for the states)
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            mac VARCHAR(17) NOT NULL,
            media VARCHAR(64) NOT NULL,
            token VARCHAR(64) NOT NULL UNIQUE,
            state VARCHAR(16) NOT NULL,
            max_runs INTEGER NOT NULL,
            runs INTEGER NOT NULL,
            run_id VARCHAR(64),
            window_until VARCHAR(32),
            exit_code INTEGER,
            created_at VARCHAR(32) NOT NULL,
            updated_at VARCHAR(32) NOT NULL,
            started_at VARCHAR(32),
            finished_at VARCHAR(32))""",
        "CREATE INDEX attempts_mac ON attempts (mac, id)",
        # The database itself guarantees at most one live attempt per host (partial index: SQLite >= 3.8,
        # PostgreSQL alike), so no code path can leave two armed tokens for one MAC.
        "CREATE UNIQUE INDEX attempts_one_live ON attempts (mac) WHERE state IN ('armed', 'started')",
    ),
    (  # 4: the address an attempt's boot config was fetched from, to put its kernel/install.img fetches
        #    (which carry no token) on the attempt's timeline
        "ALTER TABLE attempts ADD COLUMN boot_client VARCHAR(64)",
    ),
    (  # 5: pools (XAPI credentials), upgrade runs and their per-host steps (provisioner.coordinator)
        """CREATE TABLE pools (
            name VARCHAR(63) PRIMARY KEY,
            url TEXT NOT NULL,
            username VARCHAR(255) NOT NULL,
            password TEXT NOT NULL,
            created_at VARCHAR(32) NOT NULL,
            updated_at VARCHAR(32) NOT NULL)""",
        """CREATE TABLE runs (
            id VARCHAR(64) PRIMARY KEY,
            pool VARCHAR(63) NOT NULL,
            media VARCHAR(64) NOT NULL,
            state VARCHAR(24) NOT NULL,
            stop_on_failure INTEGER NOT NULL,
            abort_requested INTEGER NOT NULL,
            reason TEXT,
            created_at VARCHAR(32) NOT NULL,
            updated_at VARCHAR(32) NOT NULL)""",
        # One run per pool at a time, guaranteed by the database (a second `upgrade start` is refused).
        "CREATE UNIQUE INDEX runs_one_active ON runs (pool) "
        "WHERE state IN ('precheck', 'master', 'members', 'finalize')",
        """CREATE TABLE run_hosts (
            run_id VARCHAR(64) NOT NULL,
            mac VARCHAR(17) NOT NULL,
            position INTEGER NOT NULL,
            name VARCHAR(63) NOT NULL,
            uuid VARCHAR(64) NOT NULL,
            role VARCHAR(8) NOT NULL,
            step VARCHAR(16) NOT NULL,
            before_version VARCHAR(32),
            before_boot_time VARCHAR(64),
            attempt_id INTEGER,
            reason TEXT,
            updated_at VARCHAR(32) NOT NULL,
            PRIMARY KEY (run_id, mac))""",
    ),
    (  # 6: lab reinstall-and-join flows (provisioner.coordinator.reinstall). A reinstall's attempt_id is what
        #    makes an attempt a FRESH-INSTALL attempt: the boot endpoint renders fresh-install.xml only for it.
        #    root_password_hash is a crypt(3) hash (never plain text), cleared once served and when the flow ends.
        """CREATE TABLE reinstalls (
            id INTEGER PRIMARY KEY,
            mac VARCHAR(17) NOT NULL,
            pool VARCHAR(63) NOT NULL,
            media VARCHAR(64) NOT NULL,
            step VARCHAR(16) NOT NULL,
            host_name VARCHAR(63) NOT NULL,
            old_uuid VARCHAR(64),
            old_pool VARCHAR(63),
            new_uuid VARCHAR(64),
            host_url TEXT NOT NULL,
            network TEXT NOT NULL,
            root_password_hash TEXT,
            attempt_id INTEGER UNIQUE,
            reason TEXT,
            created_at VARCHAR(32) NOT NULL,
            updated_at VARCHAR(32) NOT NULL)""",
        # At most one reinstall in progress per host, guaranteed by the database.
        "CREATE UNIQUE INDEX reinstalls_one_active ON reinstalls (mac) WHERE step NOT IN ('done', 'failed')",
    ),
    (  # 7: the run state PREPARE (HA/WLB/auto_poweron turned off) is active too: one run per pool, by the database
        "DROP INDEX runs_one_active",
        "CREATE UNIQUE INDEX runs_one_active ON runs (pool) "
        "WHERE state IN ('precheck', 'prepare', 'master', 'members', 'finalize')",
    ),
    (  # 8: the host step that waits for the reboot to happen is WAIT_DOWN (its stored name was "installing");
        #    a run in progress resumes there, and a failed host's reason "<step>: <why>" names it too. Events keep
        #    the names they were written with.
        "UPDATE run_hosts SET step = 'wait_down' WHERE step = 'installing'",
        "UPDATE run_hosts SET reason = 'wait_down' || substr(reason, 11) WHERE reason LIKE 'installing:%'",
    ),
    (  # 9: how each host network-boots (issue 18): the NIC it boots from when not its management MAC, the
        #    multipath (boot-from-SAN) flag, its boot method (NULL: the pool's) and its BMC; the BMC password is
        #    only ever a credentials.encrypt() value. Pools get their default boot method.
        "ALTER TABLE hosts ADD COLUMN boot_mac VARCHAR(17)",
        "ALTER TABLE hosts ADD COLUMN multipath INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE hosts ADD COLUMN boot_method VARCHAR(16)",
        "ALTER TABLE hosts ADD COLUMN bmc_kind VARCHAR(8)",
        "ALTER TABLE hosts ADD COLUMN bmc_address TEXT",
        "ALTER TABLE hosts ADD COLUMN bmc_username VARCHAR(255)",
        "ALTER TABLE hosts ADD COLUMN bmc_password TEXT",
        "ALTER TABLE hosts ADD COLUMN bmc_system_id VARCHAR(255)",
        "CREATE UNIQUE INDEX hosts_boot_mac ON hosts (boot_mac) WHERE boot_mac IS NOT NULL",
        "ALTER TABLE pools ADD COLUMN boot_method VARCHAR(16) NOT NULL DEFAULT 'network-first'",
    ),
    (  # 10: how a pool's HTTPS certificate is trusted (provisioner/xapi_tls.py, docs/xapi.md "TLS"): a pinned
        #     SHA-256 fingerprint (lower-case hex) or a CA's PEM text (the file's content, not its path); neither:
        #     the system CA store, as before this migration
        "ALTER TABLE pools ADD COLUMN tls_fingerprint VARCHAR(64)",
        "ALTER TABLE pools ADD COLUMN tls_ca TEXT",
        # the certificate a reinstall pinned on the freshly installed host before it sent it a password
        # (coordinator/reinstall_trust.py)
        "ALTER TABLE reinstalls ADD COLUMN host_fingerprint VARCHAR(64)",
    ),
    (  # 11: update repositories (issue 20, provisioner/updates.py, docs/updates.md): an imported offline bundle
        #     (kind 'bundle': the .xsbundle file and its unpacked yum tree under path) or a registered mirror (kind
        #     'mirror': url, nothing downloaded). details is the JSON of what the repository's updateinfo says
        #     (update ids, guidances, update level); unsigned is 1 only when the operator passed --allow-unsigned.
        """CREATE TABLE updates (
            name VARCHAR(64) PRIMARY KEY,
            kind VARCHAR(8) NOT NULL,
            source TEXT NOT NULL,
            path TEXT,
            url TEXT,
            bundle_file VARCHAR(255),
            sha256 VARCHAR(64),
            size INTEGER,
            product_version VARCHAR(32),
            signed INTEGER NOT NULL,
            unsigned INTEGER NOT NULL,
            checked INTEGER NOT NULL,
            details TEXT NOT NULL,
            added_at VARCHAR(32) NOT NULL)""",
    ),
    (  # 12: supplemental packs and driver disks a media carries (provisioner/packs.py, docs/packs.md): a repository
        #     tree under path, read from its update.xml and repodata (kind 'driver': its comps has the installer's
        #     'drivers' group; 'pack': a supplemental pack). hosts/pools: JSON lists of MACs / pool names it applies
        #     to (both empty: every host upgraded or installed with that media). details: JSON of what was read.
        """CREATE TABLE packs (
            media VARCHAR(64) NOT NULL,
            name VARCHAR(64) NOT NULL,
            kind VARCHAR(8) NOT NULL,
            path TEXT NOT NULL,
            label VARCHAR(255) NOT NULL,
            version VARCHAR(64),
            hosts TEXT NOT NULL,
            pools TEXT NOT NULL,
            details TEXT NOT NULL,
            added_at VARCHAR(32) NOT NULL,
            PRIMARY KEY (media, name))""",
    ),
    (  # 13: the audit trail, named API tokens and webhooks (issue 23; provisioner/audit.py, provisioner/tokens.py,
        #     provisioner/webhooks/, docs/audit.md). audit is append-only: hash = sha256 over the canonical row and
        #     prev_hash (the previous row's hash), so an edited or deleted row breaks the chain. api_tokens keeps only
        #     the sha256 of each secret. webhook_outbox holds each delivery until the receiver took it (survives a
        #     receiver that is down and a restart); webhook_cursor is the last events.id turned into deliveries.
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            ts VARCHAR(32) NOT NULL,
            actor VARCHAR(128) NOT NULL,
            actor_kind VARCHAR(16) NOT NULL,
            source VARCHAR(128) NOT NULL,
            action VARCHAR(128) NOT NULL,
            target TEXT NOT NULL,
            outcome VARCHAR(32) NOT NULL,
            details TEXT NOT NULL,
            prev_hash VARCHAR(64) NOT NULL,
            hash VARCHAR(64) NOT NULL UNIQUE)""",
        """CREATE TABLE api_tokens (
            name VARCHAR(64) PRIMARY KEY,
            role VARCHAR(16) NOT NULL,
            secret_sha256 VARCHAR(64) NOT NULL UNIQUE,
            created_at VARCHAR(32) NOT NULL,
            last_used VARCHAR(32))""",
        """CREATE TABLE webhooks (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            pool VARCHAR(63),
            events TEXT NOT NULL,
            created_at VARCHAR(32) NOT NULL)""",
        """CREATE TABLE webhook_outbox (
            id INTEGER PRIMARY KEY,
            webhook_id INTEGER NOT NULL,
            event_id INTEGER NOT NULL,
            event VARCHAR(64) NOT NULL,
            payload TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            next_at VARCHAR(32) NOT NULL,
            state VARCHAR(16) NOT NULL,
            last_error TEXT,
            created_at VARCHAR(32) NOT NULL,
            delivered_at VARCHAR(32),
            UNIQUE (webhook_id, event_id))""",
        "CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_at)",
        """CREATE TABLE webhook_cursor (
            id INTEGER PRIMARY KEY,
            last_event_id INTEGER NOT NULL)""",
    ),
    (  # 14: flow leases (issue 22; store/leases.py, coordinator/locks.py, docs/store.md "Leases"): one row per pool
        #     run / host reinstall being driven, owned by one server process until expires_at (seconds since the
        #     epoch on the DATABASE's clock, so servers' clocks need not agree); the owner renews it while it
        #     drives, another server takes it once it has expired and resumes the flow from the store
        """CREATE TABLE leases (
            name VARCHAR(128) PRIMARY KEY,
            owner VARCHAR(255) NOT NULL,
            expires_at REAL NOT NULL,
            acquired_at VARCHAR(32) NOT NULL,
            renewed_at VARCHAR(32) NOT NULL)""",
    ),
    (  # 15: sites (issue 22; store/sites.py, provisioner/sites.py, docs/sites.md). servers: one row per `serve`
        #     process identity (its base_url, what hosts and other servers reach it at), the site it serves, its
        #     TFTP address and last_seen (seconds on the DATABASE's clock, renewed by a heartbeat: a row seen
        #     recently = up). hosts.site: the site whose server boots the host (NULL: any server, with its own URLs,
        #     as before sites). media_sites: which server (and so site) has which media tree, where, and its state
        #     (syncing / ready / failed). media_files: a tree's manifest (every regular file, size, sha256), what a
        #     server syncing the tree from another checks each fetched file against.
        """CREATE TABLE servers (
            server VARCHAR(255) PRIMARY KEY,
            site VARCHAR(63) NOT NULL,
            public_url TEXT NOT NULL,
            tftp_address VARCHAR(64) NOT NULL,
            started_at VARCHAR(32) NOT NULL,
            last_seen REAL NOT NULL)""",
        "ALTER TABLE hosts ADD COLUMN site VARCHAR(63)",
        """CREATE TABLE media_sites (
            media VARCHAR(64) NOT NULL,
            server VARCHAR(255) NOT NULL,
            site VARCHAR(63) NOT NULL,
            state VARCHAR(16) NOT NULL,
            path TEXT NOT NULL,
            error TEXT,
            updated_at VARCHAR(32) NOT NULL,
            PRIMARY KEY (media, server))""",
        """CREATE TABLE media_files (
            media VARCHAR(64) NOT NULL,
            relpath TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 VARCHAR(64) NOT NULL,
            PRIMARY KEY (media, relpath))""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)
