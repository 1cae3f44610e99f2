"""Task: count the job's window in Graph and plan its chunks."""

from __future__ import annotations

import logging
from typing import NamedTuple

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mailsync.runtime import get_runtime
from mailsync.sync.jobs import load_job, load_store
from mailsync.sync.planning import plan_job
from mailsync.tasks.retry import MAINTENANCE_RETRIES


class Plan(NamedTuple):
    total_chunks: int
    estimated_emails: int  # messages to list in full
    max_attempts: int  # each chunk's


@task(name="plan-chunks", cache_policy=NO_CACHE, **MAINTENANCE_RETRIES)
def plan_chunks(job_id: str, graph_url: str | None = None) -> Plan:
    """The job's plan: total_chunks, estimated_emails and the chunks' max_attempts (a
    resumed job keeps the plan it had)."""
    runtime = get_runtime()
    job = load_job(runtime.db, job_id)
    store = load_store(runtime.db, job)
    planned, max_attempts = plan_job(
        runtime.db, runtime.graph(graph_url), job, store, runtime.settings.max_attempts
    )
    get_run_logger().log(
        logging.INFO if planned.estimated_emails else logging.DEBUG,  # a poll: no news
        "job %s (%s): %s folders, %s messages to list in full, %s chunks, up to %s attempts each",
        job_id,
        planned.sync_type,
        planned.folders,
        planned.estimated_emails,
        planned.total_chunks,
        max_attempts,
    )
    assert planned.total_chunks is not None and planned.estimated_emails is not None
    return Plan(planned.total_chunks, planned.estimated_emails, max_attempts)
