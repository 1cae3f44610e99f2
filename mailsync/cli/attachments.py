"""`mailsync attachments get`: one stored attachment's bytes, to a file or stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mailsync.cli.common import configure_runtime, fail, out, upgrade_database
from mailsync.sync.jobs import default_business_id
from mailsync.validate import business_id as checked_business_id

app = typer.Typer(help="Stored attachments.", no_args_is_help=True)


@app.command("get")
def get(
    attachment_id: Annotated[str, typer.Argument(help="The attachment's Graph id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    business: Annotated[
        str | None, typer.Option(help="Business (tenant) UUID of the store.")
    ] = None,
) -> None:
    """Write one attachment's content (exactly the bytes Graph served)."""
    runtime = configure_runtime()
    upgrade_database(runtime)
    tenant = checked_business_id(business or default_business_id(runtime.settings.tenant_id))
    with runtime.db.reporting_transaction(tenant) as session:
        row = session.one("get_attachment_content", graph_attachment_id=attachment_id)
    if row is None:
        fail(f"no attachment {attachment_id!r} in business {tenant}")
    if row["content"] is None:
        why = (
            "a reference attachment has no content"
            if row["kind"] == "reference"
            else ("its content is not stored (not fetched yet, or Graph could not serve it)")
        )
        fail(f"attachment {attachment_id!r}: {why}")
    content = bytes(row["content"])
    if output is None:
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
    else:
        output.write_bytes(content)
        out.print(f"{output}: {len(content)} bytes, sha256 {row['sha256']} ({row['name']})")
