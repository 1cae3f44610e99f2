"""The `mailsync` command: one typer app; its commands live one module per group.

    common     what every command shares: the consoles, failing, the runtime
    sync       demo, sync, resume, status: a job's flow, run in this process
    db         db upgrade, db url, db stop
    cleanup    cleanup: the cleanup flow, run in this process
    report     report (its output: report_output)
    bench      bench, and the sync it measures (bench-child, hidden)
    simulator  simulator

Flows run in-process, against PREFECT_API_URL when set, else Prefect's ephemeral server.
Library modules never import this package, and the command modules import only ``common``
of it: no cycles.
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

import sys

import typer

from mailsync.cli import bench, cleanup, db, report, simulator, sync
from mailsync.cli.common import console
from mailsync.errors import MailsyncError

app = typer.Typer(
    help="Copy Microsoft 365 mailboxes through Microsoft Graph into Postgres, in chunks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(sync.demo)
app.command()(sync.sync)
app.command()(sync.resume)
app.command()(sync.status)
app.command()(simulator.simulator)
app.command()(report.report)
app.command()(cleanup.cleanup)
app.command()(bench.bench)
app.command("bench-child", hidden=True)(bench.bench_child)
app.add_typer(db.app, name="db")


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
