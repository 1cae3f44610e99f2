"""`mailsync db upgrade`, `db url` and `db stop`: the schema and the embedded PostgreSQL."""

from __future__ import annotations

import typer

from mailsync.cli.common import configure_runtime, out
from mailsync.cli.startup import database_url
from mailsync.runtime import resolve_database_url
from mailsync.store.db import redact_url
from mailsync.store.migrate import upgrade
from mailsync.store.pgembed import stop_embedded

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the schema (safe to run concurrently). Refuses, changing nothing,
    when a migration this database applied has changed since (docs/migrations.md)."""
    url = database_url(configure_runtime())
    applied = upgrade(url)
    out.print(f"{redact_url(url)}: " + (", ".join(applied) if applied else "up to date"))


@app.command("url")
def db_url() -> None:
    """Print the database URL (password removed); starts the embedded server if needed."""
    out.print(redact_url(resolve_database_url(configure_runtime().settings)), soft_wrap=True)


@app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL (it keeps running between commands)."""
    home = configure_runtime().settings.home
    out.print("stopped" if stop_embedded(home) else f"no embedded database under {home}")
