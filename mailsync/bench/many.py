"""`mailsync bench --mailboxes N`: many mailboxes at once through sync-all, against the floor
of N raw fetchers in parallel.

The simulator (its own process) serves N mailboxes of ``messages`` each, with Graph's
per-mailbox limits enforced and counted. The floor is N threads, one per mailbox, each
paging its mailbox as mailsync.bench.mailbox's floor does (nextLinks, JSON parsed, nothing stored),
all started together: ``floor_s`` is until the last one is done. The sync is the real
``sync-all`` flow in a fresh child process over a fresh database where the N mailboxes are
registered, N mailboxes at a time (``--parallel N``), every Graph request through the
shared limits (mailsync.graph.limits): ``sync_s`` is from the flow's call to the last job's
completion. ``throttled_requests`` are the 429s Graph (the simulator) answered and
``over_limit_requests`` those that went over a mailbox's limits (both should be 0).
"""

from __future__ import annotations

import os
import resource
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

import httpx

from mailsync.bench.mailbox import (
    TENANT,
    Floor,
    child_env,
    cpu_during,
    fetch_token,
    fresh_database,
    measure_floor,
    peak_rss_mb,
    run_sync_child,
    set_latency,
    simulator_process,
    warm_up_prefect,
)
from mailsync.errors import MailsyncError
from mailsync.prefect_server import prefect_api
from mailsync.sync.registry import pool_size_for

if TYPE_CHECKING:
    from prefect import Flow


@dataclass(frozen=True)
class ManyConfig:
    mailboxes: int = 8
    messages: int = 10_000  # per mailbox
    latency_ms: float = 0.0
    chunk_size: int = 5_000
    page_size: int = 500
    seed: int = 1


def mailbox_names(count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"bench-{run}-{i}@contoso.example" for i in range(count)]


def parallel_floor(sim_url: str, mailboxes: list[str], page_size: int, token: str) -> Floor:
    """Every mailbox paged by its own thread, all at once: until the last is done."""
    floors: dict[str, Floor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(mailboxes) + 1)

    def fetch(mailbox: str) -> None:
        start.wait()
        try:
            floors[mailbox] = measure_floor(sim_url, mailbox, page_size, token)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=(m,)) for m in mailboxes]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Floor(
        time.perf_counter() - began,
        sum(f.messages for f in floors.values()),
        sum(f.requests for f in floors.values()),
    )


def register(database_url: str, mailboxes: list[str]) -> str:
    """The mailboxes registered (due at once) in the bench's business; its id."""
    from mailsync.store.db import Database
    from mailsync.sync.jobs import default_business_id
    from mailsync.sync.registry import Registration, add_mailbox

    business_id = default_business_id(TENANT)
    with Database(database_url) as db:
        for mailbox in mailboxes:
            add_mailbox(db, Registration.checked(business_id, mailbox))
    return business_id


def simulator_usage(sim_url: str) -> dict[str, Any]:
    stats = httpx.get(f"{sim_url}/_sim/stats").raise_for_status().json()
    limits = httpx.get(f"{sim_url}/_sim/limits").raise_for_status().json()
    return {"stats": stats, "limits": limits["totals"]}


