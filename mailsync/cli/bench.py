"""`mailsync bench`: sync throughput against the raw-fetch floor (logic: mailsync.bench.mailbox).

The sync it measures runs in a fresh process, ``mailsync bench-child SPEC`` (hidden; run as
``python -m mailsync.cli`` so that it is this interpreter's mailsync).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from mailsync.bench.attachments import AttachmentBenchConfig, run_bench_attachments
from mailsync.bench.incremental import IncrementalConfig, run_bench_incremental
from mailsync.bench.mailbox import BenchConfig, measure_sync, run_bench
from mailsync.bench.many import ManyConfig, measure_sync_all, run_bench_many
from mailsync.bench.notifications import NotificationsConfig, run_bench_notifications
from mailsync.bench.store import StoreConfig, run_bench_store
from mailsync.bench.tenant import TenantConfig, run_bench_tenant
from mailsync.cli.common import JsonOpt, console, out
from mailsync.config import DEFAULT_CHUNK_SIZE, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

CHILD = (sys.executable, "-m", "mailsync.cli", "bench-child")
CHILD_MANY = (sys.executable, "-m", "mailsync.cli", "bench-many-child")

# (key, label, unit): the rows of the table, in the order a reader asks the questions.
_ROWS = (
    ("floor_s", "floor: page through Graph, store nothing", "s"),
    ("sync_s", "sync: flow called to job completed", "s"),
    ("ratio", "sync / floor", "x"),
    ("msgs_per_s", "sync throughput", "msg/s"),
    ("floor_msgs_per_s", "floor throughput", "msg/s"),
    ("fetch_wait_s", "sync waiting for Graph (not hidden by prefetch)", "s"),
    ("write_s", "sync writing pages (Postgres transactions)", "s"),
    ("per_chunk_overhead_ms", "overhead per chunk: the rest of sync_s / chunks", "ms"),
    ("chunk_orchestration_ms", "  of which between and around chunks", "ms"),
    ("flow_fixed_s", "  of which once per flow (start, plan, close)", "s"),
    ("chunks", "chunks", ""),
    ("api_calls", "Graph requests: sync (incl. count)", ""),
    ("floor_requests", "Graph requests: floor", ""),
    ("peak_rss_mb", "peak RSS of the syncing process", "MB"),
    ("baseline_rss_mb", "its RSS when the flow was called", "MB"),
    ("flow_return_s", "flow called to flow returned", "s"),
    ("startup_s", "start-up (not in sync_s)", "s"),
    ("prefect_server_start_s", "  of which Prefect server", "s"),
    ("process_start_s", "  of which sync process", "s"),
)


Messages = Annotated[int, typer.Option(min=1, help="Messages in the simulated mailbox.")]
Latency = Annotated[float, typer.Option(min=0, help="Simulated Graph latency per page (ms).")]
ChunkSize = Annotated[int, typer.Option(min=1, help="Messages per chunk.")]
PageSize = Annotated[int, typer.Option(min=1, max=MAX_PAGE_SIZE, help="Messages per page.")]
Seed = Annotated[int, typer.Option(help="Seed of the generated mailbox.")]


def bench(
    messages: Messages = 10_000,
    latency_ms: Latency = 0.0,
    chunk_size: ChunkSize = DEFAULT_CHUNK_SIZE,
    page_size: PageSize = DEFAULT_PAGE_SIZE,
    seed: Seed = 1,
    mailboxes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Sync this many mailboxes (of --messages each) at once through sync-all, "
            "against as many fetchers in parallel (mailsync.bench.many).",
        ),
    ] = None,
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental",
            help="Instead: a full sync of a mailbox with folders, then one after --changes "
            "changes, then one with none: seconds and requests (mailsync.bench.incremental).",
        ),
    ] = False,
    changes: Annotated[
        int,
        typer.Option(
            min=0,
            help="Changes before the incremental sync (with --notifications: in all, "
            "spread over the mailboxes).",
        ),
    ] = 500,
    notifications: Annotated[
        bool,
        typer.Option(
            "--notifications",
            help="Instead: change notifications end to end (Prefect server, a process worker, "
            "the receiver): seconds from a change to its row, p50/p95/max "
            "(mailsync.bench.notifications). --mailboxes (default 20) of 20 messages each.",
        ),
    ] = False,
    tenant: Annotated[
        bool,
        typer.Option(
            "--tenant",
            help="Instead: --mailboxes (default 200) mailboxes with folders through sync-all, "
            "three cycles (first, no change, 1 %% changed): seconds, requests, CPU per "
            "mailbox (mailsync.bench.tenant). --messages is per mailbox (default 100).",
        ),
    ] = False,
    store: Annotated[
        bool,
        typer.Option(
            "--store",
            help="Instead: Postgres CPU per stored message, as the schema is and with one "
            "thing changed per variant (mailsync.bench.store).",
        ),
    ] = False,
    variant: Annotated[
        list[str] | None, typer.Option(help="--store: only this variant (repeatable).")
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="--store: runs of each variant.")] = 3,
    attachments: Annotated[
        bool,
        typer.Option(
            "--attachments",
            help="Instead: a sync that fetches attachment content (30 %% of the messages, "
            "10 KB-5 MB, a fifth repeated): MB/s, requests per attachment, deduplication, "
            "peak RSS (mailsync.bench.attachments).",
        ),
    ] = False,
    large_mb: Annotated[
        int, typer.Option(min=0, help="--attachments: one more attachment of this many MB.")
    ] = 0,
    one_folder: Annotated[
        bool,
        typer.Option(
            "--one-folder",
            help="The mailbox is one folder (Inbox), the floor a listing of it; by default "
            "it has the simulator's folder tree and the floor is a sequential delta client.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure the sync against the raw-fetch floor: throughput, overhead, peak memory."""
    if notifications:
        _bench_notifications(NotificationsConfig(mailboxes=mailboxes or 20, changes=changes))
        return
    if attachments:
        config_att = AttachmentBenchConfig(
            messages=messages,
            large_mb=large_mb,
            page_size=page_size,
            chunk_size=chunk_size,
            seed=seed,
        )
        result_att = run_bench_attachments(config_att, CHILD)
        if as_json:
            out.print(json.dumps(result_att), soft_wrap=True, highlight=False)
        else:
            table = Table(title="attachments")
            table.add_column("figure")
            table.add_column("value", justify="right")
            for key, value in result_att.items():
                table.add_row(key, str(value))
            out.print(table)
        return
    if store:
        config_store = StoreConfig(messages, page_size, repeats, seed, tuple(variant or ()))
        _bench_store(config_store, as_json)
        return
    if tenant:
        _bench_tenant(mailboxes or 200, messages if messages != 10_000 else 100, as_json)
        return
    if incremental:
        config_incremental = IncrementalConfig(messages, changes, latency_ms, page_size, seed)
        _bench_incremental(config_incremental, as_json)
        return
    if mailboxes is not None:
        config_many = ManyConfig(mailboxes, messages, latency_ms, chunk_size, page_size, seed)
        _bench_many(config_many, as_json)
        return
    config = BenchConfig(messages, latency_ms, chunk_size, page_size, seed, not one_folder)
    if not as_json:
        console.print(
            f"bench: {messages} messages, {latency_ms:g} ms per page, pages of "
            f"{page_size}, chunks of {chunk_size} (this takes a while)"
        )
    result = run_bench(config, CHILD)
    if as_json:
        out.print(json.dumps(result), soft_wrap=True, highlight=False)
    else:
        out.print(result_table(result))


