"""The sync flow end to end: real Postgres, the simulator over real HTTP, real Prefect."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from prefect import flow

from mailsync.artifacts import mailbox_key
from mailsync.errors import (
    InvalidInputError,
    LeaseLostError,
    NotFoundError,
    SyncIncompleteError,
)
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.store.rows import JobRow
from mailsync.sync import attempt as attempt_module
from mailsync.sync import shutdown
from mailsync.sync.attempt import Worker, claim_chunk
from mailsync.sync.jobs import SyncRequest, begin_job, default_business_id, load_store, open_job
from mailsync.sync.planning import plan_job
from mailsync.sync.rounds import DeltaAttempt
from mailsync.tasks.sync_chunk import sync_chunk
from tests.e2e.helpers import wait_for

MAILBOX = "ada@contoso.example"


def stored_ids(url: str, mailbox: str = MAILBOX) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT e.graph_id FROM emails e JOIN stores s ON s.id = e.store_id"
            " WHERE s.mailbox = %s",
            (mailbox,),
        ).fetchall()
    return [r[0] for r in rows]


def chunks(url: str, job_id: str, kind: str = "delta") -> list[dict[str, Any]]:
    """The job's chunks of one kind: 'delta' (a folder's round, cut into chunks: a first
    sync) or 'window' (a sync window's keyset listing)."""
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT * FROM chunked_sync_jobs WHERE parent_sync_job_id = %s AND kind = %s"
            " ORDER BY chunk_index",
            (job_id, kind),
        ).fetchall()


