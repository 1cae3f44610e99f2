"""The `mailsync` command: one typer app; its commands live one module per group.

    common     what every command shares: the consoles, errors in one line, the runtime
    startup    the checks before a command writes: directories, Prefect, database, Graph
    sync       demo, sync, resume, status: a job's flow, run in this process
    db         db upgrade, db url, db stop
    cleanup    cleanup: the cleanup flow, run in this process
    report     report (its output: report_output)
    bench      bench, and the sync it measures (bench-child, hidden)
    simulator  simulator
    mailbox    mailbox add|list|remove|pause|resume|discover, sync-all: many mailboxes
    notifications  notifications serve|relay, subscriptions sync: change notifications

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
import warnings
from contextlib import AbstractContextManager, suppress
from typing import Annotated

import typer

from mailsync import collector
from mailsync.cli import (
    attachments,
    bench,
    cleanup,
    db,
    mailbox,
    notifications,
    report,
    simulator,
    sync,
)
from mailsync.cli.common import options, report_error
from mailsync.cli.startup import make_directory, prefect_home
from mailsync.errors import ConfigError

app = typer.Typer(
    help="Copy Microsoft 365 mailboxes through Microsoft Graph into Postgres, in chunks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def global_options(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an error, show its traceback as well.")
    ] = False,
) -> None:
    options.debug = debug


app.command()(sync.demo)
app.command()(sync.sync)
app.command()(sync.resume)
app.command()(sync.status)
app.command()(simulator.simulator)
app.command()(report.report)
app.command()(cleanup.cleanup)
app.command()(bench.bench)
app.command("bench-child", hidden=True)(bench.bench_child)
app.command("bench-many-child", hidden=True)(bench.bench_many_child)
app.add_typer(db.app, name="db")
app.add_typer(attachments.app, name="attachments")
app.add_typer(mailbox.app, name="mailbox")
app.command("sync-all")(mailbox.sync_all)
app.add_typer(notifications.notifications_app, name="notifications")
app.add_typer(notifications.subscriptions_app, name="subscriptions")


def main() -> None:
    # Prefect makes its home when imported, but not the home's parents. Make them here; a
    # home that cannot be made is reported by the commands that run flows (startup).
    with suppress(ConfigError):
        make_directory(prefect_home(), "PREFECT_HOME")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Failed to create the Prefect home directory")
        import prefect  # noqa: F401  # imported first, so that the freeze covers its objects

    collector.set_gc_policy()
    try:
        with no_flow_heartbeats():
            app()
    except Exception as exc:  # typer has handled usage errors; this is the command's failure
        sys.exit(report_error(exc))


def no_flow_heartbeats() -> AbstractContextManager[object]:
    """Prefect's flow-run heartbeats off for the flows this command runs in-process.

    Prefect 3.8 sends them by default (every 180 s, for its zombie-run automation) from a
    thread that sleeps in 1 s steps and is joined when the flow ends: every command's flow
    run took up to a second longer, most of a sync that found nothing new. The price: a
    command killed outright leaves its flow run Running in the UI, as before Prefect 3.8
    (its chunks are taken back by the cleanup's stuck-chunk recovery either way).
    Deployment runs keep Prefect's default. The setting lives in a context: a thread that
    runs a flow takes a copy (sync._with_progress). The test suite runs its in-process
    flows under it too (tests/conftest.py)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
