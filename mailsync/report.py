"""Chunk health reports: how many chunks succeeded, where and why they failed, how fast.

A report covers the chunks *created* in a window ``[since, until)`` (one job's chunks are
created together when it is planned, so a job is wholly in or out), optionally of one store
(id or mailbox) or one business. All its tables come from one database snapshot, read as
``mailsync_reporting`` in the business's tenant or, over all businesses, as the cross-tenant
``mailsync_maintenance`` role (which the database login must be allowed to take).

- ``status``: chunks by status, count and percent; the success rate is completed / finished
  (completed + failed): open chunks have no outcome yet.
- ``stores``: per store, the stores with a failed chunk first.
- ``errors``: chunks that carry an ``error_category``: failed for good, or still open with
  their last attempt's error. A chunk that failed an attempt and then completed carries no
  error any more (``complete_chunk_job`` clears it), so it shows as *recovered* in the
  summary and as a 2nd/3rd attempt in ``attempts``; its category is in Prefect's task runs.
- ``throughput``: per job, messages per second of chunk processing time, API calls per
  message.
- ``durations`` and ``attempts``: over the finished chunks that ran at least once (a chunk
  completed without running, because an earlier one exhausted the mailbox, took no time).
- ``trend``: the success rate per hour (windows up to 48 h) or per day, by creation time.

A ratio with nothing to divide is ``None`` (``NaN`` inside the DataFrames), never 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict
from uuid import UUID

import pandas as pd

from mailsync import validate
from mailsync.errors import InvalidInputError
from mailsync.store.db import Database, Session

Source = Database | Session | str  # a database, a transaction already open, or a URL

TABLE_TITLES = {
    "status": "Chunk outcomes",
    "stores": "Stores, problem stores first",
    "errors": "Chunks with an error, by category",
    "throughput": "Throughput per job",
    "durations": "Chunk durations (ms)",
    "attempts": "Attempts per finished chunk",
    "trend": "Success rate over time (UTC)",
    "attachments": "Attachments by store (fetched in the window)",
}
TABLES = tuple(TABLE_TITLES)
STATUSES = ("completed", "failed", "retrying", "processing", "pending")
FINISHED = ("completed", "failed")
HOURLY_UP_TO = timedelta(hours=48)  # longer windows get a daily trend: ≤ 48 points either way

_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_WINDOW_FORMS = (
    "expected a duration like 90m, 24h, 7d or 2w, or an ISO date or datetime like "
    "2024-05-01 or 2024-05-01T08:00:00Z"
)

STATUS_COLUMNS = ("status", "count", "percent")
STORE_COLUMNS = (
    "store_id",
    "business_id",
    "mailbox",
    "folder",
    "chunks",
    "completed_chunks",
    "failed_chunks",
    "open_chunks",
    "emails_synced",
    "last_sync",
    "health",
    "consecutive_failures",
)
ATTACHMENT_COLUMNS = (
    "store_id",
    "mailbox",
    "attachments",
    "stored",
    "deduplicated",
    "unavailable",
    "failed",
    "pending",
    "mb",
)
ERROR_COLUMNS = (
    "error_category",
    "chunks",
    "failed_chunks",
    "open_chunks",
    "sample_message",
    "last_seen",
)
JOB_COLUMNS = (
    "job_id",
    "mailbox",
    "folder",
    "sync_type",
    "job_status",
    "chunks",
    "failed_chunks",
    "emails",
    "emails_added",
    "emails_updated",
    "emails_deleted",
    "delta_resets",
    "api_calls",
    "processing_time_ms",
    "started_at",
    "completed_at",
)
CHUNK_COLUMNS = (
    "status",
    "attempts",
    "processing_time_ms",
    "emails_processed",
    "api_calls_made",
    "created_at",
)
DURATION_COLUMNS = ("outcome", "chunks", "p50_ms", "p95_ms", "p99_ms", "max_ms")
ATTEMPT_COLUMNS = ("attempts", "chunks", "completed", "failed", "percent")
TREND_COLUMNS = ("bucket", "chunks", "completed", "failed", "open", "success_rate")
_ID_COLUMNS = {"store_id", "business_id", "job_id"}
_TIME_COLUMNS = {"last_sync", "last_seen", "started_at", "completed_at", "created_at"}


# -- the window and the filters -------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    @property
    def bucket(self) -> str:
        """The trend's step: hours for windows up to two days, days beyond."""
        return "hour" if self.until - self.since <= HOURLY_UP_TO else "day"