def scalar(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


@pytest.fixture(autouse=True)
def _no_attachments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks, claims and faults are the subject here: attachments only where a test asks
    for them (fetching thousands of messages' files was most of these tests' time)."""
    monkeypatch.setenv("MAILSYNC_ATTACHMENTS", "none")


def test_full_sync_stores_exactly_the_mailbox(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 3000, seed=7)
    summary = sync_mailbox(
        mailbox=MAILBOX,
        chunk_size=700,
        page_size=100,
        graph_url=simulator.url,
        attachments="content",  # every message's, byte-exact: the product's default
    )

    assert summary["status"] == "completed"
    ids = stored_ids(database_url)
    assert len(ids) == len(set(ids)) == 3000
    assert set(ids) == box.ids()
    assert summary["emails_stored"] == summary["emails_in_mailbox"] == 3000
    rows = chunks(database_url, summary["job_id"])
    assert [c["chunk_index"] for c in rows] == [1, 2, 3, 4, 5]
    assert all(c["status"] == "completed" for c in rows)
    assert [c["emails_processed"] for c in rows] == [700, 700, 700, 700, 200]
    # in order: each chunk finished before the next one started
    for before, after in itertools.pairwise(rows):
        assert before["completed_at"] <= after["started_at"]
    assert all(c["api_calls_made"] > 0 for c in rows)
    # one read of the folder (30 pages), then its catch-up round; planning is counted apart
    assert sum(c["api_calls_made"] for c in rows) == 30 + 1
    assert summary["api_calls"] > 31
    attachments = scalar(database_url, "SELECT count(*) FROM email_attachments")
    expected = sum(len(m.attachments) for m in box.messages())
    assert attachments == expected > 0


def test_replaying_a_sync_and_a_chunk_adds_no_row(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    simulator.add_mailbox(MAILBOX, 1200, seed=3)
    first = sync_mailbox(mailbox=MAILBOX, chunk_size=500, page_size=100, graph_url=simulator.url)
    synced_at = scalar(database_url, "SELECT max(last_synced_at) FROM emails")

    # Replay chunk 2: back to pending, the job's position rewound to where chunk 1 ended.
    with psycopg.connect(database_url) as conn:
        chunk2 = conn.execute(
            "SELECT id FROM chunked_sync_jobs WHERE parent_sync_job_id = %s AND chunk_index = 2",
            (first["job_id"],),
        ).fetchone()[0]
        conn.execute("DELETE FROM sync_state_checkpoints WHERE chunk_index >= 2")
        conn.execute(
            "UPDATE chunked_sync_jobs SET status = 'pending', attempts = 0,"
            " checkpoint_data = '{}' WHERE parent_sync_job_id = %s AND chunk_index >= 2",
            (first["job_id"],),
        )
        conn.execute("UPDATE sync_queue SET status = 'running' WHERE id = %s", (first["job_id"],))
    replay = sync_mailbox(job_id=first["job_id"], graph_url=simulator.url)
    assert replay["status"] == "completed"
    assert (
        scalar(database_url, "SELECT status FROM chunked_sync_jobs WHERE id = %s", chunk2)
        == "completed"
    )

    second = sync_mailbox(mailbox=MAILBOX, chunk_size=500, page_size=100, graph_url=simulator.url)
    assert second["job_id"] != first["job_id"] and second["status"] == "completed"
    assert len(stored_ids(database_url)) == 1200
    # identical messages are not even rewritten
    assert scalar(database_url, "SELECT max(last_synced_at) FROM emails") == synced_at


def test_a_changed_message_is_updated_not_duplicated(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 300, seed=5)
    sync_mailbox(mailbox=MAILBOX, chunk_size=300, page_size=100, graph_url=simulator.url)
    target = box.messages()[10]
    with psycopg.connect(database_url) as conn:  # our copy goes stale: Graph's differs now
        conn.execute(
            "UPDATE emails SET subject = 'stale', content_hash = 'old' WHERE graph_id = %s",
            (target.id,),
        )
    # A full re-sync lists every message again (an incremental one would ask Graph only what
    # changed, and Graph's copy did not change).
    sync_mailbox(mailbox=MAILBOX, chunk_size=300, page_size=100, graph_url=simulator.url, full=True)
    assert len(stored_ids(database_url)) == 300
    subject = scalar(database_url, "SELECT subject FROM emails WHERE graph_id = %s", target.id)
    assert subject == target.subject != "stale"
    assert (
        scalar(database_url, "SELECT count(*) FROM emails WHERE last_synced_at > first_synced_at")
        == 1
    )


def test_a_429_storm_still_completes(runtime: Any, simulator: Any, database_url: str) -> None:
    box = simulator.add_mailbox(MAILBOX, 2000, seed=11)
    simulator.faults.retry_after_s = 0.02
    # After two pages, more 429s than one request's 7 tries: one chunk attempt fails.
    simulator.faults.throttle_burst = 10
    simulator.faults.throttle_after_pages = 2
    summary = sync_mailbox(mailbox=MAILBOX, chunk_size=500, page_size=250, graph_url=simulator.url)
    assert summary["status"] == "completed"
    assert set(stored_ids(database_url)) == box.ids()
    assert simulator.stats.by_status.get(429, 0) == 10
    rows = chunks(database_url, summary["job_id"])
    assert max(c["attempts"] for c in rows) == 2  # the storm outlasted one attempt
    assert sum(c["api_calls_made"] for c in rows) >= 10  # throttled requests are counted


def test_token_expiry_mid_sync_refreshes_and_completes(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 2000, seed=13)
    simulator.faults.expire_tokens_after_pages = 3
    summary = sync_mailbox(mailbox=MAILBOX, chunk_size=500, page_size=100, graph_url=simulator.url)
    assert simulator.faults.expire_tokens_after_pages is None  # it fired
    assert summary["status"] == "completed"
    assert set(stored_ids(database_url)) == box.ids()
    assert simulator.stats.by_status.get(401, 0) >= 1
    assert simulator.stats.token_requests >= 2


def test_mail_added_and_deleted_during_the_sync(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 2500, seed=17)
    initial = set(box.ids())
    simulator.faults.mutate_every_pages = 2
    simulator.faults.add_per_mutation = 7
    simulator.faults.delete_per_mutation = 9
    summary = sync_mailbox(mailbox=MAILBOX, chunk_size=600, page_size=100, graph_url=simulator.url)
    assert summary["status"] == "completed"
    assert box.deleted_ids and box.added_ids  # the mailbox really changed under us
    ids = stored_ids(database_url)
    assert len(ids) == len(set(ids))  # nothing twice
    present_throughout = initial - box.deleted_ids
    assert present_throughout <= set(ids)  # nothing present throughout is lost
    assert set(ids) <= initial | box.added_ids


def test_a_date_range_sync_stores_only_its_window(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    box = simulator.add_mailbox(MAILBOX, 2000, seed=19)
    times = sorted(m.receivedDateTime for m in box.messages())
    start, end = times[500], times[1500]
    summary = sync_mailbox(
        mailbox=MAILBOX,
        sync_from=start,
        sync_to=end,
        chunk_size=300,
        page_size=100,
        graph_url=simulator.url,
    )
    expected = {m.id for m in box.messages() if start <= m.receivedDateTime < end}
    assert summary["status"] == "completed" and summary["sync_type"] == "date_range"
    assert set(stored_ids(database_url)) == expected
    assert summary["emails_in_mailbox"] == len(expected)
    # A window is listed by keyset chunks of kind 'window', no delta round at all.
    window = chunks(database_url, summary["job_id"], "window")
    assert len(window) == summary["chunks_total"] >= 2
    assert chunks(database_url, summary["job_id"], "delta") == []


def test_an_unknown_mailbox_fails_the_job_clearly(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    with pytest.raises(NotFoundError, match="ErrorInvalidUser"):
        sync_mailbox(mailbox="nobody@contoso.example", graph_url=simulator.url)
    assert (
        scalar(database_url, "SELECT status || '/' || error_category FROM sync_queue")
        == "failed/not_found"
    )
    assert scalar(database_url, "SELECT count(*) FROM chunked_sync_jobs") == 0
    assert scalar(database_url, "SELECT count(*) FROM emails") == 0


def test_an_invalid_date_range_writes_nothing(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    simulator.add_mailbox(MAILBOX, 10)
    with pytest.raises(InvalidInputError, match="not before"):
        sync_mailbox(
            mailbox=MAILBOX, sync_from="2024-05-01", sync_to="2024-04-01", graph_url=simulator.url
        )
    assert scalar(database_url, "SELECT count(*) FROM sync_queue") == 0
    assert scalar(database_url, "SELECT count(*) FROM stores") == 0


def test_a_malformed_page_fails_its_chunk_as_bad_data(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    simulator.add_mailbox(MAILBOX, 1000, seed=23)
    simulator.faults.malformed_page_at = 5  # chunk 2's first page (3 pages a chunk, +count)
    simulator.faults.malformed_persistent = False
    with pytest.raises(SyncIncompleteError, match="ended partial_failure: 1 of") as incomplete:
        sync_mailbox(mailbox=MAILBOX, chunk_size=300, page_size=100, graph_url=simulator.url)
    summary = incomplete.value.summary  # the flow run fails, the summary rides along
    rows = chunks(database_url, summary["job_id"])
    failed = [c for c in rows if c["status"] == "failed"]
    assert [c["error_category"] for c in failed] == ["bad_data"]
    assert failed[0]["attempts"] == 1  # bad data is not retried
    assert "not valid JSON" in failed[0]["error_message"]
    assert summary["status"] == "partial_failure"
    ids = stored_ids(database_url)
    assert len(ids) == len(set(ids))


def test_a_message_off_the_shape_is_counted_failed_and_the_rest_stored(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """A delta page that is valid JSON with one message Graph sent without its time: that
    message is counted failed, its page's others and every other page are stored."""
    box = simulator.add_mailbox(MAILBOX, 1000, seed=29)
    simulator.faults.untimed_message_in_delta_page_at = 3
    summary = sync_mailbox(mailbox=MAILBOX, chunk_size=400, page_size=100, graph_url=simulator.url)
    simulator.faults.untimed_message_in_delta_page_at = None
    rows = chunks(database_url, summary["job_id"])
    assert sum(c["emails_failed"] for c in rows) == 1
    assert sum(c["emails_processed"] for c in rows) == 999
    assert summary["emails_failed"] == 1, summary
    assert summary["status"] == "completed"  # a message Graph sent broken is not a job failure
    ids = stored_ids(database_url)
    assert len(ids) == len(set(ids)) == 999
    assert set(ids) < box.ids()


def test_resuming_takes_back_a_dead_workers_chunk(
    runtime: Any, simulator: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailsync.runtime import reset_runtime

    box = simulator.add_mailbox(MAILBOX, 900, seed=29)
    first = sync_mailbox(mailbox=MAILBOX, chunk_size=300, page_size=100, graph_url=simulator.url)
    # Rewind: chunk 2 held by a worker that died 10 minutes ago, mid-chunk.
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM sync_state_checkpoints WHERE chunk_index >= 2")
        conn.execute(
            "UPDATE chunked_sync_jobs SET status = CASE chunk_index WHEN 2 THEN 'processing'"
            " ELSE 'pending' END, worker_id = CASE chunk_index WHEN 2 THEN 'dead:1' END,"
            " heartbeat_at = CASE chunk_index WHEN 2 THEN now() - interval '10 minutes' END,"
            " attempts = CASE chunk_index WHEN 2 THEN 1 ELSE 0 END, checkpoint_data = '{}'"
            " WHERE parent_sync_job_id = %s AND chunk_index >= 2",
            (first["job_id"],),
        )
        conn.execute("UPDATE sync_queue SET status = 'running' WHERE id = %s", (first["job_id"],))
    monkeypatch.setenv("MAILSYNC_STUCK_AFTER_S", "5")
    reset_runtime()
    resumed = sync_mailbox(mailbox=MAILBOX, chunk_size=300, page_size=100, graph_url=simulator.url)
    assert resumed["job_id"] == first["job_id"]  # the store's unfinished job, not a new one
    assert resumed["status"] == "completed"
    rows = chunks(database_url, first["job_id"])
    assert rows[1]["attempts"] == 2 and rows[1]["worker_id"] != "dead:1"
    assert set(stored_ids(database_url)) == box.ids()


def open_inbox_job(runtime: Any, **options: Any) -> JobRow:
    """A new job for the mailbox's inbox, opened as the flow opens one (not planned yet)."""
    job, _ = begin_job(
        runtime.db,
        runtime.settings,
        mailbox=MAILBOX,
        folder="inbox",
        business_id=None,
        sync_from=None,
        sync_to=None,
        job_id=None,
        **{"chunk_size": None, "page_size": None, **options},
    )
    return job


def test_a_job_the_cli_opened_is_started_by_its_first_run_and_resumed_by_later_ones(
    runtime: Any, database_url: str
) -> None:
    """The CLI opens a job, then runs the flow on its id: that first run starts the job
    ("starting job" in the run's log), only a later run of the same job resumes it."""
    request = SyncRequest.checked(
        business_id=default_business_id(runtime.settings.tenant_id),
        mailbox=MAILBOX,
        folder="inbox",
        sync_from=None,
        sync_to=None,
        chunk_size=100,
        page_size=100,
    )
    job, _ = open_job(runtime.db, request)
    by_id = dict(
        mailbox=None, folder="all", business_id=None, sync_from=None, sync_to=None,
        chunk_size=None, page_size=None, job_id=str(job.id),
    )  # fmt: skip
    first, resumed_first = begin_job(runtime.db, runtime.settings, **by_id)
    again, resumed_again = begin_job(runtime.db, runtime.settings, **by_id)

    assert (resumed_first, resumed_again) == (False, True)
    assert first.id == again.id == job.id and again.status == "running"


@flow
def run_one_chunk(job_id: str, chunk_index: int, graph_url: str) -> dict[str, Any]:
    return sync_chunk(job_id, chunk_index, graph_url)


def test_a_process_that_plans_a_running_job_again_presumes_nothing(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """Two `mailsync sync` for one mailbox: both find the store's job, and the one that read
    it before the other's plan committed plans it again. Only the plan that is recorded may
    presume the folder's messages removed: the second one's presumption, after chunk 1 has
    shown its messages, would have them marked deleted when the job ends."""
    box = simulator.add_mailbox(MAILBOX, 600, seed=31)
    options = {"chunk_size": 200, "page_size": 100}
    sync_mailbox(mailbox=MAILBOX, folder="inbox", graph_url=simulator.url, **options)
    job = open_inbox_job(runtime, full=True, **options)
    store, graph = load_store(runtime.db, job), runtime.graph(simulator.url)
    first = plan_job(runtime.db, graph, job, store, 3).job
    assert first.total_chunks == 3
    assert run_one_chunk(str(job.id), 1, simulator.url)["emails_processed"] == 200

    again = plan_job(runtime.db, graph, job, store, 3).job  # the job as the second process read

    assert again.id == job.id and again.total_chunks == 3
    summary = sync_mailbox(job_id=str(job.id), graph_url=simulator.url)
    assert summary["status"] == "completed" and summary["emails_deleted"] == 0
    live = scalar(database_url, "SELECT count(*) FROM emails WHERE deleted_at IS NULL")
    assert live == len(box.ids()) == 600


def first_chunks_attempt(
    runtime: Any, simulator: Any, worker_id: str, *, seed: int, chunk_size: int
) -> DeltaAttempt:
    """An attempt at chunk 1 of a 300-message inbox (pages of 100), claimed by ``worker_id``
    and not run yet."""
    simulator.add_mailbox(MAILBOX, 300, seed=seed)
    job = open_inbox_job(runtime, chunk_size=chunk_size, page_size=100)
    graph = runtime.graph(simulator.url)
    plan_job(runtime.db, graph, job, load_store(runtime.db, job), 3)
    worker = Worker.of(runtime.settings, worker_id)
    claim = claim_chunk(runtime.db, str(job.id), 1, worker)
    assert claim.position is not None
    return DeltaAttempt(
        runtime.db,
        graph,
        claim.job,
        claim.store,
        worker,
        claim.chunk,
        claim.position,
        prefetch=runtime.prefetch,
    )


OPEN_TRANSACTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND state LIKE 'idle in transaction%%'"
)


def test_a_claim_names_its_chunks_folder_as_a_person_reads_it(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """The run's log says which folder a chunk is on by its path, not its Graph id."""
    simulator.add_mailbox(MAILBOX, 50, seed=47)
    job = open_inbox_job(runtime, chunk_size=50, page_size=50)
    graph = runtime.graph(simulator.url)
    plan_job(runtime.db, graph, job, load_store(runtime.db, job), 3)
    claim = claim_chunk(runtime.db, str(job.id), 1, Worker.of(runtime.settings, "w"))
    assert claim.chunk.folder_id.startswith("AAMk")  # what the log said before
    assert (claim.folder_path, claim.folder) == ("Inbox", "Inbox")


def take_the_claim(conn: psycopg.Connection[Any], chunk_id: Any) -> None:
    """What recovery and another worker's claim do to a chunk: a new holder, a new attempt."""
    conn.execute(
        "UPDATE chunked_sync_jobs SET worker_id = 'another', attempts = attempts + 1 WHERE id = %s",
        (chunk_id,),
    )


def test_a_page_of_a_claim_that_is_gone_commits_nothing(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """The page's fence fails its transaction in the database (its statements travel with
    the commit): a worker whose chunk recovery gave to another writes no row, checkpoint or
    progress, and is told its lease is lost."""
    attempt = first_chunks_attempt(
        runtime, simulator, "worker-that-lost-it", seed=37, chunk_size=100
    )
    with psycopg.connect(database_url) as conn:  # recovery took it back; another claimed it
        take_the_claim(conn, attempt.chunk.id)

    with pytest.raises(LeaseLostError, match="no longer held by worker worker-that-lost-it"):
        attempt.run()

    assert scalar(database_url, "SELECT count(*) FROM emails") == 0
    assert scalar(database_url, "SELECT count(*) FROM sync_state_checkpoints") == 0
    assert scalar(database_url, "SELECT count(*) FROM email_removals") == 0
    chunk = "SELECT emails_processed, checkpoint_data FROM chunked_sync_jobs WHERE id = %s"
    with psycopg.connect(database_url) as conn:
        processed, progress = conn.execute(chunk, (attempt.chunk.id,)).fetchone()  # type: ignore[misc]
    assert processed == 0 and "pages" not in progress


def test_a_claim_lost_while_a_page_waits_in_its_fence_rolls_that_page_back(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """Page 1's transaction has its rows in and waits for the chunk's row lock in its fence
    (recovery holds it); recovery gives the chunk to another worker: page 1 is rolled back,
    nothing of it, no checkpoint, no transaction left open, and the attempt is told."""
    attempt = first_chunks_attempt(
        runtime, simulator, "worker-about-to-lose-it", seed=41, chunk_size=300
    )
    fenced = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%%record_chunk_page%%'"
    )
    with (
        ThreadPoolExecutor(1) as thread,
        psycopg.connect(database_url) as recovery,
        psycopg.connect(database_url, autocommit=True) as watch,  # a fresh view each time
    ):
        recovery.execute(  # the chunk's row lock, as recovery holds it while it decides
            "SELECT 1 FROM chunked_sync_jobs WHERE id = %s FOR UPDATE", (attempt.chunk.id,)
        )
        running = thread.submit(attempt.run)
        wait_for(
            "page 1 waiting in its fence",
            lambda: (row := watch.execute(fenced).fetchone()) is not None and row[0] == 1,
            timeout_s=30,
        )
        take_the_claim(recovery, attempt.chunk.id)
        recovery.commit()
        with pytest.raises(LeaseLostError, match="no longer held by worker worker-about-to"):
            running.result(timeout=60)

    assert scalar(database_url, "SELECT count(*) FROM emails") == 0
    assert scalar(database_url, "SELECT count(*) FROM sync_state_checkpoints") == 0
    assert scalar(database_url, OPEN_TRANSACTIONS) == 0


def test_a_stop_that_lands_inside_a_pages_transaction_leaves_no_transaction_open(
    runtime: Any, simulator: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop (Prefect's SIGTERM handler raises in the main thread, wherever it is) that
    lands while page 2's rows are being written: page 2's transaction is rolled back and
    its connection returned at once, page 1 stays whole, and the chunk is given back, its
    attempt not counted."""
    attempt = first_chunks_attempt(
        runtime, simulator, "worker-told-to-stop", seed=43, chunk_size=300
    )
    write = attempt_module.write_messages
    pages: list[int] = []

    def stopped_in_the_second(session: Any, **page: Any) -> Any:
        pages.append(len(page["messages"]))
        if len(pages) == 2:
            raise KeyboardInterrupt("SIGTERM")  # as if it landed in the page's transaction
        return write(session, **page)

    monkeypatch.setattr(attempt_module, "write_messages", stopped_in_the_second)
    # The traceback is held (bound to ``stopped`` until the test ends), as a stopping
    # worker's frames are: the page's transaction may not wait for them to be collected.
    with pytest.raises(KeyboardInterrupt, match="SIGTERM") as stopped:  # noqa: F841
        attempt.run()

    assert scalar(database_url, OPEN_TRANSACTIONS) == 0
    # The requests on their way stay for the next chunk, and each takes a connection for
    # Graph's limits (its slot) as it ends: wait for them, then count what is checked out.
    runtime.prefetch.close()
    pool = runtime.db.pool.get_stats()
    assert pool["pool_available"] == pool["pool_size"]  # no connection left checked out
    assert scalar(database_url, "SELECT count(*) FROM emails") == 100  # page 1, not page 2
    chunk = "SELECT status, attempts FROM chunked_sync_jobs WHERE id = %s"
    with psycopg.connect(database_url) as conn:
        assert conn.execute(chunk, (attempt.chunk.id,)).fetchone() == ("pending", 0)


def test_a_stop_while_a_graph_request_hangs_releases_the_chunk_without_waiting_for_it(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    """The round's first request is held by Graph (the simulator holds it until told); a
    stop asked then, as SIGTERM and Ctrl-C ask it, wakes the attempt's wait on that page:
    the chunk is released (pending, no holder, its attempt not counted), nothing written,
    no transaction left open, all while the request is still held."""
    attempt = first_chunks_attempt(runtime, simulator, "worker-stopped", seed=53, chunk_size=300)
    simulator.faults.hold_timeout_s = 600.0  # longer than anything below waits
    simulator.faults.hold_after_pages = 0  # the chunk's first page is held
    try:
        with ThreadPoolExecutor(1) as thread:
            running = thread.submit(attempt.run)
            assert simulator.faults.wait_held(60)
            shutdown.request_stop()
            with pytest.raises(shutdown.StopRequested):
                running.result(timeout=120)

            chunk = (
                "SELECT status, worker_id, attempts, emails_processed"
                " FROM chunked_sync_jobs WHERE id = %s"
            )
            with psycopg.connect(database_url) as conn:
                row = conn.execute(chunk, (attempt.chunk.id,)).fetchone()
            assert row == ("pending", None, 0, 0)
            assert scalar(database_url, "SELECT count(*) FROM emails") == 0
            assert scalar(database_url, OPEN_TRANSACTIONS) == 0
            assert simulator.faults.wait_held(0)  # the page's request: still held
    finally:
        simulator.faults.release_held()
        shutdown.clear()


def test_the_progress_artifact_is_the_flow_runs_and_reaches_100_percent(
    runtime: Any, simulator: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sync worth watching (here: any that has chunks left after its first) gets one. It
    # is written by a thread of its own (reporting never holds up the sync): still the flow
    # run's, and its last value is the last chunk's.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    monkeypatch.setenv("MAILSYNC_PROGRESS_AFTER_S", "0")
    simulator.add_mailbox(MAILBOX, 600, seed=9)
    state = sync_mailbox(
        mailbox=MAILBOX, chunk_size=200, page_size=100, graph_url=simulator.url, return_state=True
    )
    assert state.is_completed()
    run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=run_filter)
    progress = [a for a in artifacts if a.type == "progress"]
    assert len(progress) == 1 and float(progress[0].data) == 100.0
    [table] = [a for a in artifacts if a.type == "table"]
    assert table.key == mailbox_key(MAILBOX) == "mailbox-ada--contoso-example"
    assert table.description and "+600" in table.description


def test_a_quick_sync_has_no_progress_artifact_and_a_no_change_one_a_small_table(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    simulator.add_mailbox(MAILBOX, 300, seed=19)
    runs = [
        sync_mailbox(mailbox=MAILBOX, chunk_size=100, graph_url=simulator.url, return_state=True)
        for _ in range(2)  # the first copies 300 messages, the second finds nothing new
    ]
    assert [run.result()["emails_added"] for run in runs] == [300, 0]
    ids = [run.state_details.flow_run_id for run in runs]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
        )
    by_run = {run_id: [a for a in artifacts if a.flow_run_id == run_id] for run_id in ids}
    # Default threshold (10 s): neither sync ran long enough for a progress bar.
    assert [[a.type for a in by_run[run_id]] for run_id in ids] == [["table"], ["table"]]
    first, second = by_run[ids[0]][0], by_run[ids[1]][0]
    assert first.key == second.key == mailbox_key(MAILBOX)  # two versions of one key
    assert len(first.data) > 0 and second.data in ([], "[]")  # type: ignore[arg-type]
    assert second.description and "nothing changed" in second.description
