"""`mailsync report`: the chunk report as terminal tables, CSV/markdown files, JSON, a PNG.

The command parses its options here; the report and its output (``report_output``) are
imported when it runs: they bring pandas (~45 MB, ~0.4 s), which no other command needs.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mailsync.cli.common import configure_runtime, console, fail, out, upgrade_database
from mailsync.errors import ConfigError, InvalidInputError


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


def report(
    since: Annotated[
        str, typer.Option(help="Window start: 90m, 24h, 7d, 2w ago, or an ISO date/datetime (UTC).")
    ] = "24h",
    until: Annotated[
        str | None, typer.Option(help="Window end, in the same forms (default: now).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Only this store: its id or its mailbox.")
    ] = None,
    business: Annotated[str | None, typer.Option(help="Only this business (tenant) UUID.")] = None,
    output_format: Annotated[
        ReportFormat,
        typer.Option(
            "--format",
            help=(
                "table: the terminal; csv, markdown: one file per table in --out; "
                "json: one object on stdout."
            ),
        ),
    ] = ReportFormat.table,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the csv/markdown files.")
    ] = Path("."),
    png: Annotated[
        Path | None, typer.Option("--png", help="Also draw a chart into this PNG file.")
    ] = None,
) -> None:
    """How healthy are the syncs: chunk outcomes, problem stores, errors, speed, trend."""
    from mailsync.cli import report_output
    from mailsync.report import ReportScope, report_for

    try:
        scope = ReportScope.parse(since, until, store, business)
    except InvalidInputError as exc:
        fail(str(exc))
    runtime = configure_runtime()
    upgrade_database(runtime)
    try:
        chunk_report = report_for(runtime.db, scope)
    except ConfigError as exc:
        # all businesses at once take the cross-tenant role; one business does not
        fail(f"{exc}" + ("" if scope.business else "; or report on one business: --business ID"))
    if output_format is ReportFormat.json:
        typer.echo(json.dumps(chunk_report.to_dict()))
    elif output_format is ReportFormat.table:
        report_output.print_tables(out, chunk_report)
    else:
        written = report_output.write_files(chunk_report, out_dir, output_format)
        console.print(f"wrote {len(written)} {output_format} files to {out_dir}")
        if chunk_report.is_empty:
            console.print(str(chunk_report.message))
    if png is not None:
        report_output.write_chart(chunk_report, png)
        console.print(f"chart written to {png}")
