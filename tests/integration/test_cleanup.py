"""The cleanup flow against a real Postgres: stuck-chunk recovery, job closing and
resumption, retention by age, and the lock that keeps two cleanups apart.

Rows are seeded with SQL, with the ages each test needs; the flow runs in this process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from mailsync.flows.cleanup import cleanup
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.runtime import get_runtime, reset_runtime
from mailsync.store.maintenance import CLEANUP_LOCK_KEY

BUSINESS = uuid.UUID("00000000-0000-4000-8000-0000000000b1")
OTHER_BUSINESS = uuid.UUID("00000000-0000-4000-8000-0000000000b2")
MAILBOX = "grace@contoso.example"


@pytest.fixture()
def db_runtime(database_url: str) -> Iterator[Any]:
    """The runtime for this test's database (no Graph needed)."""
    reset_runtime()
    yield get_runtime()
    reset_runtime()


@pytest.fixture()
def conn(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def ago(**delta: float) -> timedelta:
    return timedelta(**delta)


def seed_store(conn: psycopg.Connection[Any], mailbox: str, business: uuid.UUID = BUSINESS) -> Any:
    return conn.execute(
        "INSERT INTO stores (business_id, name, mailbox, folder) VALUES (%s, %s, %s, 'inbox')"
        " RETURNING id",
        (business, mailbox, mailbox),
    ).fetchone()["id"]


def seed_job(
    conn: psycopg.Connection[Any],
    store_id: Any,
    status: str,
    chunk_statuses: list[str],
    *,
    finished: timedelta | None = None,
    idle: timedelta = timedelta(0),
    business: uuid.UUID = BUSINESS,
    total_chunks: int | None = None,
) -> Any:
    """A job with chunks in the given statuses; finished that long ago, or idle that long."""
    job_id = conn.execute(
        "INSERT INTO sync_queue (business_id, store_id, sync_type, status, chunk_size,"
        " page_size, estimated_emails, total_chunks, started_at, completed_at, updated_at)"
        " VALUES (%s, %s, 'full', %s, 100, 50, %s, %s, now() - %s::interval - interval '1 hour',"
        "         now() - %s::interval, now() - %s::interval)"
        " RETURNING id",
        (
            business,
            store_id,
            status,
            100 * len(chunk_statuses),
            total_chunks or len(chunk_statuses) or None,
            finished or idle,
            finished,
            finished or idle,
        ),
    ).fetchone()["id"]
    for index, chunk_status in enumerate(chunk_statuses, start=1):
        seed_chunk(
            conn,
            job_id,
            index,
            total_chunks or len(chunk_statuses),
            chunk_status,
            age=finished or idle,
            business=business,
            store_id=store_id,
        )
    return job_id


def seed_chunk(
    conn: psycopg.Connection[Any],
    job_id: Any,
    index: int,
    total: int,
    status: str,
    *,
    age: timedelta,
    business: uuid.UUID,
    store_id: Any,
    attempts: int | None = None,
    heartbeat: timedelta = timedelta(0),
) -> Any:
    processing = status == "processing"
    finished = status in ("completed", "failed")
    attempts = attempts if attempts is not None else (1 if processing or finished else 0)
    return conn.execute(
        "INSERT INTO chunked_sync_jobs (parent_sync_job_id, business_id, store_id, chunk_index,"
        " total_chunks, chunk_size, estimated_emails, status, attempts, max_attempts, worker_id,"
        " heartbeat_at, started_at, completed_at, updated_at, error_category)"
        " VALUES (%s, %s, %s, %s, %s, 100, 100, %s, %s, 3, %s, now() - %s::interval, now() - %s::interval,"
        "         now() - %s::interval, now() - %s::interval, %s)"
        " RETURNING id",
        (
            job_id,
            business,
            store_id,
            index,
            total,
            status,
            attempts,
            "dead-worker:1:abc" if processing else None,
            heartbeat if processing else None,
            age,
            age if finished else None,
            age,
            "bad_data" if status == "failed" else None,
        ),
    ).fetchone()["id"]


def seed_checkpoint(conn: psycopg.Connection[Any], job_id: Any, index: int = 1) -> None:
    conn.execute(
        "INSERT INTO sync_state_checkpoints (business_id, store_id, sync_job_id, chunk_id,"
        " chunk_index, cursor, emails_processed)"
        " SELECT c.business_id, c.store_id, c.parent_sync_job_id, c.id, c.chunk_index,"
        "        '{}'::jsonb, 50"
        "   FROM chunked_sync_jobs c WHERE c.parent_sync_job_id = %s AND c.chunk_index = %s",
        (job_id, index),
    )


def rows(conn: psycopg.Connection[Any], query: str, *params: Any) -> list[dict[str, Any]]:
    return conn.execute(query, params).fetchall()


def chunk_states(conn: psycopg.Connection[Any], job_id: Any) -> list[tuple[str, int, str | None]]:
    return [
        (r["status"], r["attempts"], r["error_category"])
        for r in rows(
            conn,
            "SELECT * FROM chunked_sync_jobs WHERE parent_sync_job_id = %s ORDER BY chunk_index",
            job_id,
        )
    ]


def job_status(conn: psycopg.Connection[Any], job_id: Any) -> str:
    return rows(conn, "SELECT status FROM sync_queue WHERE id = %s", job_id)[0]["status"]


NO_RETENTION = {"retention": False}


def test_a_stuck_chunk_goes_back_to_pending_and_a_live_one_is_left_alone(
    db_runtime: Any, conn: Any
) -> None:
    store = seed_store(conn, MAILBOX)
    stuck_job = seed_job(conn, store, "running", ["completed"], total_chunks=3)
    stuck = seed_chunk(
        conn,
        stuck_job,
        2,
        3,
        "processing",
        age=ago(),
        business=BUSINESS,
        store_id=store,
        heartbeat=ago(seconds=45),
    )
    seed_chunk(conn, stuck_job, 3, 3, "pending", age=ago(), business=BUSINESS, store_id=store)
    live_store = seed_store(conn, "live@contoso.example", OTHER_BUSINESS)
    live_job = seed_job(conn, live_store, "running", [], business=OTHER_BUSINESS, total_chunks=1)
    seed_chunk(
        conn,
        live_job,
        1,
        1,
        "processing",
        age=ago(),
        business=OTHER_BUSINESS,
        store_id=live_store,
        heartbeat=ago(seconds=5),
    )

    result = cleanup(stuck_after_s=30, resume=False, **NO_RETENTION)

    assert result["stuck_reset"] == 1 and result["stuck_failed"] == 0
    chunk = rows(conn, "SELECT * FROM chunked_sync_jobs WHERE id = %s", stuck)[0]
    assert (chunk["status"], chunk["attempts"], chunk["error_category"]) == ("pending", 1, "stuck")
    assert chunk["worker_id"] is None and chunk["heartbeat_at"] is None
    assert "dead-worker:1:abc" in chunk["error_message"]
    assert chunk_states(conn, live_job) == [("processing", 1, None)]
    assert job_status(conn, stuck_job) == "running"  # chunk 3 is still to run


def test_a_stuck_chunk_out_of_attempts_fails_as_stuck_and_its_job_partially(
    db_runtime: Any, conn: Any
) -> None:
    store = seed_store(conn, MAILBOX)
    job = seed_job(conn, store, "running", ["completed"], total_chunks=2)
    seed_chunk(
        conn,
        job,
        2,
        2,
        "processing",
        age=ago(),
        business=BUSINESS,
        store_id=store,
        attempts=3,
        heartbeat=ago(minutes=5),
    )

    result = cleanup(stuck_after_s=30, **NO_RETENTION)

    assert (result["stuck_reset"], result["stuck_failed"]) == (0, 1)
    assert chunk_states(conn, job) == [("completed", 1, None), ("failed", 3, "stuck")]
    assert result["jobs_closed"] == 1 and result["jobs_resumed"] == 0
    job_row = rows(conn, "SELECT * FROM sync_queue WHERE id = %s", job)[0]
    assert job_row["status"] == "partial_failure"
    assert job_row["error_category"] == "stuck" and job_row["completed_at"] is not None


def test_a_running_job_whose_chunks_all_finished_is_closed(db_runtime: Any, conn: Any) -> None:
    store = seed_store(conn, MAILBOX)
    done = seed_job(conn, store, "running", ["completed", "completed"])
    unplanned = seed_job(conn, seed_store(conn, "new@contoso.example"), "running", [])

    result = cleanup(stuck_after_s=30, resume=False, **NO_RETENTION)

    assert result["jobs_closed"] == 1
    assert job_status(conn, done) == "completed"
    assert job_status(conn, unplanned) == "running"  # no plan yet: resumed, never closed


def test_jobs_to_resume_are_the_idle_ones_and_are_not_requested_twice(
    db_runtime: Any, conn: Any
) -> None:
    store = seed_store(conn, MAILBOX)
    idle = seed_job(conn, store, "running", ["completed", "pending"], idle=ago(minutes=5))
    _busy = seed_job(
        conn,
        seed_store(conn, "b@contoso.example"),
        "running",
        ["completed", "pending"],
        idle=ago(seconds=5),
    )
    waiting = seed_job(
        conn,
        seed_store(conn, "w@contoso.example"),
        "running",
        ["completed", "retrying"],
        idle=ago(minutes=5),
    )
    conn.execute(
        "UPDATE chunked_sync_jobs SET next_attempt_at = now() + interval '1 minute'"
        " WHERE parent_sync_job_id = %s AND status = 'retrying'",
        (waiting,),
    )
    db = db_runtime.db

    def pick() -> list[str]:
        with db.maintenance_transaction() as session:
            found = session.all(
                "jobs_to_resume", recovered_job_ids=[], idle_after_s=30, resume_grace_s=600
            )
            for row in found:
                session.execute("mark_resume_requested", job_id=row["job_id"], requested_by="t")
        return [str(r["job_id"]) for r in found]

    def set_times(requested: str, updated: str) -> None:
        conn.execute(
            "UPDATE sync_queue SET updated_at = now() - %s::interval,"
            " metadata = jsonb_set(metadata, '{resume_requested_at}',"
            "                      to_jsonb(now() - %s::interval))"
            " WHERE id = %s",
            (updated, requested, idle),
        )

    assert pick() == [str(idle)]  # busy worked 5 s ago; waiting has a retry due
    assert pick() == []  # requested, its run has not started: not again within the grace
    set_times(requested="2 minutes", updated="0 s")
    assert pick() == []  # the requested run started and is active
    set_times(requested="2 minutes", updated="1 minute")
    assert pick() == [str(idle)]  # it started, then went silent for longer than 30 s
    set_times(requested="11 minutes", updated="15 minutes")
    assert pick() == [str(idle)]  # never started, and the grace is over: ask again


def test_the_cleanup_resumes_an_interrupted_job_here_until_it_completes(
    runtime: Any, simulator: Any, database_url: str, conn: Any
) -> None:
    box = simulator.add_mailbox(MAILBOX, 900, seed=29)
    first = sync_mailbox(mailbox=MAILBOX, chunk_size=300, page_size=100, graph_url=simulator.url)
    job = first["job_id"]
    # Rewind to "killed in chunk 2, after its first page": chunk 2 processing by a dead
    # worker, chunk 3 pending, the job's position where chunk 2's first page ended.
    conn.execute(
        "DELETE FROM sync_state_checkpoints WHERE sync_job_id = %s"
        " AND (chunk_index = 3 OR (chunk_index = 2 AND id NOT IN ("
        "   SELECT min(id) FROM sync_state_checkpoints WHERE sync_job_id = %s"
        "      AND chunk_index = 2)))",
        (job, job),
    )
    conn.execute(
        "DELETE FROM emails WHERE graph_id NOT IN (SELECT graph_id FROM emails"
        " ORDER BY id LIMIT 400)"  # as delivered: chunk 1 and chunk 2's first page
    )
    conn.execute(
        "UPDATE chunked_sync_jobs SET status = 'processing', worker_id = 'dead:1:x',"
        " heartbeat_at = now() - interval '1 minute', completed_at = NULL,"
        " checkpoint_data = jsonb_build_object('emails_processed', 100)"
        " WHERE parent_sync_job_id = %s AND chunk_index = 2",
        (job,),
    )
    conn.execute(
        "UPDATE chunked_sync_jobs SET status = 'pending', attempts = 0,"
        " completed_at = NULL, checkpoint_data = '{}'"
        " WHERE parent_sync_job_id = %s AND chunk_index = 3",
        (job,),
    )
    conn.execute(
        "UPDATE sync_queue SET status = 'running', completed_at = NULL WHERE id = %s", (job,)
    )

    result = cleanup(stuck_after_s=30, **NO_RETENTION)

    assert (result["stuck_reset"], result["jobs_resumed"]) == (1, 1)
    assert job_status(conn, job) == "completed"
    # the folder's round in three chunks: chunk 2 taken back and finished by a second attempt
    assert chunk_states(conn, job) == [
        ("completed", 1, None),
        ("completed", 2, None),
        ("completed", 1, None),
    ]
    ids = [r["graph_id"] for r in rows(conn, "SELECT graph_id FROM emails")]
    assert len(ids) == len(set(ids)) == 900 and set(ids) == box.ids()
    mark = rows(conn, "SELECT metadata FROM sync_queue WHERE id = %s", job)[0]["metadata"]
    assert mark["resume_requested_by"].startswith("cleanup flow run ")


def test_resuming_inside_a_deployment_starts_a_run_of_the_sync_deployment(
    db_runtime: Any, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mailsync.flows.cleanup as cleanup_module

    store = seed_store(conn, MAILBOX)
    job = seed_job(conn, store, "running", ["completed", "pending"], idle=ago(minutes=5))
    calls: list[tuple[str, dict[str, Any], float | None]] = []

    class FakeRun:
        id = uuid.uuid4()

    def fake_run_deployment(name: str, *, parameters: dict[str, Any], timeout: float) -> Any:
        calls.append((name, parameters, timeout))
        return FakeRun()

    monkeypatch.setattr(cleanup_module, "inside_deployment", lambda: True)
    monkeypatch.setattr(cleanup_module, "run_deployment", fake_run_deployment)

    result = cleanup(stuck_after_s=30, **NO_RETENTION)

    assert result["jobs_resumed"] == 1
    assert calls == [("sync-mailbox/hourly", {"job_id": str(job)}, 0)]
    assert job_status(conn, job) == "running"  # the deployment's run will finish it


def test_retention_deletes_exactly_the_rows_past_their_age(db_runtime: Any, conn: Any) -> None:
    store = seed_store(conn, MAILBOX)
    other = seed_store(conn, "other@contoso.example", OTHER_BUSINESS)
    jobs = {
        "completed_31d": seed_job(
            conn, store, "completed", ["completed"] * 3, finished=ago(days=31)
        ),
        "completed_29d": seed_job(
            conn, store, "completed", ["completed"] * 2, finished=ago(days=29)
        ),
        "failed_8d": seed_job(
            conn, other, "failed", [], finished=ago(days=8), business=OTHER_BUSINESS
        ),
        "partial_8d": seed_job(
            conn, store, "partial_failure", ["completed", "failed"], finished=ago(days=8)
        ),
        "partial_6d": seed_job(conn, store, "partial_failure", ["failed"], finished=ago(days=6)),
        "finished_2d": seed_job(
            conn, other, "completed", ["completed"], finished=ago(days=2), business=OTHER_BUSINESS
        ),
        "finished_12h": seed_job(conn, store, "completed", ["completed"], finished=ago(hours=12)),
    }
    running_old = seed_job(
        conn,
        seed_store(conn, "slow@contoso.example"),
        "running",
        ["completed", "processing"],
        idle=ago(days=40),
    )
    for name in ("completed_31d", "partial_8d", "finished_2d", "finished_12h"):
        seed_checkpoint(conn, jobs[name])
    seed_checkpoint(conn, running_old)
    # Emails and attachments: some attachments lost their email, at various ages.
    conn.execute(
        "INSERT INTO emails (business_id, store_id, graph_id, received_at, content_hash)"
        " SELECT %s, %s, 'm' || i, now(), 'h' FROM generate_series(1, 5) AS i",
        (BUSINESS, store),
    )
    attachments = {
        "live_old": ("m1", ago(days=3)),
        "orphan_25h": ("gone1", ago(hours=25)),
        "orphan_3d": ("gone2", ago(days=3)),
        "orphan_23h": ("gone3", ago(hours=23)),
    }
    for name, (graph_id, age) in attachments.items():
        conn.execute(
            "INSERT INTO email_attachments (business_id, store_id, email_graph_id,"
            " graph_attachment_id, name, created_at) VALUES (%s, %s, %s, %s, %s, now() - %s::interval)",
            (BUSINESS, store, graph_id, name, name, age),
        )
    before_emails = rows(conn, "SELECT count(*) AS n FROM emails")[0]["n"]

    result = cleanup(batch_size=2, resume=False)  # batches of 2: the loops are exercised

    kept_jobs = {r["id"] for r in rows(conn, "SELECT id FROM sync_queue")}
    assert kept_jobs == {
        jobs["completed_29d"],
        jobs["partial_6d"],
        jobs["finished_2d"],
        jobs["finished_12h"],
        running_old,
    }
    assert result["jobs_deleted"] == 3
    assert result["chunks_deleted"] == 3 + 0 + 2
    kept_checkpoints = {
        r["sync_job_id"] for r in rows(conn, "SELECT * FROM sync_state_checkpoints")
    }
    assert kept_checkpoints == {jobs["finished_12h"], running_old}
    assert result["checkpoints_deleted"] == 3  # finished_2d's, and the two of deleted jobs
    kept_attachments = {r["name"] for r in rows(conn, "SELECT name FROM email_attachments")}
    assert kept_attachments == {"live_old", "orphan_23h"}
    assert result["attachments_deleted"] == 2
    assert rows(conn, "SELECT count(*) AS n FROM emails")[0]["n"] == before_emails
    assert rows(conn, "SELECT count(*) AS n FROM stores")[0]["n"] == 3
    assert result["stuck_reset"] == result["stuck_failed"] == 0

    again = cleanup(batch_size=2, resume=False)  # nothing is left to delete
    assert all(
        again[k] == 0
        for k in ("jobs_deleted", "chunks_deleted", "checkpoints_deleted", "attachments_deleted")
    )


def test_retention_ages_come_from_the_environment(
    db_runtime: Any, conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILSYNC_RETAIN_COMPLETED_DAYS", "1")
    store = seed_store(conn, MAILBOX)
    old = seed_job(conn, store, "completed", ["completed"], finished=ago(days=2))
    young = seed_job(conn, store, "completed", ["completed"], finished=ago(hours=12))

    result = cleanup(resume=False)

    assert result["jobs_deleted"] == 1
    assert {r["id"] for r in rows(conn, "SELECT id FROM sync_queue")} == {young}
    assert old not in {r["id"] for r in rows(conn, "SELECT id FROM sync_queue")}


def test_a_second_cleanup_skips_while_one_holds_the_lock(
    db_runtime: Any, conn: Any, database_url: str
) -> None:
    store = seed_store(conn, MAILBOX)
    job = seed_job(conn, store, "running", [], total_chunks=1)
    seed_chunk(
        conn,
        job,
        1,
        1,
        "processing",
        age=ago(),
        business=BUSINESS,
        store_id=store,
        heartbeat=ago(minutes=5),
    )
    with psycopg.connect(database_url, autocommit=True) as holder:
        assert holder.execute("SELECT pg_try_advisory_lock(%s)", (CLEANUP_LOCK_KEY,)).fetchone()[0]
        skipped = cleanup(stuck_after_s=30)
        assert skipped["skipped"] == "another cleanup is running"
        assert skipped["stuck_reset"] == 0
        assert chunk_states(conn, job) == [("processing", 1, None)]  # untouched
    worked = cleanup(stuck_after_s=30, resume=False)  # the lock is free again
    assert "skipped" not in worked and worked["stuck_reset"] == 1
