"""The pool without a liveness check at every checkout (mailsync.db): connections that
died while idle cost one retryable try, not one try each."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from mailsync.db import Database
from mailsync.errors import DatabaseError, is_retryable


def test_backends_killed_while_idle_cost_one_retryable_try(database_url: str) -> None:
    with Database(database_url, max_size=3) as db:
        with db.transaction(), db.transaction(), db.transaction():
            pass  # three connections, all idle now and checked again only after 30 s
        deadline = time.monotonic() + 10
        while db.pool.get_stats()["pool_available"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        with psycopg.connect(database_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed is not None and killed[0] >= 3
        job_id = uuid.uuid4()
        with pytest.raises(DatabaseError) as lost:
            db.one("job_business", job_id=job_id)
        assert is_retryable(lost.value)
        # The failure had the pool check its idle connections: the retry finds a live one.
        assert db.one("job_business", job_id=job_id) == {"business_id": None}