def parse_window(
    since: str = "24h", until: str | None = None, *, now: datetime | None = None
) -> Window:
    """``since``/``until``: a duration before ``now`` (90m, 24h, 7d, 2w) or an ISO date or
    datetime (UTC when naive); ``until`` defaults to now. Bad input: InvalidInputError."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start = parse_instant(since, "--since", now)
    end = now if until is None or not until.strip() else parse_instant(until, "--until", now)
    if start >= end:
        raise InvalidInputError(
            f"invalid window: --since {start.isoformat()} is not before --until {end.isoformat()}"
        )
    return Window(start, end)


def parse_instant(text: str, option: str, now: datetime) -> datetime:
    """One end of a window, as an aware UTC datetime."""
    value = text.strip()
    if not value:
        raise InvalidInputError(f"invalid {option} {text!r}: {_WINDOW_FORMS}")
    duration = _DURATION.fullmatch(value.lower())
    if duration:
        return _before(now, int(duration[1]), duration[2], option, text)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"invalid {option} {text!r}: {_WINDOW_FORMS}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _before(now: datetime, amount: int, unit: str, option: str, text: str) -> datetime:
    if amount < 1:
        raise InvalidInputError(f"invalid {option} {text!r}: a duration must be at least 1{unit}")
    try:
        return now - timedelta(**{_UNITS[unit]: amount})
    except OverflowError:
        raise InvalidInputError(f"invalid {option} {text!r}: reaches back too far") from None


@dataclass(frozen=True)
class ReportScope:
    """Which chunks a report covers: a window, and optionally one store or one business."""

    window: Window
    store: str | None = None  # a store id or a mailbox
    business: UUID | None = None

    @classmethod
    def parse(
        cls,
        since: str = "24h",
        until: str | None = None,
        store: str | None = None,
        business: str | UUID | None = None,
        *,
        now: datetime | None = None,
    ) -> ReportScope:
        window = parse_window(since, until, now=now)
        business_id = validate.business_id(business) if business else None
        return cls(window, (store or "").strip() or None, business_id)

    def params(self) -> dict[str, Any]:
        return {
            "since": self.window.since,
            "until": self.window.until,
            "store": self.store,
            "business": self.business,
        }

    def describe(self) -> str:
        text = f"{_utc(self.window.since)} to {_utc(self.window.until)} UTC"
        if self.store:
            text += f", store {self.store}"
        if self.business:
            text += f", business {self.business}"
        return text


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


# -- the tables -----------------------------------------------------------------------------


@contextmanager
def _session(source: Source, business: UUID | None = None) -> Iterator[Session]:
    """A read-only snapshot of the scope's tenants, unless the caller passes a transaction.

    Row-level security shows a transaction only its tenant's rows: one business is read as
    ``mailsync_reporting`` in that tenant; a report over all businesses needs the
    cross-tenant ``mailsync_maintenance`` role (mailsync.store.roles, docs/security.md).
    """
    if isinstance(source, Session):
        yield source
        return
    database = Database(source, max_size=1) if isinstance(source, str) else source
    try:
        with (
            database.reporting_transaction(business)
            if business
            else database.maintenance_transaction()
        ) as session:
            session.execute("report_snapshot")  # SET ROLE/tenant took no snapshot: still first
            yield session
    finally:
        if isinstance(source, str):
            database.close()


def _frame(
    source: Source, query: str, scope: ReportScope, columns: tuple[str, ...]
) -> pd.DataFrame:
    with _session(source, scope.business) as session:
        rows = session.all(query, **scope.params())
    frame = pd.DataFrame(rows, columns=list(columns))
    for column in frame.columns:
        if column in _ID_COLUMNS:
            frame[column] = frame[column].map(str)
        elif column in _TIME_COLUMNS:  # aware, in UTC, NaT for NULL (even when all are NULL)
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _ratio(numerator: pd.Series, denominator: pd.Series, digits: int) -> pd.Series:
    """numerator / denominator, NaN (not inf, not 0) where the denominator is 0."""
    return (numerator / denominator.where(denominator > 0)).astype(float).round(digits)


def _success_rate(completed: pd.Series, failed: pd.Series) -> pd.Series:
    return _ratio(100 * completed, completed + failed, 2)


def chunk_outcomes(source: Source, scope: ReportScope) -> pd.DataFrame:
    """Chunks by status: ``status``, ``count``, ``percent`` (of all chunks in scope)."""
    return _frame(source, "report_status_counts", scope, STATUS_COLUMNS)


def store_health(source: Source, scope: ReportScope) -> pd.DataFrame:
    """Per store: chunks, failures, success rate (%), messages synced, last completed chunk,
    and a registered mailbox's health (``backing_off``: a problem mailbox) and streak."""
    stores = _frame(source, "report_store_health", scope, STORE_COLUMNS)
    rate = _success_rate(stores["completed_chunks"], stores["failed_chunks"])
    stores.insert(stores.columns.get_loc("open_chunks") + 1, "success_rate", rate)
    return stores


