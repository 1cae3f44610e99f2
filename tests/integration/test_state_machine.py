"""The chunk state machine in SQL: order, fencing, retries, one holder, one active job."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

BUSINESS = uuid.uuid4()


def setup_job(conn: psycopg.Connection[Any], chunks: int = 3, max_attempts: int = 2) -> uuid.UUID:
    store = conn.execute(
        "INSERT INTO stores (business_id, name, mailbox) VALUES (%s, 's', %s) RETURNING id",
        (BUSINESS, f"{uuid.uuid4().hex[:8]}@contoso.example"),
    ).fetchone()["id"]
    job = conn.execute(
        "INSERT INTO sync_queue (business_id, store_id, sync_type, chunk_size, page_size)"
        " VALUES (%s, %s, 'full', 10, 10) RETURNING id",
        (BUSINESS, store),
    ).fetchone()["id"]
    conn.execute(
        "INSERT INTO chunked_sync_jobs (parent_sync_job_id, business_id, store_id, chunk_index,"
        " total_chunks, chunk_size, estimated_emails, max_attempts)"
        " SELECT %s, %s, %s, i, %s, 10, 10, %s FROM generate_series(1, %s) i",
        (job, BUSINESS, store, chunks, max_attempts, chunks),
    )
    return job


@pytest.fixture()
def conn(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def claim(conn: Any, job: uuid.UUID, worker: str) -> dict[str, Any] | None:
    """claim_chunk on the job's first unfinished chunk: the chunk row when claimed."""
    row = conn.execute(
        "SELECT min(chunk_index) AS i FROM chunked_sync_jobs"
        " WHERE parent_sync_job_id = %s AND status NOT IN ('completed', 'failed')",
        (job,),
    ).fetchone()
    claimed = claim_at(conn, job, row["i"], worker) if row["i"] is not None else None
    return claimed[2] if claimed and claimed[0] == "claimed" else None


def complete(conn: Any, chunk: dict[str, Any], worker: str, attempt: int | None = None) -> bool:
    row = conn.execute(
        "SELECT complete_chunk_job(%s, %s, %s, 10, 0, 1, 5, false) AS ok",
        (chunk["id"], worker, attempt if attempt is not None else chunk["attempts"]),
    ).fetchone()
    return bool(row["ok"])


def test_completion_is_fenced_on_worker_and_attempt(conn: Any) -> None:
    job = setup_job(conn)
    chunk = claim(conn, job, "w1")
    assert not complete(conn, chunk, "intruder")
    assert not complete(conn, chunk, "w1", attempt=chunk["attempts"] + 1)
    alive = conn.execute(
        "SELECT heartbeat_chunk(%s, 'intruder', %s) AS alive", (chunk["id"], chunk["attempts"])
    ).fetchone()
    assert alive["alive"] is False
    assert complete(conn, chunk, "w1")
    assert not complete(conn, chunk, "w1")  # once


def test_a_retryable_failure_waits_then_fails_after_max_attempts(conn: Any) -> None:
    job = setup_job(conn, max_attempts=2)
    chunk = claim(conn, job, "w1")
    status = conn.execute(
        "SELECT fail_chunk_job(%s, 'w1', 1, 'boom', 'throttled', true, 3600, 2, 10) AS s",
        (chunk["id"],),
    ).fetchone()["s"]
    assert status == "retrying"
    assert claim(conn, job, "w1") is None  # not before next_attempt_at
    conn.execute(
        "UPDATE chunked_sync_jobs SET next_attempt_at = now() WHERE id = %s", (chunk["id"],)
    )
    again = claim(conn, job, "w2")
    assert again["id"] == chunk["id"] and again["attempts"] == 2
    status = conn.execute(
        "SELECT fail_chunk_job(%s, 'w2', 2, 'boom', 'throttled', true, 0, 1, 10) AS s",
        (chunk["id"],),
    ).fetchone()["s"]
    assert status == "failed"  # attempts spent
    row = conn.execute("SELECT * FROM chunked_sync_jobs WHERE id = %s", (chunk["id"],)).fetchone()
    assert row["api_calls_made"] == 3 and row["error_category"] == "throttled"
    assert claim(conn, job, "w3")["chunk_index"] == 2  # a failed chunk does not block the rest


