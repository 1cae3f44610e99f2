"""Task: one attempt at one chunk. The chunk row decides retries; Prefect re-enters."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mailsync.config import default_worker_id
from mailsync.runtime import get_runtime
from mailsync.sync.attempt import ChunkOutcome, WindowAttempt, Worker, claim_chunk
from mailsync.sync.rounds import DeltaAttempt
from mailsync.tasks.retry import only_retryable

WORKER_ID = default_worker_id()  # one per process: host:pid:random


# retries are set by the flow from the plan (the chunks' max_attempts); no delay here: the
# claim waits until the chunk row's next_attempt_at.
@task(
    name="sync-chunk",
    task_run_name="chunk-{chunk_index}",
    cache_policy=NO_CACHE,
    retry_condition_fn=only_retryable,
)
def sync_chunk(job_id: str, chunk_index: int, graph_url: str | None = None) -> dict[str, Any]:
    runtime = get_runtime()
    worker = Worker.of(runtime.settings, WORKER_ID)
    claim = claim_chunk(runtime.db, job_id, chunk_index, worker)  # one transaction
    chunk = claim.chunk
    if claim.position is None:  # finished by an earlier run of this job
        return asdict(ChunkOutcome.of_chunk(chunk))
    logger = get_run_logger()
    # Quiet when there is nothing to tell: a poll of 10,000 mailboxes that found no change
    # must not write two lines per folder (a retry, messages, failures are news).
    logger.log(
        logging.INFO if chunk.attempts > 1 else logging.DEBUG,
        "chunk %s/%s (%s, %s): attempt %s",
        chunk_index,
        chunk.total_chunks,
        chunk.kind,
        claim.folder,
        chunk.attempts,
    )
    kind = DeltaAttempt if chunk.kind == "delta" else WindowAttempt
    graph = runtime.graph(graph_url)
    attempt = kind(
        runtime.db,
        graph,
        claim.job,
        claim.store,
        worker,
        chunk,
        claim.position,
        prefetch=runtime.prefetch,
    )
    outcome = attempt.run()
    logger.log(
        logging.INFO if outcome.emails_processed or outcome.emails_failed else logging.DEBUG,
        "chunk %s: %s messages, %s failed, %s API calls, %s ms",
        chunk_index,
        outcome.emails_processed,
        outcome.emails_failed,
        outcome.api_calls,
        outcome.processing_time_ms,
    )
    return asdict(outcome)