def run_bench_many(config: ManyConfig, child: Sequence[str]) -> dict[str, Any]:
    """The whole benchmark; ``child`` runs ``measure_sync_all`` in a fresh process, given
    the spec (JSON) as its last argument."""
    from mailsync.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    mailboxes = mailbox_names(config.mailboxes)
    with (
        prefect_api() as (api_url, prefect_start_s, own_server),
        simulator_process(dict.fromkeys(mailboxes, config.messages), config.seed) as (
            sim_url,
            sim_pid,
        ),
        httpx.Client(timeout=60.0) as http,
    ):
        token = fetch_token(http, sim_url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        parallel_floor(sim_url, mailboxes, config.page_size, token)  # renders every message
        set_latency(sim_url, config.latency_ms)
        http.post(f"{sim_url}/_sim/stats/reset").raise_for_status()
        floor = parallel_floor(sim_url, mailboxes, config.page_size, token)
        floor_usage = simulator_usage(sim_url)
        with fresh_database() as database_url:
            business_id = register(database_url, mailboxes)
            env = child_env(
                api_url,
                database_url,
                sim_url,
                MAILSYNC_DB_POOL_SIZE=str(pool_size_for(config.mailboxes)),
            )
            spec = {
                "business_id": business_id,
                "parallel": config.mailboxes,
                "chunk_size": config.chunk_size,
                "page_size": config.page_size,
            }
            http.post(f"{sim_url}/_sim/stats/reset").raise_for_status()
            measured, cpu = cpu_during(
                lambda: run_sync_child(child, spec, env), database_url, sim_pid, api_url
            )
            sync_usage = simulator_usage(sim_url)
    cpu["sync_process"] = measured["cpu_s"]
    return summarize(
        config, floor, floor_usage, measured, sync_usage, cpu, prefect_start_s, own_server
    )


def measure_sync_all(spec: dict[str, Any], sync_all: Flow[..., dict[str, Any]]) -> dict[str, Any]:
    """The child's work: run sync-all, N mailboxes at a time; times, outcomes, peak RSS."""
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

    from mailsync.runtime import get_runtime

    runtime = get_runtime()
    runtime.db.all(
        "list_registered_mailboxes", spec["business_id"], business_id=spec["business_id"]
    )  # connecting: start-up
    # A process's first flow run pays Prefect's one-off costs: start-up, not sync.
    warm_up_prefect()
    runner = cast(
        "TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=spec["parallel"])
    )
    flow = sync_all.with_options(task_runner=runner)
    started = resource.getrusage(resource.RUSAGE_SELF)
    called_at = time.time()
    result = flow(
        business_id=spec["business_id"], chunk_size=spec["chunk_size"], page_size=spec["page_size"]
    )
    returned_at = time.time()
    ended = resource.getrusage(resource.RUSAGE_SELF)
    jobs = runtime.db.all("bench_jobs", spec["business_id"], business_id=spec["business_id"])
    return {
        "called_at": called_at,
        "returned_at": returned_at,
        "cpu_s": (ended.ru_utime + ended.ru_stime) - (started.ru_utime + started.ru_stime),
        "mailboxes": result["mailboxes"],
        "jobs": [
            {
                "mailbox": j["mailbox"],
                "status": j["status"],
                "emails": j["emails"],
                "started_at": j["started_at"].timestamp(),
                "completed_at": j["completed_at"].timestamp() if j["completed_at"] else None,
            }
            for j in jobs
        ],
        "peak_rss_mb": peak_rss_mb(),
    }


def summarize(
    config: ManyConfig,
    floor: Floor,
    floor_usage: dict[str, Any],
    child: dict[str, Any],
    sync_usage: dict[str, Any],
    cpu_s: dict[str, float],
    prefect_start_s: float,
    own_server: bool,
) -> dict[str, Any]:
    jobs = child["jobs"]
    total = config.mailboxes * config.messages
    if len(jobs) != config.mailboxes or any(j["status"] != "completed" for j in jobs):
        raise MailsyncError(f"sync-all did not complete every mailbox: {child['mailboxes']}")
    stored = sum(j["emails"] for j in jobs)
    if stored != total:
        raise MailsyncError(f"sync-all stored {stored} of {total} messages")
    sync_s = max(j["completed_at"] for j in jobs) - child["called_at"]
    limits = sync_usage["limits"]
    # The sync's own CPU (its process and Postgres) spread over every core of the machine:
    # no schedule finishes sooner, so the floor is out of reach when this exceeds it.
    cores = os.cpu_count() or 1
    cpu_bound_s = (cpu_s["sync_process"] + cpu_s.get("postgres", 0.0)) / cores
    # Every process of the run on this host, the simulator and the Prefect server too: they
    # share the cores. The simulator stands in for Graph; the server is mailsync's own cost.
    machine_bound_s = sum(cpu_s.values()) / cores
    return {
        **asdict(config),
        "messages_total": total,
        "floor_s": round(floor.seconds, 3),
        "sync_s": round(sync_s, 3),
        "ratio": round(sync_s / floor.seconds, 3),
        "msgs_per_s": round(total / sync_s, 1),
        "cores": cores,
        "cpu_bound_s": round(cpu_bound_s, 3),
        "cpu_bound_ratio": round(cpu_bound_s / floor.seconds, 3),
        "machine_bound_s": round(machine_bound_s, 3),
        "floor_msgs_per_s": round(floor.messages / floor.seconds, 1),
        "throttled_requests": sync_usage["stats"]["throttled"],
        "over_limit_requests": limits["over_concurrency"] + limits["over_budget"],
        "peak_in_flight_per_mailbox": limits["peak_in_flight"],
        "floor_throttled_requests": floor_usage["stats"]["throttled"],
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "floor_requests": floor.requests,
        "api_calls": sync_usage["stats"]["data_requests"],
        "mailbox_sync_s": sorted(round(j["completed_at"] - j["started_at"], 3) for j in jobs),
        # when each mailbox's job started, from the flow's call: the fan-out's own cost
        "mailbox_start_s": sorted(round(j["started_at"] - child["called_at"], 3) for j in jobs),
        "flow_return_s": round(child["returned_at"] - child["called_at"], 3),
        "prefect_server_start_s": round(prefect_start_s, 3),
        "process_start_s": round(child["process_start_s"], 3),
        "prefect_server": "started by bench" if own_server else "PREFECT_API_URL",
        "cpu_s": {k: round(v, 2) for k, v in cpu_s.items()},
    }
