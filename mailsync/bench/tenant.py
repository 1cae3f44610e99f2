"""`mailsync bench --tenant --mailboxes N`: keeping a tenant current, cycle after cycle.

N mailboxes of ``messages`` each, every one with the simulator's default folder tree, are
registered in a fresh database and synced by the real ``sync-all`` flow (``parallel`` at a
time, through the shared Graph limits), three times, each cycle in a fresh child process:
- ``first``: every mailbox's first sync (every folder read whole);
- ``no_change``: nothing changed since: what a cycle costs to learn that nothing happened;
- ``changed``: ``changed_pct`` % of the mailboxes got ``changes`` new messages in Inbox.
Per cycle: wall seconds (flow called to returned), Graph requests (the simulator's count:
a ``$batch`` is one), and CPU ms per mailbox of the syncing process plus Postgres (the
simulator's CPU is reported apart). Between cycles every mailbox is made due again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from mailsync.bench.mailbox import (
    child_env,
    cpu_during,
    fresh_database,
    run_sync_child,
    simulator_process,
)
from mailsync.bench.many import mailbox_names, register
from mailsync.errors import MailsyncError
from mailsync.prefect_server import prefect_api
from mailsync.sync.registry import pool_size_for


@dataclass(frozen=True)
class TenantConfig:
    mailboxes: int = 200
    messages: int = 100  # per mailbox
    parallel: int = 8
    page_size: int = 500
    changed_pct: float = 1.0
    changes: int = 5  # new messages in each changed mailbox
    seed: int = 1


def run_bench_tenant(config: TenantConfig, child: Sequence[str]) -> dict[str, Any]:
    """The three cycles; ``child`` runs ``measure_sync_all`` in a fresh process."""
    mailboxes = mailbox_names(config.mailboxes)
    changed = mailboxes[: max(1, math.ceil(config.mailboxes * config.changed_pct / 100))]
    with (
        prefect_api() as (api_url, _, own_server),
        simulator_process(dict.fromkeys(mailboxes, config.messages), config.seed, "default") as (
            sim_url,
            sim_pid,
        ),
        httpx.Client(timeout=60.0) as http,
        fresh_database() as database_url,
    ):
        business_id = register(database_url, mailboxes)
        env = child_env(
            api_url,
            database_url,
            sim_url,
            MAILSYNC_DB_POOL_SIZE=str(pool_size_for(config.parallel)),
        )
        spec = {
            "business_id": business_id,
            "parallel": config.parallel,
            "chunk_size": 5_000,
            "page_size": config.page_size,
        }

        def cycle() -> dict[str, Any]:
            _make_due(database_url)
            http.post(f"{sim_url}/_sim/stats/reset").raise_for_status()
            measured, cpu = cpu_during(
                lambda: run_sync_child(child, spec, env), database_url, sim_pid, api_url
            )
            stats = http.get(f"{sim_url}/_sim/stats").raise_for_status().json()
            return _figures(config, measured, cpu, stats)

        first = cycle()
        no_change = cycle()
        for mailbox in changed:
            mutation = [{"op": "add", "count": config.changes, "folder": "inbox"}]
            http.post(
                f"{sim_url}/_sim/mailboxes/{mailbox}/mutations", json=mutation
            ).raise_for_status()
        some_changed = cycle()
    return {
        **asdict(config),
        "changed_mailboxes": len(changed),
        "first": first,
        "no_change": no_change,
        "changed": some_changed,
        "prefect_server": "started by bench" if own_server else "PREFECT_API_URL",
    }


def _make_due(database_url: str) -> None:
    """Every registered mailbox due now (a cycle is what sync-all does with due mailboxes)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE stores SET next_due_at = now() WHERE registered_at IS NOT NULL")


def _figures(
    config: TenantConfig, measured: dict[str, Any], cpu: dict[str, float], stats: dict[str, Any]
) -> dict[str, Any]:
    outcomes = measured["mailboxes"]
    if len(outcomes) != config.mailboxes:
        raise MailsyncError(f"sync-all synced {len(outcomes)} of {config.mailboxes} mailboxes")
    cpu_ms = (measured["cpu_s"] + cpu.get("postgres", 0.0)) * 1000
    return {
        "wall_s": round(measured["returned_at"] - measured["called_at"], 3),
        "graph_requests": stats["data_requests"],
        "graph_requests_per_mailbox": round(stats["data_requests"] / config.mailboxes, 2),
        "batch_items": sum(stats.get("batch_items", {}).values()),
        "cpu_ms_per_mailbox": round(cpu_ms / config.mailboxes, 1),
        "process_cpu_ms_per_mailbox": round(measured["cpu_s"] * 1000 / config.mailboxes, 1),
        "postgres_cpu_ms_per_mailbox": round(cpu.get("postgres", 0.0) * 1000 / config.mailboxes, 1),
        "simulator_cpu_s": round(cpu.get("simulator", 0.0), 2),
        # the local Prefect server's, when there is one: mailsync's cost beyond the two above
        "prefect_server_cpu_ms_per_mailbox": round(
            cpu.get("prefect_server", 0.0) * 1000 / config.mailboxes, 1
        ),
        "by_kind": stats["by_kind"],
    }
