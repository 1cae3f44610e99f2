"""The cleanup lock: one cleanup at a time on a database, whoever starts it.

The cleanup's statements (``sql/cleanup.sql``) run in ``Database.maintenance_transaction()``,
the one path that acts across tenants (as ``mailsync_maintenance``, see mailsync/store/db.py);
this module only keeps two cleanups from overlapping.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.rows import dict_row

from mailsync.sql import queries
from mailsync.store.db import Database, connect

# One cleanup at a time across every process on the database (CLI, deployments, tests).
# An arbitrary constant, next to mailsync.store.migrate's 7_420_001.
CLEANUP_LOCK_KEY = 7_420_003


@contextmanager
def cleanup_lock(db: Database) -> Iterator[bool]:
    """True while this process holds the cleanup lock, False (at once) when another does.

    A session-level advisory lock on a connection of its own, in autocommit: the cleanup's
    work spans many short transactions, and an idle-in-transaction connection held for
    minutes would hold back vacuum. A process that dies loses its connection, and the lock
    with it, so a crashed cleanup never blocks the next one.
    """
    with connect(db.url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(queries["try_cleanup_lock"], {"lock_key": CLEANUP_LOCK_KEY}).fetchone()
        acquired = bool(row and row["acquired"])
        try:
            yield acquired
        finally:
            if acquired and not conn.closed:
                conn.execute(queries["release_cleanup_lock"], {"lock_key": CLEANUP_LOCK_KEY})