def failures_by_category(source: Source, scope: ReportScope) -> pd.DataFrame:
    """Chunks carrying an error, by ``error_category``, with the newest message as a sample."""
    return _frame(source, "report_error_categories", scope, ERROR_COLUMNS)


def job_throughput(source: Source, scope: ReportScope) -> pd.DataFrame:
    """Per job: messages per second of chunk processing time and API calls per message."""
    jobs = _frame(source, "report_job_totals", scope, JOB_COLUMNS)
    jobs["emails_per_s"] = _ratio(jobs["emails"] * 1000, jobs["processing_time_ms"], 1)
    jobs["api_calls_per_email"] = _ratio(jobs["api_calls"], jobs["emails"], 3)
    return jobs


def attachment_outcomes(source: Source, scope: ReportScope) -> pd.DataFrame:
    """Per store, the attachments tried in the window: stored (new contents), deduplicated,
    unavailable (for good), failed (for now), still pending, MB; and the failure rate (%):
    unavailable and failed of those tried."""
    frame = _frame(source, "report_attachments", scope, ATTACHMENT_COLUMNS)
    tried = frame["stored"] + frame["deduplicated"] + frame["unavailable"] + frame["failed"]
    frame["failure_rate"] = _ratio(100 * (frame["unavailable"] + frame["failed"]), tried, 2)
    return frame


def chunk_rows(source: Source, scope: ReportScope) -> pd.DataFrame:
    """One row per chunk in scope (status, attempts, time, created_at) for the pandas tables."""
    return _frame(source, "report_chunk_rows", scope, CHUNK_COLUMNS)


def _ran(chunks: pd.DataFrame) -> pd.DataFrame:
    """The finished chunks that ran at least once."""
    return chunks[chunks["status"].isin(FINISHED) & (chunks["attempts"] >= 1)]


def chunk_durations(chunks: pd.DataFrame) -> pd.DataFrame:
    """p50/p95/p99/max of ``processing_time_ms``: all finished chunks, completed, failed."""
    ran = _ran(chunks)
    rows = []
    for outcome, subset in (
        ("finished", ran),
        ("completed", ran[ran["status"] == "completed"]),
        ("failed", ran[ran["status"] == "failed"]),
    ):
        if subset.empty:
            continue
        millis = subset["processing_time_ms"].astype(float)
        p50, p95, p99 = (round(float(q), 1) for q in millis.quantile([0.5, 0.95, 0.99]))
        rows.append(
            {
                "outcome": outcome,
                "chunks": len(subset),
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "max_ms": int(millis.max()),
            }
        )
    return pd.DataFrame(rows, columns=list(DURATION_COLUMNS))


