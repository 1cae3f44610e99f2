"""What every command shares: the consoles, failing with one line, the runtime and its checks.

Results (tables, the JSON line) go to stdout (``out``); progress, notes and errors go to
stderr (``console``), so that ``--json`` output stays parseable.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from mailsync import runtime
from mailsync.cli import startup
from mailsync.config import attachments_mode, load_settings
from mailsync.errors import MailsyncError
from mailsync.runtime import Runtime, graph_credentials
from mailsync.store.migrate import upgrade

console = Console(stderr=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


@dataclass
class Options:
    """The options of `mailsync` itself, before the command."""

    debug: bool = False


options = Options()


def fail(message: str, code: int = 2) -> NoReturn:
    """Refuse a command-line argument: one line on stderr, exit ``code``."""
    error_line("error", message)
    raise typer.Exit(code)


def error_line(label: str, message: str) -> None:
    """One line on stderr, however long: ``label: message`` (the message taken literally,
    never as rich markup, its line breaks joined)."""
    text = " ".join(message.split())
    console.print(f"[bold red]{escape(label)}:[/] {escape(text)}", soft_wrap=True)


def report_error(exc: Exception) -> int:
    """Say what failed in one line (the traceback too with --debug); the exit code."""
    if options.debug:
        traceback.print_exception(exc)
    if isinstance(exc, MailsyncError):
        error_line(f"error ({exc.category})", str(exc))
        return 2
    hint = "" if options.debug else " (--debug shows the traceback)"
    error_line("error", f"{type(exc).__name__}: {exc}{hint}")
    return 1


def configure_runtime(
    *,
    graph_url: str | None = None,
    page_size: int | None = None,
    chunk_size: int | None = None,
    stuck_after_s: float | None = None,
    db_pool_size: int | None = None,
    attachments: str | None = None,
) -> Runtime:
    """The process's runtime, from the environment and the command line's overrides (None:
    not given). Flows and tasks running in this process get the same one."""
    settings = load_settings().with_overrides(
        graph_url=graph_url,
        page_size=page_size,
        chunk_size=chunk_size,
        stuck_after_s=stuck_after_s,
        db_pool_size=db_pool_size,
        attachments=None if attachments is None else attachments_mode(attachments),
    )
    return runtime.configure(settings)


def upgrade_database(configured: Runtime) -> str:
    """Bring the runtime's database up to date (every command that reads or writes mail
    does this first); its URL. A database that cannot be reached fails here, saying so."""
    url = startup.database_url(configured)
    upgrade(url)
    return url


def prepare_flow_run(configured: Runtime, *, graph: bool) -> None:
    """Everything a flow run in this process needs, checked before anything is written:
    the Prefect API, with ``graph`` the Graph credentials (the secret may be a Prefect
    block, hence after the API), the database (upgraded), and with ``graph`` a token."""
    startup.check_prefect_api()
    if graph:
        graph_credentials(configured.settings)
    upgrade_database(configured)
    if graph:
        startup.check_graph_access(configured)
