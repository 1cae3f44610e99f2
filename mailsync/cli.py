"""The `mailsync` command: demo, sync, resume, status, db upgrade, simulator.

Flows run in-process (against PREFECT_API_URL when set, else Prefect's ephemeral server);
the progress bar reads the job's progress from Postgres, the same numbers SQL users see.
"""

from __future__ import annotations

import os

# Before Prefect is imported: no telemetry, and its console log lines would fight the
# progress bar (they still reach the Prefect API and its UI).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
# Without PREFECT_API_URL, Prefect starts a temporary server; its first start here (with
# its database migrations) can take longer than Prefect's default 20 s wait.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import json
import sys
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailsync.errors import MailsyncError

app = typer.Typer(
    help="Copy Microsoft 365 mailboxes through Microsoft Graph into Postgres, in chunks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _runtime(**overrides: Any) -> Any:
    from mailsync import runtime as rt
    from mailsync.config import load_settings

    rt.reset_runtime()
    settings = load_settings().with_overrides(**overrides)
    rt._runtime = rt.Runtime(settings)
    return rt._runtime


def _upgrade(runtime: Any) -> str:
    from mailsync.migrate import upgrade
    from mailsync.runtime import resolve_database_url

    url = resolve_database_url(runtime.settings)
    upgrade(url)
    return url


def _run_with_progress(runtime: Any, job_id: str, run: Any, quiet: bool) -> dict[str, Any]:
    """Run the flow in a thread; draw its progress from the database until it ends."""
    from mailsync.jobs import job_business

    business_id = job_business(runtime.db, job_id)  # the progress is read as the job's tenant
    result: dict[str, Any] = {}
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.update(run())
        except BaseException as exc:
            error.append(exc)

    worker = threading.Thread(target=target, name="sync-flow", daemon=True)
    worker.start()
    columns = (
        TextColumn("[bold]sync[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
        TextColumn("{task.fields[emails]} messages"), TimeElapsedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        bar = progress.add_task("sync", total=None, emails=0)
        while worker.is_alive():
            worker.join(0.25)
            row = runtime.db.one("get_sync_job_progress", business_id, job_id=job_id)
            state = (row or {}).get("progress") or {}
            if state.get("total_chunks"):
                done = state["completed_chunks"] + state["failed_chunks"]
                progress.update(bar, total=state["total_chunks"], completed=done,
                                emails=state["emails_processed"])  # fmt: skip
    if error:
        raise error[0]
    return result


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print(json.dumps(summary, default=str), soft_wrap=True, highlight=False)
        return
    table = Table(title=f"sync job {summary.get('job_id')}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")  # a URL must stay whole enough to copy
    for key, value in summary.items():
        table.add_row(key, "" if value is None else str(value))
    out.print(table)


def _print_short_report(runtime: Any, store_id: str) -> None:
    from mailsync.report import short_report

    console.print(short_report(runtime.db, store_id=store_id))


def _sync_and_report(
    runtime: Any,
    request: Any,
    graph_url: str | None,
    as_json: bool,
    extra: dict[str, Any],
    with_report: bool = False,
) -> dict[str, Any]:
    from mailsync.db import redact_url
    from mailsync.flows.sync_mailbox import sync_mailbox
    from mailsync.jobs import job_summary, open_job

    started = time.perf_counter()
    job, resumed = open_job(runtime.db, request)
    if resumed:
        console.print(f"resuming the store's unfinished job {job['id']}")
    job_id = str(job["id"])
    _run_with_progress(
        runtime, job_id, lambda: sync_mailbox(job_id=job_id, graph_url=graph_url), as_json
    )
    summary = job_summary(runtime.db, job["id"])
    summary.update(extra)
    summary["elapsed_s"] = round(time.perf_counter() - started, 3)
    summary["database_url"] = redact_url(runtime.db.url)
    if with_report and as_json:  # the JSON stays the last line of stdout
        _print_short_report(runtime, summary["store_id"])
    _print_summary(summary, as_json)
    if with_report and not as_json:
        _print_short_report(runtime, summary["store_id"])
    return summary


@app.command()
def demo(
    messages: Annotated[int, typer.Option(help="Messages in the simulated mailbox.")] = 10_000,
    chunk_size: Annotated[int, typer.Option(help="Messages per chunk.")] = 2_000,
    page_size: Annotated[int | None, typer.Option(help="Messages per Graph page.")] = None,
    latency_ms: Annotated[float, typer.Option(help="Simulated Graph latency per page.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the generated mailbox.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Sync a simulated mailbox into the embedded Postgres through the real flow."""
    from mailsync.jobs import SyncRequest, default_business_id
    from mailsync.simulator import GraphSimulator

    with GraphSimulator() as simulator:
        simulator.faults.latency_ms = latency_ms
        mailbox = f"demo-{messages}@contoso.example"
        simulator.add_mailbox(mailbox, messages, seed=seed)
        os.environ.update(
            MAILSYNC_TENANT_ID="contoso-demo",
            MAILSYNC_CLIENT_ID=simulator.client_id,
            MAILSYNC_CLIENT_SECRET=simulator.client_secret,
        )
        runtime = _runtime(graph_url=simulator.url, page_size=page_size)
        _upgrade(runtime)
        request = SyncRequest.checked(
            business_id=default_business_id("contoso-demo"), mailbox=mailbox, folder="inbox",
            sync_from=None, sync_to=None, chunk_size=chunk_size,
            page_size=page_size or runtime.settings.page_size,
        )  # fmt: skip
        if not as_json:
            console.print(f"simulated Graph at {simulator.url}: {messages} messages in {mailbox}")
        _sync_and_report(runtime, request, simulator.url, as_json, {}, with_report=True)


@app.command()
def sync(
    mailbox: Annotated[str, typer.Option(help="UPN or user id of the mailbox.")],
    folder: Annotated[str, typer.Option(help="Folder: inbox, sentitems, … or 'all'.")] = "inbox",
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
    as_json: JsonOpt = False,
) -> None:
    """Sync a real mailbox (credentials from MAILSYNC_TENANT_ID/CLIENT_ID/CLIENT_SECRET)."""
    from mailsync.jobs import SyncRequest, default_business_id
    from mailsync.runtime import graph_credentials

    runtime = _runtime(graph_url=graph_url, page_size=page_size, chunk_size=chunk_size)
    settings = runtime.settings
    request = SyncRequest.checked(
        business_id=business or default_business_id(settings.tenant_id), mailbox=mailbox,
        folder=folder, sync_from=sync_from, sync_to=sync_to, chunk_size=settings.chunk_size,
        page_size=settings.page_size,
    )  # fmt: skip
    graph_credentials(settings)  # a missing secret fails here, before anything is written
    _upgrade(runtime)
    _sync_and_report(runtime, request, settings.graph_url, as_json, {})


@app.command()
def resume(
    job_id: Annotated[str, typer.Argument(help="The job to continue.")],
    graph_url: Annotated[str | None, typer.Option(help="Another Graph host.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue an unfinished job from its last checkpoint."""
    from mailsync.db import redact_url
    from mailsync.flows.sync_mailbox import sync_mailbox
    from mailsync.jobs import job_summary, load_job, start_job

    runtime = _runtime(graph_url=graph_url)
    _upgrade(runtime)
    started = time.perf_counter()
    job = start_job(runtime.db, load_job(runtime.db, job_id))
    _run_with_progress(
        runtime, str(job["id"]),
        lambda: sync_mailbox(job_id=str(job["id"]), graph_url=runtime.settings.graph_url),
        as_json,
    )  # fmt: skip
    summary = job_summary(runtime.db, job["id"])
    summary["elapsed_s"] = round(time.perf_counter() - started, 3)
    summary["database_url"] = redact_url(runtime.db.url)
    _print_summary(summary, as_json)


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="A sync job id.")], as_json: JsonOpt = False
) -> None:
    """Show a job's progress and totals."""
    from mailsync.db import redact_url
    from mailsync.jobs import job_summary

    runtime = _runtime()
    _upgrade(runtime)
    from mailsync.jobs import _job_uuid

    summary = job_summary(runtime.db, _job_uuid(job_id))
    summary["database_url"] = redact_url(runtime.db.url)
    _print_summary(summary, as_json)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the schema (safe to run concurrently)."""
    from mailsync.db import redact_url
    from mailsync.migrate import upgrade
    from mailsync.runtime import resolve_database_url

    runtime = _runtime()
    url = resolve_database_url(runtime.settings)
    applied = upgrade(url)
    out.print(f"{redact_url(url)}: " + (", ".join(applied) if applied else "up to date"))


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (password removed); starts the embedded server if needed."""
    from mailsync.db import redact_url
    from mailsync.runtime import resolve_database_url

    out.print(redact_url(resolve_database_url(_runtime().settings)), soft_wrap=True)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL (it keeps running between commands)."""
    from mailsync.pgembed import stop_embedded

    home = _runtime().settings.home
    out.print("stopped" if stop_embedded(home) else f"no embedded database under {home}")


@app.command()
def simulator(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8765,
    messages: Annotated[int, typer.Option(help="Messages in the mailbox.")] = 10_000,
    mailbox: Annotated[str, typer.Option(help="The mailbox's UPN.")] = "user@contoso.example",
    seed: Annotated[int, typer.Option(help="Seed of the generated mailbox.")] = 1,
) -> None:
    """Serve the Graph simulator (token endpoint + mail API) until interrupted."""
    from mailsync.simulator import serve_forever

    serve_forever(host, port, {mailbox: messages}, seed)


__import__("mailsync.cli_report", fromlist=["register"]).register(app)  # `mailsync report`


# -- commands defined in their own modules, registered here (one line each) --------------
__import__("mailsync.cli_cleanup", fromlist=["register"]).register(app)  # `mailsync cleanup`
__import__("mailsync.cli_bench", fromlist=["register"]).register(app)  # `mailsync bench`


def main() -> None:
    # Prefect leaves ~150,000 long-lived objects from its imports; the garbage collector
    # rescanned them all through a sync (~13% of its CPU). Freeze what exists by now.
    import gc

    import prefect  # noqa: F401  # imported first, so that the freeze covers its objects

    gc.freeze()
    try:
        app()
    except MailsyncError as exc:
        console.print(f"[bold red]error ({exc.category}):[/] {exc}")
        sys.exit(2)