def attempts_distribution(chunks: pd.DataFrame) -> pd.DataFrame:
    """How many finished chunks needed 1, 2, 3… attempts, and how they ended."""
    ran = _ran(chunks)
    if ran.empty:
        return pd.DataFrame(columns=list(ATTEMPT_COLUMNS))
    counts = pd.crosstab(ran["attempts"].astype(int), ran["status"])
    counts = counts.reindex(columns=list(FINISHED), fill_value=0)
    counts["chunks"] = counts.sum(axis=1)
    counts["percent"] = (100 * counts["chunks"] / counts["chunks"].sum()).round(2)
    counts = counts.rename_axis(index="attempts", columns=None).reset_index()
    return counts[list(ATTEMPT_COLUMNS)]


def success_trend(chunks: pd.DataFrame, bucket: str) -> pd.DataFrame:
    """Chunks by outcome and success rate (%) per hour or day of creation (UTC); the quiet
    hours between the first and the last busy one are kept, with no rate."""
    if chunks.empty:
        return pd.DataFrame(columns=list(TREND_COLUMNS))
    step = "h" if bucket == "hour" else "D"
    starts = pd.to_datetime(chunks["created_at"], utc=True).dt.floor(step)
    counts = pd.crosstab(starts, chunks["status"]).reindex(columns=list(STATUSES), fill_value=0)
    every_step = pd.date_range(counts.index.min(), counts.index.max(), freq=step)
    counts = counts.reindex(every_step, fill_value=0)
    trend = pd.DataFrame(
        {
            "bucket": counts.index,
            "chunks": counts.sum(axis=1).to_numpy(),
            "completed": counts["completed"].to_numpy(),
            "failed": counts["failed"].to_numpy(),
        }
    )
    trend["open"] = trend["chunks"] - trend["completed"] - trend["failed"]
    trend["success_rate"] = _success_rate(trend["completed"], trend["failed"])
    return trend


# -- the report -----------------------------------------------------------------------------


class ReportSummary(TypedDict):
    """The report's totals over its window (JSON-able: ``--json``'s ``summary``)."""

    since: str
    until: str
    bucket: str
    store: str | None
    business: str | None
    chunks: int
    completed: int
    failed: int
    open: int  # pending, retrying or processing
    success_rate: float | None  # completed of finished, in percent; None: none finished
    recovered: int  # completed after a retry
    emails_synced: int
    api_calls: int
    p95_ms: float | None
    errors: dict[str, int]  # failed chunks by error category