def blocked(conn: Any, pid: int) -> bool:
    """Whether the session pid waits for a lock another session holds."""
    return bool(conn.execute("SELECT pg_blocking_pids(%s) <> '{}' AS b", (pid,)).fetchone()["b"])


def test_a_chunk_has_one_holder_even_under_concurrent_claims(database_url: str, conn: Any) -> None:
    """A second claim of the same chunk waits for the first one's row lock, then finds it
    held: busy, not a second holder."""
    job = setup_job(conn)
    with (
        psycopg.connect(database_url, row_factory=dict_row) as a,
        psycopg.connect(database_url, row_factory=dict_row) as b,
        ThreadPoolExecutor(1) as pool,
    ):
        got_a = claim_at(a, job, 1, "a")  # a's transaction is still open: the row stays locked
        b_pid = b.info.backend_pid
        got_b = pool.submit(claim_at, b, job, 1, "b")
        # a commits only once b's claim waits for a's row lock (as the server reports it):
        # a claim that did not wait (SKIP LOCKED, no lock) would have answered by then.
        while not got_b.done() and not blocked(conn, b_pid):
            conn.execute("SELECT pg_sleep(0.01)")
        assert not got_b.done(), "the second claim did not wait for the first one's lock"
        a.commit()
        outcome_b = got_b.result(timeout=30)
        b.commit()
    assert got_a[0] == "claimed" and got_a[2]["worker_id"] == "a"
    assert outcome_b[0] == "busy" and outcome_b[2]["worker_id"] == "a"


def test_stuck_chunks_are_put_back_or_failed(conn: Any) -> None:
    job = setup_job(conn, max_attempts=1)
    chunk = claim(conn, job, "dead")
    conn.execute(
        "UPDATE chunked_sync_jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (chunk["id"],),
    )
    rows = conn.execute("SELECT * FROM cleanup_stuck_chunks(interval '30 seconds')").fetchall()
    assert [(r["chunk_id"], r["new_status"]) for r in rows] == [(chunk["id"], "failed")]
    row = conn.execute("SELECT * FROM chunked_sync_jobs WHERE id = %s", (chunk["id"],)).fetchone()
    assert row["error_category"] == "stuck" and row["worker_id"] is None


def test_finish_closes_a_job_only_when_all_chunks_finished(conn: Any) -> None:
    job = setup_job(conn, chunks=2, max_attempts=1)
    first = claim(conn, job, "w")
    assert complete(conn, first, "w")
    assert conn.execute("SELECT finish_sync_job(%s) AS s", (job,)).fetchone()["s"] == "pending"
    second = claim(conn, job, "w")
    conn.execute(
        "SELECT fail_chunk_job(%s, 'w', 1, 'x', 'bad_data', false, 0, 0, 0)", (second["id"],)
    )
    assert (
        conn.execute("SELECT finish_sync_job(%s) AS s", (job,)).fetchone()["s"] == "partial_failure"
    )
    progress = conn.execute("SELECT get_sync_job_progress(%s) AS p", (job,)).fetchone()["p"]
    assert progress["completed_chunks"] == 1 and progress["failed_chunks"] == 1
    assert progress["overall_status"] == "partial_failure" and progress["emails_processed"] == 10


def test_one_active_job_per_store(conn: Any) -> None:
    job = setup_job(conn)
    store = conn.execute("SELECT store_id FROM sync_queue WHERE id = %s", (job,)).fetchone()[
        "store_id"
    ]
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO sync_queue (business_id, store_id, sync_type, chunk_size, page_size)"
            " VALUES (%s, %s, 'full', 10, 10)",
            (BUSINESS, store),
        )


def claim_at(conn: Any, job: uuid.UUID, index: int, worker: str, stuck_after_s: float = 30) -> Any:
    """claim_chunk by index, as the sync task calls it: (outcome, wait_s, chunk row)."""
    row = conn.execute(
        "SELECT r.outcome, r.wait_s, (r.chunk).* FROM claim_chunk(%s, %s, %s,"
        " make_interval(secs => %s)) AS r",
        (job, index, worker, stuck_after_s),
    ).fetchone()
    return (row["outcome"], row["wait_s"], row) if row else None


