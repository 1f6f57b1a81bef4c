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
]
SCHEMA_VERSION = len(MIGRATIONS)
