"""Task: count the job's window in Graph and plan its chunks."""

from __future__ import annotations

from typing import Any

from mailsync.tasks.retry import only_retryable
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mailsync.jobs import load_job, load_store, plan_job
from mailsync.runtime import get_runtime


@task(name="plan-chunks", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=only_retryable)  # fmt: skip
def plan_chunks(job_id: str, graph_url: str | None = None) -> dict[str, Any]:
    runtime = get_runtime()
    job = load_job(runtime.db, job_id)
    store = load_store(runtime.db, job)
    planned = plan_job(
        runtime.db, runtime.graph(graph_url), job, store, runtime.settings.max_attempts
    )
    get_run_logger().info(
        "job %s: %s messages in the window, %s chunks of %s",
        job_id, planned["estimated_emails"], planned["total_chunks"], planned["chunk_size"],
    )  # fmt: skip
    return {
        "total_chunks": planned["total_chunks"],
        "estimated_emails": planned["estimated_emails"],
    }