def test_claim_chunk_takes_that_chunk_only_after_the_ones_before_it(conn: Any) -> None:
    job = setup_job(conn)
    assert claim_at(conn, job, 2, "w1")[0] == "blocked"
    outcome, _, first = claim_at(conn, job, 1, "w1")
    assert outcome == "claimed" and first["attempts"] == 1 and first["worker_id"] == "w1"
    assert claim_at(conn, job, 99, "w1") is None  # no such chunk
    assert complete(conn, first, "w1")
    assert claim_at(conn, job, 1, "w2")[0] == "finished"
    assert claim_at(conn, job, 2, "w2")[0] == "claimed"


def test_claim_chunk_waits_for_next_attempt_at_and_says_how_long(conn: Any) -> None:
    job = setup_job(conn, max_attempts=3)
    _, _, chunk = claim_at(conn, job, 1, "w1")
    conn.execute(
        "SELECT fail_chunk_job(%s, 'w1', 1, 'slow down', 'throttled', true, 120, 1, 5)",
        (chunk["id"],),
    )
    outcome, wait_s, row = claim_at(conn, job, 1, "w1")
    assert outcome == "not_due" and 100 < wait_s <= 120 and row["status"] == "retrying"
    conn.execute(
        "UPDATE chunked_sync_jobs SET next_attempt_at = now() WHERE id = %s", (chunk["id"],)
    )
    outcome, _, row = claim_at(conn, job, 1, "w1")
    assert outcome == "claimed" and row["attempts"] == 2


def test_claim_chunk_leaves_a_live_holder_alone_and_takes_back_an_expired_lease(conn: Any) -> None:
    job = setup_job(conn, max_attempts=3)
    _, _, chunk = claim_at(conn, job, 1, "w1")
    outcome, wait_s, row = claim_at(conn, job, 1, "w2", stuck_after_s=30)
    assert outcome == "busy" and 25 < wait_s <= 30 and row["worker_id"] == "w1"
    conn.execute(
        "UPDATE chunked_sync_jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = %s",
        (chunk["id"],),
    )
    outcome, _, row = claim_at(conn, job, 1, "w2", stuck_after_s=30)
    assert outcome == "claimed" and row["worker_id"] == "w2" and row["attempts"] == 2
    assert row["error_category"] == "stuck"  # why the first attempt ended
    assert not complete(conn, chunk, "w1")  # the old holder is fenced out


def test_claim_chunk_takes_back_its_own_workers_stale_claim_at_once(conn: Any) -> None:
    """A worker claiming a chunk it still holds lost that attempt (its process is the one
    asking): no waiting for the lease to expire."""
    job = setup_job(conn, max_attempts=3)
    claim_at(conn, job, 1, "w1")
    outcome, _, row = claim_at(conn, job, 1, "w1", stuck_after_s=3600)
    assert outcome == "claimed" and row["attempts"] == 2


def test_claim_chunk_fails_an_expired_chunk_whose_attempts_are_spent(conn: Any) -> None:
    job = setup_job(conn, max_attempts=1)
    _, _, chunk = claim_at(conn, job, 1, "w1")
    conn.execute(
        "UPDATE chunked_sync_jobs SET heartbeat_at = now() - interval '1 minute' WHERE id = %s",
        (chunk["id"],),
    )
    outcome, _, row = claim_at(conn, job, 1, "w2", stuck_after_s=30)
    assert outcome == "finished" and row["status"] == "failed" and row["error_category"] == "stuck"
    assert claim_at(conn, job, 2, "w2")[0] == "claimed"  # the job goes on past a failed chunk


