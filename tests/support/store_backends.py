"""Helpers for store tests that run on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
from typing import Iterator


class _Rollback(Exception):
    pass


@contextlib.contextmanager
def write_lock_held(store) -> Iterator[None]:
    """Hold the store's write lock on this thread (a write transaction left open), then roll it back: other
    threads' writes wait (or, impatient, fail) meanwhile, as behind a long writer in another process."""
    try:
        with store._tx():
            yield
            raise _Rollback
    except _Rollback:
        pass