def _bench_incremental(config: IncrementalConfig, as_json: bool) -> None:
    from mailsync.flows.sync_mailbox import sync_mailbox  # runs the flow in this process

    if not as_json:
        console.print(
            f"bench: {config.messages} messages over a folder tree; full sync, then "
            f"{config.changes} changes, then none ({config.latency_ms:g} ms per page)"
        )
    result = run_bench_incremental(config, sync_mailbox)
    if as_json:
        out.print(json.dumps(result), soft_wrap=True, highlight=False)
        return
    table = Table(title="incremental sync")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    out.print(table)


def _bench_tenant(mailboxes: int, messages: int, as_json: bool) -> None:
    if not as_json:
        console.print(
            f"bench: {mailboxes} mailboxes of {messages} messages with folders, three "
            "sync-all cycles (this takes a while)"
        )
    result = run_bench_tenant(TenantConfig(mailboxes=mailboxes, messages=messages), CHILD_MANY)
    if as_json:
        out.print(json.dumps(result), soft_wrap=True, highlight=False)
        return
    table = Table(title=f"mailsync bench: a tenant of {mailboxes} mailboxes, per cycle")
    table.add_column("figure")
    keys = ("wall_s", "graph_requests", "graph_requests_per_mailbox", "cpu_ms_per_mailbox")
    cycles = ("first", "no_change", "changed")
    for name in cycles:
        table.add_column(name, justify="right")
    for key in keys:
        table.add_row(key, *(str(result[name][key]) for name in cycles))
    out.print(table)


