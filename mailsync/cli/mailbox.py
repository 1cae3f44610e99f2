"""`mailsync mailbox add|list|remove|pause|resume|discover`: the mailbox registry.

Each command works as one business (``--business``, default: the one derived from
MAILSYNC_TENANT_ID, as `mailsync sync` does), under row-level security. A bad mailbox, a
second add, or a mailbox that is not registered is an error (exit 2) that changes nothing.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

import typer

from mailsync import validate
from mailsync.cli.common import (
    JsonOpt,
    configure_runtime,
    console,
    out,
    prepare_flow_run,
    upgrade_database,
)
from mailsync.cli.tables import Col, print_fitted
from mailsync.errors import ConflictError, InvalidInputError
from mailsync.runtime import Runtime, graph_credentials
from mailsync.store.rows import RegistryEntry
from mailsync.sync.jobs import default_business_id
from mailsync.sync.registry import (
    DEFAULT_INTERVAL_MINUTES,
    MAX_INTERVAL_MINUTES,
    Registration,
    add_mailbox,
    describe,
    list_mailboxes,
    pool_size_for,
    remove_mailbox,
    set_enabled,
)

app = typer.Typer(help="The mailboxes sync-all keeps current.", no_args_is_help=True)

Mailbox = Annotated[str, typer.Argument(help="UPN or user id of the mailbox.")]
BusinessOpt = Annotated[
    str | None,
    typer.Option("--business", help="Business (tenant) UUID; default: from MAILSYNC_TENANT_ID."),
]

# In order on screen; ``rank``: what a narrow terminal keeps first (mailsync.cli.tables).
_COLUMNS = (
    Col("mailbox", "mailbox", rank=0),
    Col("folder", "folder", rank=6),
    Col("health", "health", rank=1),
    Col("interval_minutes", "every (min)", rank=7, justify="right"),
    Col("next_due_at", "next due", rank=4),
    Col("last_status", "last job", rank=2),
    Col("last_success_at", "last success", rank=3),
    Col("consecutive_failures", "failures", rank=5, justify="right"),
    Col("subscription_expires_at", "notified until", rank=6),  # empty: polled only
    Col("missed_changes", "missed", rank=5, justify="right"),
    Col("last_error", "last error", rank=8, fold=True),
)
_SYNC_ALL_COLUMNS = (
    Col("mailbox", "mailbox", rank=0),
    Col("started", "started", rank=4),
    Col("status", "status", rank=1),
    Col("messages", "messages", rank=2, justify="right"),
    Col("last_success", "last success", rank=3),
    Col("health", "health", rank=1),
    Col("error", "error", rank=6, fold=True),
)
_DISCOVER_COLUMNS = (
    Col("mailbox", "mailbox", rank=0),
    Col("display_name", "display name", rank=5),
    Col("account_enabled", "enabled", rank=3),
    Col("has_mailbox", "has mailbox", rank=1),
    Col("registered", "registered", rank=2),
    Col("added", "added", rank=2),
    Col("reason", "reason", rank=6, fold=True),
)


def _business(business: str | None, runtime: Runtime | None = None) -> tuple[Runtime, str]:
    """The runtime and the business, checked; the database is not touched yet, so that a
    bad argument fails before the embedded PostgreSQL would start."""
    runtime = runtime or configure_runtime()
    business_id = business or default_business_id(runtime.settings.tenant_id)
    return runtime, str(validate.business_id(business_id))


def _open(business: str | None) -> tuple[Runtime, str]:
    runtime, business_id = _business(business)
    upgrade_database(runtime)
    return runtime, business_id


def _cell(value: Any) -> str:
    """A table cell: times to the minute, in UTC (the JSON keeps them whole)."""
    if value is None:
        return ""
    text = str(value)
    if len(text) > 16 and text[10:11] == "T" and text.endswith("+00:00"):
        return text[:16].replace("T", " ")
    return text


def _print_json(obj: dict[str, Any]) -> None:
    out.print(json.dumps(obj, default=str), soft_wrap=True, highlight=False)


def _done(verb: str, entry: RegistryEntry, as_json: bool) -> None:
    if as_json:
        _print_json({"action": verb, **describe(entry)})
    else:
        console.print(f"{verb}: {entry.mailbox}")


@app.command("add")
def add(
    mailbox: Mailbox,
    folder: Annotated[str, typer.Option(help="Folder selection: 'all' or one folder.")] = "all",
    business: BusinessOpt = None,
    schedule_minutes: Annotated[
        int, typer.Option(help="Sync it every N minutes (sync-all starts it when due).")
    ] = DEFAULT_INTERVAL_MINUTES,
    as_json: JsonOpt = False,
) -> None:
    """Register a mailbox: sync-all syncs it from its next run on."""
    runtime, business_id = _business(business)
    registration = Registration.checked(business_id, mailbox, folder, schedule_minutes)
    upgrade_database(runtime)
    _done("registered", add_mailbox(runtime.db, registration), as_json)


@app.command("list")
def list_(business: BusinessOpt = None, as_json: JsonOpt = False) -> None:
    """The registered mailboxes, problem mailboxes first."""
    runtime, business_id = _open(business)
    rows = [describe(row) for row in list_mailboxes(runtime.db, business_id)]
    if as_json:
        _print_json({"business_id": business_id, "mailboxes": rows})
        return
    print_fitted(out, f"mailboxes of business {business_id}", _COLUMNS, rows, _cell)
    if not rows:
        console.print("no mailboxes registered: `mailsync mailbox add UPN`")


@app.command("remove")
def remove(
    mailbox: Mailbox,
    purge: Annotated[
        bool, typer.Option(help="Also delete its store: its mail, jobs and folders.")
    ] = False,
    business: BusinessOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop syncing a mailbox; its mail stays unless --purge."""
    runtime, business_id = _business(business)
    validate.mailbox(mailbox)
    upgrade_database(runtime)
    row = remove_mailbox(runtime.db, business_id, mailbox, purge=purge)
    _done("purged" if purge else "removed", row, as_json)


