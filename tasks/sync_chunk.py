"""Task: one attempt at one chunk. Prefect retries it; the chunk row keeps the truth."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mailsync.tasks.retry import only_retryable
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mailsync.chunks import ChunkContext, chunk_row, claim, outcome_of, run_chunk
from mailsync.config import default_worker_id
from mailsync.jobs import load_job, load_store
from mailsync.runtime import get_runtime

WORKER_ID = default_worker_id()  # one per process: host:pid:random


@task(name="sync-chunk", task_run_name="chunk-{chunk_index}", cache_policy=NO_CACHE,
      retry_condition_fn=only_retryable)  # fmt: skip
def sync_chunk(job_id: str, chunk_index: int, graph_url: str | None = None) -> dict[str, Any]:
    runtime = get_runtime()
    settings = runtime.settings
    job = load_job(runtime.db, job_id)
    ctx = ChunkContext(
        db=runtime.db,
        graph=runtime.graph(graph_url),
        job=job,
        store=load_store(runtime.db, job),
        worker_id=WORKER_ID,
        heartbeat_s=settings.heartbeat_s,
        stuck_after_s=settings.stuck_after_s,
        retry_base_s=settings.retry_base_s,
        retry_max_s=settings.retry_max_s,
    )
    chunk = claim(ctx, chunk_index)
    if chunk is None:  # finished by an earlier run of this job
        return asdict(outcome_of(chunk_row(runtime.db, job, chunk_index)))
    logger = get_run_logger()
    logger.info("chunk %s/%s: attempt %s", chunk_index, chunk["total_chunks"], chunk["attempts"])
    outcome = run_chunk(ctx, chunk)
    logger.info(
        "chunk %s: %s messages, %s failed, %s API calls, %s ms",
        chunk_index, outcome.emails_processed, outcome.emails_failed, outcome.api_calls,
        outcome.processing_time_ms,
    )  # fmt: skip
    return asdict(outcome)