def _bench_store(config: StoreConfig, as_json: bool) -> None:
    if not as_json:
        console.print(
            f"bench: {config.messages} messages stored in pages of {config.page_size}, "
            f"{config.repeats} runs of each variant (this takes a while)"
        )
    result = run_bench_store(config, None if as_json else console.print)
    if as_json:
        out.print(json.dumps(result), soft_wrap=True, highlight=False)
        return
    table = Table(title=f"Postgres per stored message ({config.messages} messages, medians)")
    columns = ("write_cpu_us", "vacuum_cpu_us", "replay_cpu_us", "wal_bytes", "table_bytes")
    table.add_column("variant")
    for column in columns:
        table.add_column(column, justify="right")
    for name, figures in result["variants"].items():
        table.add_row(name, *(f"{figures[c]:,}" for c in columns))
    out.print(table)


def _bench_many(config: ManyConfig, as_json: bool) -> None:
    if not as_json:
        console.print(
            f"bench: {config.mailboxes} mailboxes of {config.messages} messages through "
            f"sync-all, {config.latency_ms:g} ms per page (this takes a while)"
        )
    result = run_bench_many(config, CHILD_MANY)
    if as_json:
        out.print(json.dumps(result), soft_wrap=True, highlight=False)
        return
    table = Table(title=f"mailsync bench: {config.mailboxes} mailboxes through sync-all")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, str(value))
    out.print(table)


def _bench_notifications(config: NotificationsConfig) -> None:
    """Always JSON: one object, the last line (a table would only repeat it)."""
    from mailsync.flows.sync_mailbox import sync_mailbox  # the flow's imports, when it runs

    console.print(
        f"bench --notifications: {config.mailboxes} mailboxes, {config.changes} changes "
        "(a Prefect server, a process worker, the receiver; takes a few minutes)"
    )
    result = run_bench_notifications(config, sync_mailbox)
    out.print(json.dumps(result, default=str), soft_wrap=True)


def bench_many_child(spec: Annotated[str, typer.Argument(help="What to sync (JSON).")]) -> None:
    """The measured sync-all of `mailsync bench --mailboxes`: JSON on the last line."""
    from mailsync.flows.sync_all import sync_all  # the flow's imports, when it runs

    print(json.dumps(measure_sync_all(json.loads(spec), sync_all), default=str), flush=True)


def bench_child(spec: Annotated[str, typer.Argument(help="What to sync (JSON).")]) -> None:
    """The measured sync of `mailsync bench`: its figures as JSON on the last line."""
    from mailsync.flows.sync_mailbox import sync_mailbox  # the flow's imports, when it runs

    print(json.dumps(measure_sync(json.loads(spec), sync_mailbox), default=str), flush=True)


def result_table(result: dict[str, Any]) -> Table:
    table = Table(
        title=f"mailsync bench: {result['messages']} messages, {result['latency_ms']:g} ms latency"
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("")
    for key, label, unit in _ROWS:
        table.add_row(label, f"{result[key]:,}", unit)
    for process, micros in result["cpu_us_per_msg"].items():
        table.add_row(f"CPU per message while syncing: {process}", f"{micros:,}", "µs")
    table.caption = f"Prefect server: {result['prefect_server']}"
    return table
