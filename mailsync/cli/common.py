"""What every command shares: the two consoles, failing with a message, the runtime.

Results (tables, the JSON line) go to stdout (``out``); progress, notes and errors go to
stderr (``console``), so that ``--json`` output stays parseable.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer
from rich.console import Console

from mailsync import runtime
from mailsync.config import load_settings
from mailsync.migrate import upgrade
from mailsync.runtime import Runtime, resolve_database_url

console = Console(stderr=True)
out = Console()

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Refuse a command-line argument: one line on stderr, exit ``code``."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def configure_runtime(
    *,
    graph_url: str | None = None,
    page_size: int | None = None,
    chunk_size: int | None = None,
    stuck_after_s: float | None = None,
) -> Runtime:
    """The process's runtime, from the environment and the command line's overrides (None:
    not given). Flows and tasks running in this process get the same one."""
    settings = load_settings().with_overrides(
        graph_url=graph_url,
        page_size=page_size,
        chunk_size=chunk_size,
        stuck_after_s=stuck_after_s,
    )
    return runtime.configure(settings)


def upgrade_database(configured: Runtime) -> str:
    """Bring the runtime's database up to date (every command that reads or writes mail
    does this first); its URL."""
    url = resolve_database_url(configured.settings)
    upgrade(url)
    return url
