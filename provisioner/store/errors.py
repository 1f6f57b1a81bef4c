"""What the database libraries raise, on either backend (SQLite's sqlite3, PostgreSQL's psycopg via store/postgres)."""

from __future__ import annotations

import sqlite3

from provisioner.store import postgres

DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, postgres.Error)
"""What a failed statement raises, on either backend."""
BUSY_ERRORS: tuple[type[BaseException], ...] = (sqlite3.OperationalError, postgres.OperationalError)
"""A write refused for a held lock (impatient), a full disk or a lost server: best-effort writes drop on these."""
INTEGRITY_ERRORS: tuple[type[BaseException], ...] = (sqlite3.IntegrityError, postgres.IntegrityError)
"""A constraint of the schema refused the change (unique index, NOT NULL)."""