@app.command("pause")
def pause(mailbox: Mailbox, business: BusinessOpt = None, as_json: JsonOpt = False) -> None:
    """Stop syncing a mailbox for now (sync-all skips it until resumed)."""
    runtime, business_id = _business(business)
    validate.mailbox(mailbox)
    upgrade_database(runtime)
    _done("paused", set_enabled(runtime.db, business_id, mailbox, False), as_json)


@app.command("resume")
def resume(mailbox: Mailbox, business: BusinessOpt = None, as_json: JsonOpt = False) -> None:
    """Sync a paused or backed-off mailbox again from the next sync-all on."""
    runtime, business_id = _business(business)
    validate.mailbox(mailbox)
    upgrade_database(runtime)
    _done("resumed", set_enabled(runtime.db, business_id, mailbox, True), as_json)


def sync_all(
    parallel: Annotated[
        int, typer.Option(min=1, max=64, help="Mailboxes synced at the same time.")
    ] = 4,
    business: BusinessOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many mailboxes.")] = 1000,
    chunk_size: Annotated[int | None, typer.Option(help="Messages per chunk.")] = None,
    page_size: Annotated[int | None, typer.Option(help="Messages per Graph page (≤1000).")] = None,
    graph_url: Annotated[
        str | None, typer.Option(help="Another Graph host (e.g. a simulator).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync every registered mailbox that is due, here, N at a time."""
    from prefect.futures import PrefectFuture
    from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

    from mailsync.flows.sync_all import sync_all as sync_all_flow  # the flow's imports

    runtime = configure_runtime(
        graph_url=graph_url,
        page_size=page_size,
        chunk_size=chunk_size,
        db_pool_size=pool_size_for(parallel),
    )
    _, business_id = _business(business, runtime)
    prepare_flow_run(runtime, graph=True)  # Prefect, Graph, the database: before any claim
    # N threads: N mailboxes at a time (Prefect's own annotation is invariant in the future
    # type, hence the cast).
    runner = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=parallel))
    flow = sync_all_flow.with_options(task_runner=runner)
    result = flow(business_id=business_id, limit=limit, chunk_size=chunk_size, page_size=page_size)
    if as_json:
        _print_json(result)
        return
    title = f"sync-all: {len(result['mailboxes'])} mailboxes due"
    print_fitted(out, title, _SYNC_ALL_COLUMNS, result["mailboxes"], _cell)


@app.command("discover")
def discover(
    add: Annotated[bool, typer.Option("--add", help="Register the mailboxes found.")] = False,
    business: BusinessOpt = None,
    schedule_minutes: Annotated[
        int, typer.Option(help="With --add: sync each every N minutes.")
    ] = DEFAULT_INTERVAL_MINUTES,
    graph_url: Annotated[
        str | None, typer.Option(help="Another Graph host (e.g. a simulator).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the tenant's mailboxes through Graph (needs User.Read.All); --add registers them."""
    from mailsync.graph.discovery import discover as discover_mailboxes

    runtime = configure_runtime(graph_url=graph_url)
    _, business_id = _business(business, runtime)
    validate.positive(schedule_minutes, "schedule (minutes)", MAX_INTERVAL_MINUTES)
    graph_credentials(runtime.settings)
    upgrade_database(runtime)
    found = discover_mailboxes(runtime.graph())
    registered = {m.mailbox.lower() for m in list_mailboxes(runtime.db, business_id)}
    rows = []
    for item in found:
        row = {**item.as_json(), "registered": item.user.upn.lower() in registered, "added": False}
        if add and item.has_mailbox and not row["registered"]:
            row["added"] = row["registered"] = _register_found(
                runtime, business_id, item.user.upn, item.user.user_id, schedule_minutes
            )
        rows.append(row)
    result = {
        "business_id": business_id,
        "users": len(rows),
        "mailboxes": sum(r["has_mailbox"] for r in rows),
        "added": [r["mailbox"] for r in rows if r["added"]],
        "found": rows,
    }
    if as_json:
        _print_json(result)
        return
    title = f"{result['mailboxes']} mailboxes among {result['users']} users"
    print_fitted(out, title, _DISCOVER_COLUMNS, rows, _cell)


def _register_found(
    runtime: Runtime, business_id: str, upn: str, user_id: str, schedule_minutes: int
) -> bool:
    """Register a discovered mailbox by its UPN (by its id when the UPN is one mailsync does
    not accept); False when it is registered already (a concurrent add)."""
    try:
        name = validate.mailbox(upn)
    except InvalidInputError:
        name = user_id
    try:
        add_mailbox(runtime.db, Registration.checked(business_id, name, "all", schedule_minutes))
    except ConflictError:
        return False
    return True
