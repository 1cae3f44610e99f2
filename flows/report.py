"""Flow: publish the chunk report as Prefect artifacts, for the UI and for schedules.

build the report (mailsync.report) → one table artifact per table → a markdown summary.
Artifact keys are stable (``chunk-report-status``, … or ``chunk-report-<filter>-status``),
so every run adds a version to the same keys and the UI's latest version is today's answer.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mailsync.report import TABLE_TITLES, build_report, records, report_markdown, summary_text
from mailsync.runtime import get_runtime


def artifact_key_prefix(store: str | None = None, business_id: str | None = None) -> str:
    """``chunk-report`` plus the filters as a slug: keys allow lowercase, digits, dashes."""
    parts = ["chunk-report", *(value for value in (business_id, store) if value)]
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


@flow(name="chunk-report", log_prints=False)
def report(
    since: str = "24h", store: str | None = None, business_id: str | None = None
) -> dict[str, Any]:
    """Report on the chunks created since ``since`` (24h, 7d, an ISO date…), optionally of
    one store (id or mailbox) or business; returns the report as a JSON-able dict."""
    chunk_report = build_report(get_runtime().db, since=since, store=store, business=business_id)
    prefix = artifact_key_prefix(store, business_id)
    scope = chunk_report.scope.describe()
    # Empty tables are published too: a newer, empty version must replace stale numbers.
    for name, frame in chunk_report.tables().items():
        create_table_artifact(
            table=records(frame),
            key=f"{prefix}-{name}",
            description=f"{TABLE_TITLES[name]}, {scope}",
        )
    create_markdown_artifact(
        markdown=report_markdown(chunk_report),
        key=f"{prefix}-summary",
        description=f"Chunk report, {scope}",
    )
    get_run_logger().info("chunk report, %s\n%s", scope, summary_text(chunk_report))
    return chunk_report.to_dict()
