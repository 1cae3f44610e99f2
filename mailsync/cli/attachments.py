"""`mailsync attachments get`: one stored attachment's bytes, to a file or stdout."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Annotated

import typer

from mailsync.cli.common import configure_runtime, fail, out, upgrade_database
from mailsync.store.blobs import read_bytea
from mailsync.store.rows import StoredAttachment
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
        row = session.one_as(
            StoredAttachment, "get_attachment_content", graph_attachment_id=attachment_id
        )
        if row is None:
            fail(f"no attachment {attachment_id!r} in business {tenant}")
        if not row.stored or row.sha256 is None or row.size_bytes is None:
            why = (
                "a reference attachment has no content"
                if row.kind == "reference"
                else "its content is not stored (not fetched yet, or Graph could not serve it)"
            )
            fail(f"attachment {attachment_id!r}: {why}")
        parts = read_bytea(
            session,
            "attachment_content_part",
            row.size_bytes,
            business_id=tenant,
            sha256=row.sha256,
        )
        if output is None:
            _write(parts, sys.stdout.buffer, row.sha256)
            sys.stdout.buffer.flush()
            return
        # Into a file beside the output, renamed once whole and checked: a failed read
        # leaves an existing file as it was, and never half an attachment under its name.
        with tempfile.NamedTemporaryFile(
            dir=output.parent, prefix=f".{output.name}.", delete=False
        ) as part:
            try:
                _write(parts, part, row.sha256)
            except BaseException:
                os.unlink(part.name)
                raise
        os.replace(part.name, output)
    out.print(f"{output}: {row.size_bytes} bytes, sha256 {row.sha256} ({row.name})")


def _write(parts: Iterable[bytes], sink: IO[bytes], sha256: str) -> None:
    """The parts into ``sink``, checked against the content's SHA-256 as they pass."""
    digest = hashlib.sha256()
    for chunk in parts:
        digest.update(chunk)
        sink.write(chunk)
    if digest.hexdigest() != sha256:
        fail(f"the stored content does not match its sha256 {sha256}", code=1)
