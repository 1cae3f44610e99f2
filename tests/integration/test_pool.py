"""The pool checks a connection at every checkout (mailsync.store.db): connections that died
while idle (killed backends, a restart) cost no failed statement."""

from __future__ import annotations

import time
import uuid

import psycopg

from mailsync.store.db import Database


def test_backends_killed_while_idle_cost_no_failed_statement(database_url: str) -> None:
    with Database(database_url, max_size=3) as db:
        with db.transaction(), db.transaction(), db.transaction():
            pass  # three connections, all idle now
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
        for _ in range(3):  # each checkout finds the dead one out and takes a live one
            assert db.one("job_business", job_id=job_id) == {"business_id": None}