def test_an_attempt_starts_in_one_transaction_as_its_jobs_tenant(
    conn: Any, database_url: str
) -> None:
    """claim_chunk as the sync task calls it (mailsync.sync.attempt): the claim, the job's newest
    checkpoint in the chunk's folder, the job and its store, in one pipelined transaction
    whose tenant is the job's own; another business's job is not there at all."""
    from mailsync.errors import InvalidInputError, StatementError
    from mailsync.store.db import Database
    from mailsync.sync.attempt import Worker, claim_chunk

    job = setup_job(conn, chunks=2)
    first = conn.execute(
        "SELECT id, store_id FROM chunked_sync_jobs"
        " WHERE parent_sync_job_id = %s AND chunk_index = 1",
        (job,),
    ).fetchone()
    for folder, processed in ((None, 5), (None, 7), ("elsewhere", 9)):
        conn.execute(
            "INSERT INTO sync_state_checkpoints (business_id, store_id, sync_job_id, chunk_id,"
            " chunk_index, folder_id, cursor, emails_processed, exhausted)"
            " VALUES (%s, %s, %s, %s, 1, %s, '{}', %s, false)",
            (BUSINESS, first["store_id"], job, first["id"], folder, processed),
        )
    status = (
        "SELECT status FROM chunked_sync_jobs WHERE parent_sync_job_id = %s AND chunk_index = %s"
    )
    worker = Worker("w1", heartbeat_s=10, stuck_after_s=30, retry_base_s=1, retry_max_s=10)
    with Database(database_url) as db:
        with pytest.raises(InvalidInputError, match="no sync job"):
            claim_chunk(db, job, 1, worker, business_id=uuid.uuid4())
        assert conn.execute(status, (job, 1)).fetchone()["status"] == "pending"
        with pytest.raises(InvalidInputError, match="no sync job"):
            claim_chunk(db, uuid.uuid4(), 1, worker)

        claim = claim_chunk(db, str(job), 1, worker)  # the task knows only the job id
        assert claim.chunk.status == "processing" and claim.chunk.attempts == 1
        assert claim.job.id == job and claim.store.id == first["store_id"]
        assert claim.position is not None and claim.position.emails_processed == 7
        assert complete(conn, {"id": claim.chunk.id, "attempts": claim.chunk.attempts}, "w1")
        assert claim_chunk(db, job, 1, worker, business_id=BUSINESS).position is None
        with pytest.raises(InvalidInputError, match="no chunk 9"):
            claim_chunk(db, job, 9, worker)

        # A statement refused in the pipeline rolls back all of it, the claim included,
        # and the connection goes back to the pool as it came.
        with pytest.raises(StatementError), db.pipelined(job_id=job) as pipeline:
            pipeline.send(
                "claim_chunk", job_id=job, chunk_index=2, worker_id="w1", stuck_after_s=30
            )
            pipeline.send("get_sync_job", job_id="not a uuid")
        assert conn.execute(status, (job, 2)).fetchone()["status"] == "pending"
        with db.pool.connection() as pooled:
            assert not pooled.autocommit
        assert db.one("get_sync_job", BUSINESS, job_id=job) is not None


def test_typed_rows_take_their_columns_and_name_a_missing_one(conn: Any, database_url: str) -> None:
    """``one_as``/``all_as``/``send_as`` read rows straight into their classes: the declared
    columns (a SELECT * with more is fine), pipelined too; a query without one of them is a
    MissingColumnsError naming it, not a row with a hole."""
    from mailsync.store.db import Database
    from mailsync.store.rows import JobRow, MissingColumnsError, StoreRow

    job = setup_job(conn, chunks=1)
    with Database(database_url) as db:
        row = db.one_as(JobRow, "get_sync_job", BUSINESS, job_id=job)
        assert isinstance(row, JobRow) and row.id == job and row.total_chunks is None
        assert row.status == "pending" and not row.windowed
        with db.pipelined(BUSINESS) as pipeline:
            sent = pipeline.send_as(StoreRow, "get_job_store", job_id=job)
            none = pipeline.send_as(JobRow, "get_sync_job", job_id=uuid.uuid4())
        store = sent.one()
        assert store is not None and store.id == row.store_id and store.registered_at is None
        assert none.one() is None
        assert db.all_as(JobRow, "get_sync_job", uuid.uuid4(), job_id=job) == []  # RLS
        # Raised while psycopg reads the pipeline's results, the error once left some of
        # them unread, and the connection refused its rollback (when they came late enough):
        # a hundred times over, the pool's connections stay usable.
        for _ in range(100):
            with pytest.raises(MissingColumnsError, match="store_id"):
                db.one_as(JobRow, "get_store", BUSINESS, store_id=row.store_id)
            again = db.one_as(JobRow, "get_sync_job", BUSINESS, job_id=job)
            assert again is not None and again.id == job
