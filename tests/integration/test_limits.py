"""Graph's limits held in Postgres (mailsync/graph/limits.py): real database, real HTTP.

Two limiters with their own pools stand for two workers; the simulator enforces the same
limits Graph does and counts every request over them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from mailsync.config import Settings, load_settings
from mailsync.graph.client import GraphClient
from mailsync.graph.limits import GraphLimiter
from mailsync.store.db import Database


@pytest.fixture()
def pools(database_url: str) -> Iterator[list[Database]]:
    """Two pools on the test's database: two workers."""
    dbs = [Database(database_url, max_size=6), Database(database_url, max_size=6)]
    yield dbs
    for db in dbs:
        db.close()


def limiters(pools: list[Database], **limits: Any) -> list[GraphLimiter]:
    settings: Settings = replace(load_settings(), tenant_id="t", client_id="c", **limits)
    return [GraphLimiter(lambda db=db: db, settings) for db in pools]  # type: ignore[misc]


def test_the_in_flight_limit_holds_across_workers_and_per_mailbox(pools: list[Database]) -> None:
    workers = limiters(pools, graph_mailbox_concurrency=4)
    in_flight: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()

    def requests(worker: GraphLimiter, mailbox: str) -> None:
        for _ in range(6):
            with worker.slot(f"{mailbox}@contoso.example"):
                with lock:
                    in_flight[mailbox] += 1
                    peak[mailbox] = max(peak[mailbox], in_flight[mailbox])
                time.sleep(0.05)  # the request's time at Graph
                with lock:
                    in_flight[mailbox] -= 1

    # Ten threads per mailbox, half on each worker: six of them always waiting.
    with ThreadPoolExecutor(20) as pool:
        jobs = [pool.submit(requests, workers[i % 2], "ab"[i // 10]) for i in range(20)]
        for job in jobs:
            job.result()

    assert max(peak.values()) == 4 and min(peak.values()) >= 2  # used, never a fifth
    assert all(p <= 4 for p in peak.values())


def test_the_request_budget_holds_in_every_window(pools: list[Database]) -> None:
    workers = limiters(pools, graph_mailbox_requests=20, graph_mailbox_window_s=1.0)
    taken: list[float] = []
    lock = threading.Lock()

    def keep_asking(worker: GraphLimiter) -> None:
        # A count, not a deadline: 36 slots (1.8 budgets) however slow the machine is.
        for _ in range(9):
            with worker.slot("busy@contoso.example"):
                with lock:
                    taken.append(time.monotonic())

    with ThreadPoolExecutor(4) as pool:
        for job in [pool.submit(keep_asking, workers[i % 2]) for i in range(4)]:
            job.result()

    taken.sort()
    busiest = max(sum(1 for t in taken if start <= t < start + 1.0) for start in taken)
    assert busiest <= 20
    assert len(taken) == 36
    usage = {row["key"]: row for row in pools[0].all("graph_limit_usage")}
    mailbox = usage[workers[0].mailbox_limit("busy@contoso.example").key]
    # Every slot counted once. Whether any had to wait depends on how fast this machine
    # asks (under load it may not outrun 20 a second): not asserted, the window above is.
    assert mailbox["requests"] == len(taken)


def test_a_pause_holds_back_that_mailbox_only(pools: list[Database], database_url: str) -> None:
    """A 429 pauses its mailbox for every worker: another mailbox gets its slot without a
    wait; the paused one waits, and gets its slot only once the pause has ended (by the
    database's clock, the one the limiter reads)."""
    first, second = limiters(pools)
    throttled = first.mailbox_limit("throttled@contoso.example").key
    other = first.mailbox_limit("other@contoso.example").key
    with first.slot("throttled@contoso.example") as slot:
        slot.throttled(1.0)  # Graph's 429 with Retry-After: 1

    def pause_over() -> bool:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT paused_until <= clock_timestamp() FROM graph_limits WHERE key = %s",
                (throttled,),
            ).fetchone()
        return bool(row and row[0])

    with second.slot("other@contoso.example"):
        pass
    with second.slot("throttled@contoso.example"):
        over = pause_over()

    usage = {row["key"]: row for row in pools[0].all("graph_limit_usage")}
    assert usage[other]["waits"] == 0  # not held back by the other mailbox's pause
    assert usage[throttled]["waits"] >= 1 and over  # held back until the pause ended
    assert usage[throttled]["throttled"] == 1


def test_concurrent_requests_through_the_runtime_stay_within_four_per_mailbox(
    runtime: Any, simulator: Any
) -> None:
    simulator.add_mailbox("ada@contoso.example", 300, seed=5)
    simulator.add_mailbox("bob@contoso.example", 300, seed=6)
    simulator.faults.latency_ms = 50  # requests overlap
    graph: GraphClient = runtime.graph()

    def page(mailbox: str) -> int:
        body = graph.get_json(graph.messages_url(mailbox, "inbox"), {"$top": "10"})
        return len(body["value"])

    with ThreadPoolExecutor(16) as pool:
        mailboxes = ["ada@contoso.example", "bob@contoso.example"] * 30
        assert set(pool.map(page, mailboxes)) == {10}

    usage = simulator.limits.as_dict()
    assert usage["totals"]["requests"] == 60  # no request was refused, none retried
    assert usage["totals"]["over_concurrency"] == 0
    assert {m["peak_in_flight"] for m in usage["mailboxes"].values()} == {4}
    assert simulator.stats.throttled == 0


def test_a_mailbox_asked_faster_than_its_budget_is_paced_not_throttled(
    runtime: Any, simulator: Any
) -> None:
    simulator.add_mailbox("ada@contoso.example", 300, seed=5)
    simulator.faults.mailbox_budget_requests = 40  # Graph's 10,000 in 600 s, scaled down
    simulator.faults.mailbox_budget_window_s = 1.0
    runtime.settings = replace(
        runtime.settings, graph_mailbox_requests=40, graph_mailbox_window_s=1.0
    )
    graph: GraphClient = runtime.graph()

    def page(_: int) -> int:
        body = graph.get_json(graph.messages_url("ada@contoso.example", "inbox"), {"$top": "5"})
        return len(body["value"])

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(page, range(60))) == {5}

    usage = simulator.limits.usage("ada@contoso.example")
    assert usage["requests"] == 60 and usage["over_budget"] == 0
    assert simulator.stats.throttled == 0


def test_the_whole_budget_goes_at_once_and_then_waits_for_the_window(
    pools: list[Database],
) -> None:
    """A sliding window, not a bucket: a mailbox that has sent nothing may send its whole
    budget without a wait (a bucket paced all but its first N // 50); the next request is
    told to wait until the oldest slice leaves the window (and its headroom)."""
    first, second = limiters(pools, graph_mailbox_requests=30, graph_mailbox_window_s=60.0)
    started = time.monotonic()
    for worker in [first, second] * 15:  # two workers, one budget
        with worker.slot("burst@contoso.example"):
            pass
    limit = first.mailbox_limit("burst@contoso.example")
    usage = {row["key"]: row for row in pools[0].all("graph_limit_usage")}
    assert usage[limit.key]["requests"] == 30 and usage[limit.key]["waits"] == 0
    assert usage[limit.key]["in_window"] == 30

    payload = [first.app_limit.as_json(), limit.as_json()]
    refused = pools[0].one("acquire_graph_slot", limits=payload, lease_s=30.0)
    elapsed = time.monotonic() - started
    assert refused is not None and refused["lease_id"] is None
    assert refused["reason"] == f"budget: {limit.key}"
    span, slice_s = limit.as_json()["span_s"], limit.as_json()["slice_s"]
    # The first slot's slice leaves the window 62 s after it began: to a slice, less the
    # time the burst took (however slow this machine is).
    assert span - slice_s - elapsed < refused["wait_s"] <= span + slice_s