@dataclass(frozen=True)
class ChunkReport:
    scope: ReportScope
    status: pd.DataFrame
    stores: pd.DataFrame
    errors: pd.DataFrame
    throughput: pd.DataFrame
    durations: pd.DataFrame
    attempts: pd.DataFrame
    trend: pd.DataFrame
    attachments: pd.DataFrame
    summary: ReportSummary

    @property
    def is_empty(self) -> bool:
        return bool(self.summary["chunks"] == 0)

    @property
    def message(self) -> str | None:
        """What to say instead of tables when the window holds no chunk."""
        return f"no chunks in this window ({self.scope.describe()})" if self.is_empty else None

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in TABLES}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``summary`` (with ``message`` when empty) and one list of records per
        table."""
        return {"summary": {**self.summary, "message": self.message}} | {
            name: records(frame) for name, frame in self.tables().items()
        }


def build_report(
    source: Source,
    since: str = "24h",
    until: str | None = None,
    store: str | None = None,
    business: str | UUID | None = None,
    *,
    now: datetime | None = None,
) -> ChunkReport:
    """The report of one window and filter (see the module doc); bad input: InvalidInputError."""
    return report_for(source, ReportScope.parse(since, until, store, business, now=now))


def report_for(source: Source, scope: ReportScope) -> ChunkReport:
    with _session(source, scope.business) as session:
        status = chunk_outcomes(session, scope)
        stores = store_health(session, scope)
        errors = failures_by_category(session, scope)
        throughput = job_throughput(session, scope)
        chunks = chunk_rows(session, scope)
        attachments = attachment_outcomes(session, scope)
    durations = chunk_durations(chunks)
    summary = _summary(scope, status, chunks, durations, errors)
    return ChunkReport(
        scope,
        status,
        stores,
        errors,
        throughput,
        durations,
        attempts_distribution(chunks),
        success_trend(chunks, scope.window.bucket),
        attachments,
        summary,
    )


def _summary(
    scope: ReportScope,
    status: pd.DataFrame,
    chunks: pd.DataFrame,
    durations: pd.DataFrame,
    errors: pd.DataFrame,
) -> ReportSummary:
    counts = {row["status"]: int(row["count"]) for row in status.to_dict("records")}
    total = sum(counts.values())
    completed, failed = counts.get("completed", 0), counts.get("failed", 0)
    finished = completed + failed
    finished_times = durations[durations["outcome"] == "finished"]
    return {
        "since": scope.window.since.isoformat(),
        "until": scope.window.until.isoformat(),
        "bucket": scope.window.bucket,
        "store": scope.store,
        "business": str(scope.business) if scope.business else None,
        "chunks": total,
        "completed": completed,
        "failed": failed,
        "open": total - completed - failed,
        "success_rate": round(100 * completed / finished, 2) if finished else None,
        "recovered": int(((chunks["status"] == "completed") & (chunks["attempts"] > 1)).sum()),
        "emails_synced": int(chunks["emails_processed"].sum()),
        "api_calls": int(chunks["api_calls_made"].sum()),
        "p95_ms": None if finished_times.empty else float(finished_times["p95_ms"].iloc[0]),
        "errors": {row["error_category"]: int(row["chunks"]) for row in errors.to_dict("records")},
    }


# -- plain renderings (shared by the CLI and the flow) --------------------------------------


def plain(value: Any) -> Any:
    """A cell as JSON: None for NaN/NaT, ISO text for times, Python numbers for numpy's."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, datetime):  # pd.Timestamp too
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value.item() if hasattr(value, "item") else value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{key: plain(value) for key, value in row.items()} for row in frame.to_dict("records")]


def display(value: Any) -> str:
    """A cell for people: thousands separators, two decimals (three digits below 1), times
    to the minute, a dash for nothing."""
    if isinstance(value, datetime) and value is not pd.NaT:  # NaT is a datetime too
        return _utc(value)
    value = plain(value)
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    # small ratios (API calls per message) keep three significant digits, not "0.00"
    return f"{value:,.2f}" if value == 0 or abs(value) >= 1 else f"{value:.3g}"


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return display(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def report_markdown(report: ChunkReport) -> str:
    """The whole report as one markdown document (the flow's summary artifact)."""
    parts = [f"# Chunk report\n\n{report.scope.describe()}\n"]
    if report.is_empty:
        return parts[0] + f"\n{report.message}\n"
    parts.append(f"```\n{summary_text(report)}\n```\n")
    for name, frame in report.tables().items():
        table = markdown_table(frame) if len(frame) else "(none)"
        parts.append(f"## {TABLE_TITLES[name]}\n\n{table}\n")
    return "\n".join(parts)


def summary_text(report: ChunkReport) -> str:
    """Three lines: outcomes, success rate and p95 duration, errors by category."""
    if report.is_empty:
        return str(report.message)
    s = report.summary
    by_status = ", ".join(f"{row['status']} {row['count']:,}" for row in records(report.status))
    rate = "—" if s["success_rate"] is None else f"{s['success_rate']:.2f}%"
    p95 = "—" if s["p95_ms"] is None else f"{s['p95_ms'] / 1000:,.2f} s"
    errors = ", ".join(f"{category} {n:,}" for category, n in s["errors"].items()) or "none"
    return "\n".join(
        (
            f"chunks {s['chunks']:,}: {by_status}",
            f"success rate {rate} ({s['recovered']:,} recovered after a retry) · p95 chunk {p95}",
            f"errors: {errors}",
        )
    )


def short_report(db: Source, store_id: str | None = None, since: str = "24h") -> str:
    """A compact report for the end of a demo or sync: a title line and ``summary_text``."""
    report = build_report(db, since=since, store=store_id)
    if report.is_empty:
        return str(report.message)
    return f"chunk report, {report.scope.describe()}\n{summary_text(report)}"
