"""Flow: sync every mailbox of a business that Graph said changed, here, in threads.

Started by the relay's ``mailsync.mailbox.changed`` events (prefect.yaml's
``sync-changed/on-change`` trigger: one bucket per business, a run at the first event,
the business's other events of the next 5 s absorbed into it). Which mailboxes to sync
comes from Postgres, not from the events (``changed_mailboxes``: a notification newer than
the mailbox's newest job), so coalesced events lose nothing.

ask Postgres which mailboxes changed → sync each ready one in a thread of this process
(``sync_in_process``, sync-all's task: one process for every mailbox, instead of one
process start per mailbox) → ask again about every second while any runs, and while a
change is younger than the debounce → end when nothing runs and nothing waits.

- A burst is one sync: a mailbox is taken once its first notification is ``debounce_s``
  old.
- A change during a mailbox's sync leads to exactly one more, after it: the job is active
  until it ends (the question skips the mailbox), and then the notification is newer than
  that job. This run takes it if it still runs, else the next run does. The deployment runs
  one at a time (concurrency limit 1, ENQUEUE): an event during a run queues one. At its
  end the run cancels the queued runs its last question made redundant (cancel_queued_runs).
- Never two syncs of a mailbox at once: ``if_idle``, and the job's one-active-job rule.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from mailsync import validate
from mailsync.run_logs import forward_to_run_logs
from mailsync.runtime import get_runtime
from mailsync.sync.jobs import default_business_id
from mailsync.sync.registry import pool_size_for
from mailsync.tasks.sync_all import sync_in_process
from mailsync.tasks.sync_changed import cancel_queued_runs, changed_mailboxes

PARALLEL = 8  # mailboxes synced at once, in threads: their Graph and Postgres waits overlap
DEBOUNCE_S = 5.0  # a mailbox's first notification this old: the rest of its burst is in
ASK_EVERY_S = 1.0  # how soon a change that comes in during the run is seen
MAX_TAKING_S = 600.0  # then the run takes no more: an endless stream of changes is the
# next run's, so that this one ends and shows its outcome

CLOCK_MARGIN_S = 2.0  # the Prefect server's clock against this process's

_RUNNER = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=PARALLEL))


@flow(name="sync-changed", task_runner=_RUNNER, log_prints=False)
def sync_changed(
    business_id: str | None = None,
    limit: int = 1000,
    chunk_size: int | None = None,
    page_size: int | None = None,
    debounce_s: float = DEBOUNCE_S,
    max_taking_s: float = MAX_TAKING_S,
    asks_for_s: float = 0.0,
) -> dict[str, Any]:
    """Sync every mailbox of the business (default: the one of MAILSYNC_TENANT_ID) that has
    a change notification newer than its newest job, and those that get one while this
    runs. Returns each sync's outcome.

    ``asks_for_s``: the run ends no sooner than this long after its scheduled start, so that
    a trigger that starts it at once (no ``schedule_after``) still has it ask after every
    event the trigger absorbed (its ``within``, plus a margin for the clocks)."""
    forward_to_run_logs()  # mailsync's warnings in this run's logs (its syncs run here)
    runtime = get_runtime()
    runtime.reserve_db_connections(pool_size_for(PARALLEL))
    business = str(
        validate.business_id(business_id or default_business_id(runtime.settings.tenant_id))
    )
    overrides: dict[str, Any] = {
        "chunk_size": chunk_size,
        "page_size": page_size,
        "graph_url": runtime.settings.graph_url,
        "if_idle": True,  # a job already active (a poll's, a CLI's) is left alone
    }
    asks_until = _scheduled_start() + asks_for_s
    outcomes, last_asked = _sync_while_changing(
        business, limit, debounce_s, max_taking_s, asks_until, overrides
    )
    counts = dict(Counter(o["status"] for o in outcomes))
    get_run_logger().info("sync-changed: %s syncs: %s", len(outcomes), counts)
    cancelled = _cancel_redundant_runs(last_asked)
    return {
        "business_id": business,
        "mailboxes": outcomes,
        "counts": counts,
        "cancelled_runs": cancelled,
    }


def _sync_while_changing(
    business: str,
    limit: int,
    debounce_s: float,
    max_taking_s: float,
    asks_until: float,
    overrides: dict[str, Any],
) -> tuple[list[dict[str, Any]], datetime | None]:
    """Sync the changed mailboxes, asking again as each sync ends or every ASK_EVERY_S,
    until nothing runs, no change waits for its debounce, and ``asks_until`` (epoch s) has
    passed. The outcomes, and when the last question (the one that found nothing) began:
    None when the run stopped taking after ``max_taking_s``, as it then did not ask what
    changed since, and the queued runs must take that."""
    finished: queue.SimpleQueue[UUID] = queue.SimpleQueue()  # store ids, from the threads
    running: dict[UUID, PrefectFuture[dict[str, Any]]] = {}
    outcomes: list[dict[str, Any]] = []
    # Mailboxes whose sync opened no job (it failed before, or another job was active):
    # their changes still look new, and asking again every second would retry them in a
    # loop. Not again in this run; the next run, or the poll, tries again.
    left: set[UUID] = set()
    stop_taking = time.monotonic() + max_taking_s
    while True:
        waiting = False
        if time.monotonic() >= stop_taking:
            if not running:
                return outcomes, None
        else:
            asked = datetime.now(UTC)
            for change in changed_mailboxes(business, limit, debounce_s):
                store_id = change.store_id
                if store_id in running or store_id in left:  # running: its job maybe not open yet
                    continue
                if not change.ready:
                    waiting = True
                    continue
                future = sync_in_process.submit(change, overrides)
                future.add_done_callback(_announce(finished, store_id))
                running[store_id] = future
            if not running and not waiting and time.time() >= asks_until:
                return outcomes, asked
        for store_id in _ended(finished):
            outcome = running.pop(store_id).result()
            outcomes.append(outcome)
            if outcome.get("job_id") is None:
                left.add(store_id)


def _cancel_redundant_runs(last_asked: datetime | None) -> int:
    """In a deployment: its queued runs created before this run's last question to Postgres
    (less CLOCK_MARGIN_S, for the Prefect server's clock), cancelled; how many."""
    from prefect.runtime import deployment, flow_run

    if last_asked is None or not deployment.id:
        return 0
    before = last_asked - timedelta(seconds=CLOCK_MARGIN_S)
    try:
        cancelled = cancel_queued_runs(UUID(deployment.id), UUID(flow_run.id), before)
    except Exception as exc:  # they run and find nothing: a cost, not a loss
        get_run_logger().warning("could not cancel the queued runs: %s", exc)
        return 0
    if cancelled:
        get_run_logger().info("cancelled %s queued runs: their changes are synced", cancelled)
    return cancelled


def _scheduled_start() -> float:
    """When this flow run was scheduled to start (epoch s): a triggered run's is the moment
    its trigger fired plus schedule_after."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return float(scheduled.timestamp()) if scheduled is not None else time.time()


def _announce(
    finished: queue.SimpleQueue[UUID], store_id: UUID
) -> Callable[[PrefectFuture[dict[str, Any]]], None]:
    """A sync's done-callback (in its thread): its store id, for the flow's loop."""

    def done(_: PrefectFuture[dict[str, Any]]) -> None:
        finished.put(store_id)

    return done


def _ended(finished: queue.SimpleQueue[UUID]) -> list[UUID]:
    """The syncs that ended: at least one within ASK_EVERY_S (else none), and every other
    one that has ended by then."""
    try:
        ended = [finished.get(timeout=ASK_EVERY_S)]
    except queue.Empty:
        return []
    while not finished.empty():
        ended.append(finished.get_nowait())
    return ended
