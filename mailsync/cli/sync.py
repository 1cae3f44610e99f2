"""`mailsync demo`, `sync`, `resume` and `status`: a job's flow run in this process.

The flow runs in a thread; the progress bar reads the job's progress from Postgres (the
same numbers SQL users see) until the flow ends.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailsync import validate
from mailsync.cli.common import (
    JsonOpt,
    configure_runtime,
    console,
    error_line,
    out,
    prepare_flow_run,
    upgrade_database,
)
from mailsync.cli.tables import Col, print_fitted
from mailsync.errors import DatabaseError, SyncIncompleteError
from mailsync.runtime import Runtime
from mailsync.store.db import redact_url
from mailsync.sync import shutdown
from mailsync.sync.jobs import (
    FolderSummary,
    JobSummary,
    SyncRequest,
    default_business_id,
    incomplete_message,
    job_business,
    job_summary,
    load_job,
    open_job,
    start_job,
)

AttachmentsOpt = Annotated[
    str | None,
    typer.Option(
        help="content (store each attachment's bytes), metadata (the list only) or none; "
        "default MAILSYNC_ATTACHMENTS, else content."
    ),
]


def demo(
    messages: Annotated[int, typer.Option(help="Messages in the simulated mailbox.")] = 10_000,
    changes: Annotated[
        int | None,
        typer.Option(
            help="Changes made after the first sync (new mail, deletions, moves, messages "
            "read), then synced again; default 1 % of the messages, 0: no second sync."
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option(help="Messages per chunk.")] = 2_000,
    page_size: Annotated[int | None, typer.Option(help="Messages per Graph page.")] = None,
    latency_ms: Annotated[float, typer.Option(help="Simulated Graph latency per page.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated mailbox.")] = 1,
    attachments: AttachmentsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync a simulated mailbox (the simulator's default folder tree) into the embedded
    Postgres through the real flow; then change it and sync again, as a kept-current
    mailbox is."""
    from mailsync.simulator import GraphSimulator

    changes = max(4, messages // 100) if changes is None else changes
    if changes < 0:
        raise typer.BadParameter("must be 0 or more", param_hint="--changes")
    with GraphSimulator() as simulator:
        simulator.faults.latency_ms = latency_ms
        mailbox = f"demo-{messages}@contoso.example"
        box = simulator.add_mailbox(mailbox, messages, seed=seed, folders="default")
        os.environ.update(
            MAILSYNC_TENANT_ID="contoso-demo",
            MAILSYNC_CLIENT_ID=simulator.client_id,
            MAILSYNC_CLIENT_SECRET=simulator.client_secret,
        )
        runtime = configure_runtime(
            graph_url=simulator.url, page_size=page_size, attachments=attachments
        )
        prepare_flow_run(runtime, graph=True)
        request = SyncRequest.checked(
            business_id=default_business_id("contoso-demo"),
            mailbox=mailbox,
            folder="all",
            sync_from=None,
            sync_to=None,
            chunk_size=chunk_size,
            page_size=page_size or runtime.settings.page_size,
        )
        if not as_json:
            console.print(
                f"simulated Graph at {simulator.url}: {messages} messages in {mailbox}, "
                "in the simulator's default folder tree"
            )
        first = _sync(runtime, request, quiet=as_json)
        # --json: one object, the last line, so a second sync's is reported with the first.
        if not (changes and as_json) or first["status"] != "completed":
            _report(runtime, first, as_json)  # an incomplete job: says why, exit 1
        if not changes:
            return
        # What a mailbox kept current meets between two syncs: a quarter of each kind.
        part = changes // 4
        box.add_messages(changes - 3 * part, "inbox")
        box.delete_messages(part)
        box.move_messages(part, "inbox", "archive")
        box.mark_read(part, read=True)
        again = _sync(runtime, request, quiet=as_json)
        in_mailbox = len(box.messages())
        rerun = {
            "changes": changes,
            "status": again["status"],
            "sync_type": again["sync_type"],
            "elapsed_s": again["elapsed_s"],
            "api_calls": again["api_calls"],
            "emails_added": again["emails_added"],
            "emails_updated": again["emails_updated"],
            "emails_deleted": again["emails_deleted"],
            "emails_stored": again["emails_stored"],
            "emails_in_mailbox": in_mailbox,
            "equal": again["emails_stored"] == in_mailbox,
        }
        if as_json:
            first["rerun"] = rerun  # type: ignore[typeddict-unknown-key]
            _report(runtime, first, as_json)
        else:
            console.print(
                f"then {changes} changes ({changes - 3 * part} new, {part} deleted, {part} "
                f"moved, {part} read) and a second sync: {again['sync_type']}, "
                f"{again['elapsed_s']} s, {again['api_calls']} Graph requests, "
                f"{again['emails_added']} added, {again['emails_updated']} updated, "
                f"{again['emails_deleted']} deleted; {again['emails_stored']} messages stored, "
                f"{in_mailbox} in the mailbox"
            )
        if again["status"] != "completed" or not rerun["equal"]:
            error_line("incomplete", f"the second sync: {again['status']}, {rerun}")
            raise typer.Exit(1)


def sync(
    mailbox: Annotated[str, typer.Option(help="UPN or user id of the mailbox.")],
    folder: Annotated[
        str,
        typer.Option(
            help="'all' (every folder), or one: inbox, sentitems, archive, … or a folder id."
        ),
    ] = "all",
    full: Annotated[
        bool, typer.Option("--full", help="List every folder in full, even those kept current.")
    ] = False,
    sync_from: Annotated[
        str | None, typer.Option("--from", help="Only mail received on or after (ISO date).")
    ] = None,
    sync_to: Annotated[
        str | None, typer.Option("--to", help="Only mail received before (ISO date).")
    ] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Messages per chunk.")] = None,
    page_size: Annotated[int | None, typer.Option(help="Messages per Graph page (≤1000).")] = None,
    business: Annotated[
        str | None, typer.Option(help="Business (tenant) UUID of the store.")
    ] = None,
    graph_url: Annotated[
        str | None,
        typer.Option(
            help="Another Graph host (e.g. a simulator); msal's token requests go there too."
        ),
    ] = None,
    attachments: AttachmentsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync a real mailbox (credentials from MAILSYNC_TENANT_ID/CLIENT_ID/CLIENT_SECRET)."""
    runtime = configure_runtime(
        graph_url=graph_url, page_size=page_size, chunk_size=chunk_size, attachments=attachments
    )
    settings = runtime.settings
    request = SyncRequest.checked(
        business_id=business or default_business_id(settings.tenant_id),
        mailbox=mailbox,
        folder=folder,
        sync_from=sync_from,
        sync_to=sync_to,
        chunk_size=settings.chunk_size,
        page_size=settings.page_size,
        full=full,
    )
    prepare_flow_run(runtime, graph=True)
    print_summary(_sync(runtime, request, quiet=as_json), as_json)


def resume(
    job_id: Annotated[str, typer.Argument(help="The job to continue.")],
    graph_url: Annotated[str | None, typer.Option(help="Another Graph host.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue an unfinished job from its last checkpoint."""
    job_uuid = validate.job_id(job_id)  # a bad id fails before anything is reached
    runtime = configure_runtime(graph_url=graph_url)
    prepare_flow_run(runtime, graph=True)
    started = time.perf_counter()
    job = start_job(runtime.db, load_job(runtime.db, job_uuid))
    summary = run_sync(runtime, str(job.id), quiet=as_json)
    summary["elapsed_s"] = round(time.perf_counter() - started, 3)
    summary["database_url"] = redact_url(runtime.db.url)
    print_summary(summary, as_json)


def status(
    job_id: Annotated[str, typer.Argument(help="A sync job id.")], as_json: JsonOpt = False
) -> None:
    """Show a job's progress and totals."""
    runtime = configure_runtime()
    upgrade_database(runtime)
    summary = job_summary(runtime.db, validate.job_id(job_id))
    summary["database_url"] = redact_url(runtime.db.url)
    print_summary(summary, as_json)


def run_sync(runtime: Runtime, job_id: str, *, quiet: bool) -> JobSummary:
    """Run the sync flow over an open job, with a progress bar unless ``quiet``; the job's
    summary afterwards."""
    from mailsync.flows.sync_mailbox import sync_mailbox  # the flow's imports, when it runs

    graph_url = runtime.settings.graph_url
    _with_progress(runtime, job_id, lambda: sync_mailbox(job_id=job_id, graph_url=graph_url), quiet)
    return job_summary(runtime.db, validate.job_id(job_id))


def _with_progress(runtime: Runtime, job_id: str, run: Callable[[], object], quiet: bool) -> None:
    """Run the flow in a thread; draw its progress from the database until it ends (the
    caller reads the job's summary then)."""
    business_id = job_business(runtime.db, job_id)  # the progress is read as the job's tenant
    error: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except SyncIncompleteError:  # the summary is shown, then exit != 0
            pass
        except BaseException as exc:
            error.append(exc)

    # In a copy of this thread's context: Prefect's settings for the command (cli.main).
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(target,), name="sync-flow", daemon=True)
    worker.start()
    columns = (
        TextColumn("[bold]sync[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TextColumn("{task.fields[emails]} messages"),
        TimeElapsedColumn(),
    )
    with (
        shutdown.stop_on_signals(),  # the flow's thread gives its chunk back, then ends
        Progress(*columns, console=console, disable=quiet, transient=False) as progress,
    ):
        bar = progress.add_task("sync", total=None, emails=0)
        while worker.is_alive():
            worker.join(0.25)
            try:
                row = runtime.db.one("get_sync_job_progress", business_id, job_id=job_id)
            except DatabaseError:  # the flow rides database faults out; so does the bar
                continue
            state = (row or {}).get("progress") or {}
            if state.get("total_chunks"):
                done = state["completed_chunks"] + state["failed_chunks"]
                progress.update(
                    bar,
                    total=state["total_chunks"],
                    completed=done,
                    emails=state["emails_processed"],
                )
    if error:
        raise error[0]


def print_summary(summary: JobSummary, as_json: bool) -> None:
    """The job's summary (a table, and one per folder; or one JSON line); a job that did
    not complete then ends the command with exit code 1, after saying why in one line."""
    if as_json:
        out.print(json.dumps(summary, default=str), soft_wrap=True, highlight=False)
    else:
        table = Table(title=f"sync job {summary['job_id']}", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value", overflow="fold")  # a URL must stay whole enough to copy
        for key, value in summary.items():
            if key != "folders":
                table.add_row(key, "" if value is None else str(value))
        out.print(table)
        _print_folders(summary["folders"])
    if summary["status"] in ("partial_failure", "failed") or (
        summary["status"] in ("pending", "running") and summary["chunks_pending"]
    ):
        error_line("incomplete", incomplete_message(summary))
        raise typer.Exit(1)


_FOLDER_COLUMNS = (  # on screen in this order; a narrow terminal keeps the low ranks
    Col("folder", "folder", rank=0),
    Col("sync_type", "sync_type", rank=5),
    Col("emails_added", "added", rank=1, justify="right"),
    Col("emails_updated", "updated", rank=1, justify="right"),
    Col("emails_deleted", "deleted", rank=1, justify="right"),
    Col("delta_resets", "delta_resets", rank=2, justify="right"),
    Col("fallback", "fallback", rank=4, justify="right"),
    Col("failed_chunks", "failed_chunks", rank=2, justify="right"),
    Col("api_calls", "api_calls", rank=3, justify="right"),
)


def _print_folders(folders: list[FolderSummary]) -> None:
    if folders:
        print_fitted(out, "per folder", _FOLDER_COLUMNS, folders)
        _print_folder_attachments(folders)


_ATTACHMENT_COLUMNS = (
    Col("folder", "folder", rank=0),
    Col("attachments_stored", "stored", rank=1, justify="right"),
    Col("attachments_deduplicated", "deduplicated", rank=2, justify="right"),
    Col("attachments_unavailable", "unavailable", rank=1, justify="right"),
    Col("attachments_failed", "failed", rank=1, justify="right"),
    Col("attachment_bytes", "bytes", rank=2, justify="right"),
)


def _print_folder_attachments(folders: list[FolderSummary]) -> None:
    """The attachments per folder, when the job fetched or tried any (a table of its own:
    the folder table is as wide as a terminal allows)."""
    touched = [f for f in folders if any(f.get(c.key) for c in _ATTACHMENT_COLUMNS[1:])]
    if touched:
        print_fitted(out, "attachments per folder", _ATTACHMENT_COLUMNS, touched)


def _print_short_report(runtime: Runtime, store_id: str) -> None:
    from mailsync.report import short_report  # pandas: only the demo needs it here

    console.print(short_report(runtime.db, store_id=store_id))


def _sync(runtime: Runtime, request: SyncRequest, *, quiet: bool) -> JobSummary:
    """The request's job (a new one, or the store's unfinished one) run to its end."""
    started = time.perf_counter()
    job, resumed = open_job(runtime.db, request)
    if resumed:
        console.print(f"resuming the store's unfinished job {job.id}")
    summary = run_sync(runtime, str(job.id), quiet=quiet)
    summary["elapsed_s"] = round(time.perf_counter() - started, 3)
    summary["database_url"] = redact_url(runtime.db.url)
    return summary


def _report(runtime: Runtime, summary: JobSummary, as_json: bool) -> None:
    """The job's summary and the store's chunk report (the JSON stays the last line)."""
    if as_json:
        _print_short_report(runtime, summary["store_id"])
    print_summary(summary, as_json)
    if not as_json:
        _print_short_report(runtime, summary["store_id"])
