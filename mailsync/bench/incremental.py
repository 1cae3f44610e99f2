"""`mailsync bench --incremental`: what keeping a whole mailbox current costs.

A mailbox of ``messages`` over the simulator's default folder tree is synced in full
(every folder), then changed (``changes`` in all: new mail, deletions, moves between
folders, messages marked read, in equal parts), synced again, and synced once more with
nothing changed. Each sync is the real ``sync_mailbox`` flow into a fresh database; the
figures are its wall time and the Graph requests the simulator served, and whether the
live rows equal the mailbox afterwards. Unlike the throughput bench this runs in one
process: it measures requests and rounds, not peak memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mailsync.bench.mailbox import SyncFlow, fresh_database, point_this_process_at
from mailsync.prefect_server import prefect_api

TENANT = "contoso-bench"


@dataclass(frozen=True)
class IncrementalConfig:
    messages: int = 50_000
    changes: int = 500
    latency_ms: float = 0.0
    page_size: int = 500
    seed: int = 1


def run_bench_incremental(config: IncrementalConfig, sync_mailbox: SyncFlow) -> dict[str, Any]:
    import psycopg

    from mailsync.runtime import reset_runtime
    from mailsync.simulator import DEFAULT_TREE, GraphSimulator

    mailbox = "bench-incremental@contoso.example"
    with prefect_api() as (api_url, _, _), GraphSimulator() as simulator, fresh_database() as url:
        point_this_process_at(api_url, url, simulator, TENANT)
        box = simulator.add_mailbox(
            mailbox, config.messages, seed=config.seed, folders=DEFAULT_TREE
        )
        simulator.faults.latency_ms = config.latency_ms

        def timed() -> dict[str, Any]:
            before = simulator.stats.as_dict()["data_requests"]
            started = time.perf_counter()
            summary = sync_mailbox(
                mailbox=mailbox, folder="all", page_size=config.page_size, graph_url=simulator.url
            )
            return {
                "s": round(time.perf_counter() - started, 3),
                "requests": simulator.stats.as_dict()["data_requests"] - before,
                "sync_type": summary["sync_type"],
                "added": summary["emails_added"],
                "updated": summary["emails_updated"],
                "deleted": summary["emails_deleted"],
                "folders": len(summary["folders"]),
            }

        # Unmeasured: the process's first flow run pays Prefect's and the pool's start-up.
        simulator.add_mailbox("warm-up@contoso.example", 10, seed=config.seed)
        sync_mailbox(mailbox="warm-up@contoso.example", folder="all", graph_url=simulator.url)
        full = timed()
        part = config.changes // 4
        box.add_messages(config.changes - 3 * part, "inbox")
        box.delete_messages(part)
        box.move_messages(part, "inbox", "archive")
        box.mark_read(part, read=True)
        incremental = timed()
        unchanged = timed()
        with psycopg.connect(url) as conn:
            live = {
                row[0]: (row[1], row[2])
                for row in conn.execute(
                    "SELECT e.graph_id, e.parent_folder_id, e.is_read FROM emails AS e"
                    " JOIN stores AS s ON s.id = e.store_id"
                    " WHERE s.mailbox = %s AND e.deleted_at IS NULL",
                    (mailbox,),
                )
            }
        reset_runtime()
    expected = {m.id: (m.parentFolderId, m.isRead) for m in box.messages()}
    return {
        "messages": config.messages,
        "folders": full["folders"],
        "changes": config.changes,
        "latency_ms": config.latency_ms,
        "full_s": full["s"],
        "full_requests": full["requests"],
        "incremental_s": incremental["s"],
        "incremental_requests": incremental["requests"],
        "incremental_added": incremental["added"],
        "incremental_updated": incremental["updated"],
        "incremental_deleted": incremental["deleted"],
        "no_change_s": unchanged["s"],
        "no_change_requests": unchanged["requests"],
        "exact": live == expected,
    }
