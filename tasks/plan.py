"""Planning a job: here, in the calling run, and as the ``plan-chunks`` task when it must
be tried again.

Most plans are quick (a mailbox kept current: two Graph requests, a few statements), and
a task run of their own was a good part of such a sync's CPU: its engine, three state
events and a log line, for each mailbox of each cycle (docs/benchmark.md, issue 23). So
the plan is made in the flow's own run; only a retryable failure (a database blink,
throttling past the HTTP retries) hands it to the task, whose retries it gets as before.
Planning twice is safe: a planned job keeps its plan.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mailsync.errors import is_retryable
from mailsync.runtime import get_runtime
from mailsync.sync.jobs import load_job, load_store
from mailsync.sync.planning import plan_job
from mailsync.tasks.retry import MAINTENANCE_RETRIES


class Plan(NamedTuple):
    total_chunks: int
    estimated_emails: int  # messages to list in full
    max_attempts: int  # each chunk's


def plan_here(job_id: str, graph_url: str | None = None) -> Plan:
    """The job's plan, made in the calling run; a retryable failure goes to the
    ``plan-chunks`` task and its retries."""
    try:
        return _plan(job_id, graph_url)
    except Exception as exc:
        if not is_retryable(exc):
            raise
        get_run_logger().info("planning job %s failed (%s); retrying it as a task", job_id, exc)
        return plan_chunks(job_id, graph_url)


@task(name="plan-chunks", cache_policy=NO_CACHE, **MAINTENANCE_RETRIES)
def plan_chunks(job_id: str, graph_url: str | None = None) -> Plan:
    """The job's plan: total_chunks, estimated_emails and the chunks' max_attempts (a
    resumed job keeps the plan it had)."""
    return _plan(job_id, graph_url)


def _plan(job_id: str, graph_url: str | None) -> Plan:
    runtime = get_runtime()
    job = load_job(runtime.db, job_id)
    store = load_store(runtime.db, job)
    planned, max_attempts = plan_job(
        runtime.db,
        runtime.graph(graph_url),
        job,
        store,
        runtime.settings.max_attempts,
        runtime.prefetch,
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
