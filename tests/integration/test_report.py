"""The chunk report against a real Postgres: chunks seeded with chosen ages (exact windows),
and real syncs with injected failures. Every number the report gives is counted again here
by plain SQL written for the test, never by the report's own queries."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pandas as pd
import psycopg
import pytest
from click.testing import Result
from psycopg.rows import dict_row
from typer.testing import CliRunner

from mailsync.report import TABLES, ChunkReport, build_report, records, short_report
from mailsync.store.db import Database

ACME = UUID("00000000-0000-4000-8000-00000000ac3e")
FABRIKAM = UUID("00000000-0000-4000-8000-0000000fab00")
ADA, BOB, CY = "ada@contoso.example", "bob@contoso.example", "cy@fabrikam.example"

# (mailbox, business, age, job status, chunks as
#  (status, attempts, processing_time_ms, emails_processed, api_calls_made, error_category))
SEED: list[tuple[str, UUID, str, str, list[tuple[Any, ...]]]] = [
    (
        ADA,
        ACME,
        "2 hours",
        "partial_failure",
        [
            ("completed", 1, 1200, 500, 6, None),
            ("completed", 2, 3400, 500, 9, None),
            ("failed", 1, 800, 200, 3, "bad_data"),
            ("completed", 0, 0, 0, 0, None),
        ],
    ),
    (
        BOB,
        ACME,
        "20 minutes",
        "running",
        [
            ("completed", 1, 900, 400, 5, None),
            ("retrying", 1, 150, 0, 4, "throttled"),
            ("pending", 0, 0, 0, 0, None),
        ],
    ),
    (
        ADA,
        ACME,
        "30 hours",
        "partial_failure",
        [
            ("completed", 1, 2000, 500, 5, None),
            ("completed", 1, 2500, 500, 5, None),
            ("failed", 3, 4100, 0, 12, "throttled"),
        ],
    ),
    (
        CY,
        FABRIKAM,
        "5 days",
        "completed",
        [("completed", 1, 700, 300, 3, None), ("completed", 3, 5200, 300, 14, None)],
    ),
    (CY, FABRIKAM, "10 days", "partial_failure", [("failed", 2, 600, 0, 2, "auth")]),
]

INSERT_CHUNK = """
INSERT INTO chunked_sync_jobs (parent_sync_job_id, business_id, store_id, chunk_index,
    total_chunks, chunk_size, estimated_emails, status, attempts, processing_time_ms,
    emails_processed, api_calls_made, error_category, error_message, started_at, completed_at,
    created_at, updated_at)
SELECT %(job)s, %(business)s, %(store)s, %(index)s, %(total)s, 500, 500, %(status)s,
       %(attempts)s, %(ms)s, %(emails)s, %(api_calls)s, %(category)s, %(message)s,
       CASE WHEN %(attempts)s > 0 THEN t.created + %(index)s * interval '1 minute' END,
       CASE WHEN %(status)s IN ('completed', 'failed')
            THEN t.created + %(index)s * interval '2 minutes' END,
       t.created, t.created + %(index)s * interval '2 minutes'
  FROM (SELECT now() - %(age)s::interval AS created) AS t
"""


def seed(url: str) -> None:
    """SEED's stores, jobs and chunks, created the given age ago."""
    with psycopg.connect(url) as conn:
        for mailbox, business, age, job_status, chunks in SEED:
            store = conn.execute(
                "INSERT INTO stores (business_id, name, mailbox) VALUES (%s, %s, %s)"
                " ON CONFLICT (business_id, mailbox) DO UPDATE SET name = stores.name"
                " RETURNING id",
                (business, mailbox, mailbox),
            ).fetchone()[0]
            job = conn.execute(
                "INSERT INTO sync_queue (business_id, store_id, sync_type, status, chunk_size,"
                " page_size, total_chunks, created_at)"
                " VALUES (%s, %s, 'full', %s, 500, 100, %s, now() - %s::interval) RETURNING id",
                (business, store, job_status, len(chunks), age),
            ).fetchone()[0]
            for index, (status, attempts, ms, emails, api_calls, category) in enumerate(chunks, 1):
                message = f"{category}: chunk {index} of the job {age} ago" if category else None
                conn.execute(
                    INSERT_CHUNK,
                    {
                        "job": job,
                        "business": business,
                        "store": store,
                        "index": index,
                        "total": len(chunks),
                        "status": status,
                        "attempts": attempts,
                        "ms": ms,
                        "emails": emails,
                        "api_calls": api_calls,
                        "category": category,
                        "message": message,
                        "age": age,
                    },
                )


# -- the same numbers, counted by SQL written here ----------------------------------------


class Recount:
    """Counts over the chunks of one window predicate and filter, one plain query each."""

    def __init__(self, url: str, window_sql: str, where: str = "true", **params: Any) -> None:
        self.conn = psycopg.connect(url, row_factory=dict_row, autocommit=True)
        self.params = params
        self.chunks_sql = (
            f"FROM chunked_sync_jobs c JOIN stores s ON s.id = c.store_id"
            f" WHERE ({window_sql}) AND ({where})"
        )

    def __enter__(self) -> Recount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def rows(self, select: str, tail: str = "", **params: Any) -> list[dict[str, Any]]:
        query = f"SELECT {select} {self.chunks_sql} {tail}"
        return self.conn.execute(query, self.params | params).fetchall()  # type: ignore[arg-type]

    def value(self, select: str, condition: str = "true", **params: Any) -> Any:
        return next(iter(self.rows(select, f"AND ({condition})", **params)[0].values()))

    def count(self, condition: str = "true", **params: Any) -> int:
        return int(self.value("count(*)", condition, **params))


def assert_rounded(actual: float | None, exact: float | None, digits: int) -> None:
    """``actual`` is ``exact`` rounded to ``digits`` (either way at an exact half)."""
    if exact is None:
        assert actual is None
        return
    assert actual is not None and abs(actual - exact) <= 0.5 * 10**-digits + 1e-9, (actual, exact)


def rate(completed: int, failed: int) -> float | None:
    return 100 * completed / (completed + failed) if completed + failed else None


def assert_matches_sql(report: ChunkReport, recount: Recount) -> None:
    with recount:
        _check_status_and_summary(report, recount)
        _check_stores(report, recount)
        _check_errors(report, recount)
        _check_throughput(report, recount)
        _check_durations_and_attempts(report, recount)
        _check_trend(report, recount)


def _check_status_and_summary(report: ChunkReport, recount: Recount) -> None:
    total = recount.count()
    statuses = ("completed", "failed", "retrying", "processing", "pending")
    by_status = {status: recount.count("c.status = %(st)s", st=status) for status in statuses}
    assert {r["status"]: r["count"] for r in records(report.status)} == {
        status: n for status, n in by_status.items() if n
    }
    for row in records(report.status):
        assert_rounded(row["percent"], 100 * by_status[row["status"]] / total, 2)
    summary = report.summary
    completed, failed = by_status["completed"], by_status["failed"]
    assert (summary["chunks"], summary["completed"], summary["failed"], summary["open"]) == (
        total,
        completed,
        failed,
        total - completed - failed,
    )
    assert_rounded(summary["success_rate"], rate(completed, failed), 2)
    assert summary["recovered"] == recount.count("c.status = 'completed' AND c.attempts >= 2")
    assert summary["emails_synced"] == recount.value("coalesce(sum(c.emails_processed), 0)")
    assert summary["api_calls"] == recount.value("coalesce(sum(c.api_calls_made), 0)")


def _check_stores(report: ChunkReport, recount: Recount) -> None:
    rows = records(report.stores)
    expected_ids = {r["id"] for r in recount.rows("DISTINCT c.store_id::text AS id")}
    assert {r["store_id"] for r in rows} == expected_ids
    failed_flags = [r["failed_chunks"] > 0 for r in rows]
    assert failed_flags == sorted(failed_flags, reverse=True)  # problem stores first
    for row in rows:
        of_store = "c.store_id = %(store_id)s::uuid"
        sid = row["store_id"]
        completed = recount.count(f"{of_store} AND c.status = 'completed'", store_id=sid)
        failed = recount.count(f"{of_store} AND c.status = 'failed'", store_id=sid)
        assert row["chunks"] == recount.count(of_store, store_id=sid)
        assert (row["completed_chunks"], row["failed_chunks"]) == (completed, failed)
        assert row["open_chunks"] == row["chunks"] - completed - failed
        assert_rounded(row["success_rate"], rate(completed, failed), 2)
        assert row["emails_synced"] == recount.value(
            "sum(c.emails_processed)", of_store, store_id=sid
        )
        last = recount.value(
            "max(c.completed_at)", f"{of_store} AND c.status = 'completed'", store_id=sid
        )
        assert row["last_sync"] == (last.astimezone(UTC).isoformat() if last else None)


def _check_errors(report: ChunkReport, recount: Recount) -> None:
    rows = {r["error_category"]: r for r in records(report.errors)}
    expected = recount.rows(
        "DISTINCT c.error_category AS category", "AND c.error_category IS NOT NULL"
    )
    assert set(rows) == {r["category"] for r in expected}
    assert report.summary["errors"] == {name: row["chunks"] for name, row in rows.items()}
    for category, row in rows.items():
        of_category = "c.error_category = %(category)s"
        assert row["chunks"] == recount.count(of_category, category=category)
        assert row["failed_chunks"] == recount.count(
            f"{of_category} AND c.status = 'failed'", category=category
        )
        assert row["open_chunks"] == row["chunks"] - row["failed_chunks"]
        newest = recount.rows(
            "c.error_message",
            f"AND {of_category} ORDER BY c.updated_at DESC LIMIT 1",
            category=category,
        )
        assert row["sample_message"] == newest[0]["error_message"]


def _check_throughput(report: ChunkReport, recount: Recount) -> None:
    rows = records(report.throughput)
    jobs = recount.rows("DISTINCT c.parent_sync_job_id::text AS id")
    assert sorted(r["job_id"] for r in rows) == sorted(j["id"] for j in jobs)
    for row in rows:
        of_job = "c.parent_sync_job_id = %(job)s::uuid"
        emails = recount.value("sum(c.emails_processed)", of_job, job=row["job_id"])
        api_calls = recount.value("sum(c.api_calls_made)", of_job, job=row["job_id"])
        millis = recount.value("sum(c.processing_time_ms)", of_job, job=row["job_id"])
        assert (row["emails"], row["api_calls"], row["processing_time_ms"]) == (
            emails,
            api_calls,
            millis,
        )
        assert_rounded(row["emails_per_s"], emails * 1000 / millis if millis else None, 1)
        assert_rounded(row["api_calls_per_email"], api_calls / emails if emails else None, 3)


def _check_durations_and_attempts(report: ChunkReport, recount: Recount) -> None:
    ran = "c.status IN ('completed', 'failed') AND c.attempts >= 1"
    durations = {r["outcome"]: r for r in records(report.durations)}
    outcomes = (
        ("finished", ran),
        ("completed", f"{ran} AND c.status = 'completed'"),
        ("failed", f"{ran} AND c.status = 'failed'"),
    )
    for outcome, condition in outcomes:
        n = recount.count(condition)
        if n == 0:
            assert outcome not in durations
            continue
        exact = recount.rows(
            "percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY c.processing_time_ms)"
            " AS p, max(c.processing_time_ms) AS top",
            f"AND {condition}",
        )[0]
        row = durations[outcome]
        assert (row["chunks"], row["max_ms"]) == (n, exact["top"])
        for key, value in zip(("p50_ms", "p95_ms", "p99_ms"), exact["p"], strict=True):
            assert_rounded(row[key], value, 1)
    per_attempt = recount.rows(
        "c.attempts, c.status, count(*) AS n", f"AND {ran} GROUP BY c.attempts, c.status"
    )
    expected: dict[int, dict[str, int]] = {}
    for r in per_attempt:
        expected.setdefault(r["attempts"], {"completed": 0, "failed": 0})[r["status"]] = r["n"]
    assert {
        r["attempts"]: {"completed": r["completed"], "failed": r["failed"]}
        for r in records(report.attempts)
    } == expected
    finished = recount.count(ran)
    for row in records(report.attempts):
        assert row["chunks"] == row["completed"] + row["failed"]
        assert_rounded(row["percent"], 100 * row["chunks"] / finished, 2)


def _check_trend(report: ChunkReport, recount: Recount) -> None:
    bucket = report.scope.window.bucket
    busy = recount.rows(
        "date_trunc(%(bucket)s, c.created_at AT TIME ZONE 'UTC') AS start, count(*) AS n,"
        " count(*) FILTER (WHERE c.status = 'completed') AS completed,"
        " count(*) FILTER (WHERE c.status = 'failed') AS failed",
        "GROUP BY 1 ORDER BY 1",
        bucket=bucket,
    )
    trend = records(report.trend)
    shown = {datetime.fromisoformat(r["bucket"]).replace(tzinfo=None): r for r in trend}
    assert {b["start"] for b in busy} == {start for start, r in shown.items() if r["chunks"]}
    for b in busy:
        row = shown[b["start"]]
        assert (row["chunks"], row["completed"], row["failed"]) == (
            b["n"],
            b["completed"],
            b["failed"],
        )
        assert_rounded(row["success_rate"], rate(b["completed"], b["failed"]), 2)
    if busy:  # every step from the first busy one to the last, quiet ones included
        step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        assert len(trend) == (busy[-1]["start"] - busy[0]["start"]) / step + 1


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture()
def db(database_url: str) -> Iterator[Database]:
    with Database(database_url) as database:
        yield database


@pytest.fixture()
def seeded(database_url: str) -> str:
    seed(database_url)
    return database_url


@pytest.fixture()
def run_report(database_url: str) -> Iterator[Callable[..., Result]]:
    """`mailsync report …` through the real CLI app, on this test's database."""
    from mailsync.cli import app
    from mailsync.runtime import reset_runtime

    runner = CliRunner()
    yield lambda *args: runner.invoke(app, ["report", *args], catch_exceptions=False)
    reset_runtime()


# -- seeded chunks: exact windows and filters ---------------------------------------------


@pytest.mark.parametrize(
    ("since", "until", "window_sql", "expected_chunks"),
    [
        ("24h", None, "c.created_at > now() - interval '24 hours'", 7),
        ("48h", None, "c.created_at > now() - interval '48 hours'", 10),
        ("7d", None, "c.created_at > now() - interval '7 days'", 12),
        ("30d", None, "c.created_at > now() - interval '30 days'", 13),
        (
            "7d",
            "1h",
            "c.created_at > now() - interval '7 days' AND c.created_at < now() - interval '1 hour'",
            9,
        ),
        ("90m", None, "c.created_at > now() - interval '90 minutes'", 3),
    ],
)
def test_every_number_matches_sql_in_each_window(
    seeded: str, db: Database, since: str, until: str | None, window_sql: str, expected_chunks: int
) -> None:
    report = build_report(db, since=since, until=until)
    assert report.summary["chunks"] == expected_chunks  # the seeded ages, known by hand
    assert_matches_sql(report, Recount(seeded, window_sql))


def test_the_last_24_hours_by_hand(seeded: str, db: Database) -> None:
    report = build_report(db, since="24h")
    assert records(report.status) == [
        {"status": "completed", "count": 4, "percent": 57.14},
        {"status": "failed", "count": 1, "percent": 14.29},
        {"status": "retrying", "count": 1, "percent": 14.29},
        {"status": "pending", "count": 1, "percent": 14.29},
    ]
    summary = report.summary
    assert (summary["success_rate"], summary["recovered"], summary["bucket"]) == (80.0, 1, "hour")
    assert [r["mailbox"] for r in records(report.stores)] == [ADA, BOB]  # ada had a failure
    assert summary["errors"] == {"bad_data": 1, "throttled": 1}
    # the chunk skipped because the mailbox ran out took no time and is not an attempt
    assert [r["attempts"] for r in records(report.attempts)] == [1, 2]


def test_iso_bounds_select_exactly_the_chunks_between_them(seeded: str, db: Database) -> None:
    now = datetime.now(UTC)
    since, until = (
        (now - timedelta(days=3)).isoformat(),
        (now - timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    report = build_report(db, since=since, until=until)
    assert report.summary["chunks"] == 3 and report.summary["bucket"] == "hour"  # the 30 h job
    between = (
        "c.created_at > now() - interval '3 days' AND c.created_at < now() - interval '25 hours'"
    )
    assert_matches_sql(report, Recount(seeded, between))
    date_only = build_report(db, since=(now - timedelta(days=40)).date().isoformat())
    assert date_only.summary["chunks"] == 13 and date_only.summary["bucket"] == "day"


@pytest.mark.parametrize(
    ("store", "business", "where"),
    [
        ("ADA@contoso.example", None, "s.mailbox = 'ada@contoso.example'"),
        (None, str(FABRIKAM), f"c.business_id = '{FABRIKAM}'"),
        ("bob@contoso.example", str(ACME), "s.mailbox = 'bob@contoso.example'"),
    ],
)
def test_store_and_business_filters(
    seeded: str, db: Database, store: str | None, business: str | None, where: str
) -> None:
    report = build_report(db, since="30d", store=store, business=business)
    assert not report.is_empty
    assert_matches_sql(report, Recount(seeded, "c.created_at > now() - interval '30 days'", where))


def test_a_store_is_found_by_its_id_too(seeded: str, db: Database) -> None:
    with psycopg.connect(seeded) as conn:
        cy = str(conn.execute("SELECT id FROM stores WHERE mailbox = %s", (CY,)).fetchone()[0])
    report = build_report(db, since="30d", store=cy.upper())
    assert [r["mailbox"] for r in records(report.stores)] == [CY]
    assert report.summary["chunks"] == 3
    assert build_report(db, since="30d", store=cy, business=str(ACME)).is_empty


# -- an empty window ----------------------------------------------------------------------


def test_an_empty_window_says_so_without_nan_or_traceback(
    seeded: str, db: Database, run_report: Callable[..., Result]
) -> None:
    report = build_report(db, since="10m")
    assert report.is_empty and report.message and "no chunks in this window" in report.message
    as_dict = report.to_dict()
    assert all(as_dict[name] == [] for name in TABLES)
    assert as_dict["summary"]["success_rate"] is None and as_dict["summary"]["p95_ms"] is None
    assert "NaN" not in json.dumps(as_dict)
    assert short_report(db, since="10m").startswith("no chunks in this window")

    table = run_report("--since", "10m")
    assert table.exit_code == 0 and "no chunks in this window" in table.stdout
    assert "Traceback" not in table.output
    as_json = run_report("--since", "10m", "--store", "nobody@contoso.example", "--format", "json")
    parsed = json.loads(as_json.stdout)
    assert as_json.exit_code == 0 and all(parsed[name] == [] for name in TABLES)
    assert "store nobody@contoso.example" in parsed["summary"]["message"]


# -- the command ----------------------------------------------------------------------------


def test_json_output_is_one_object_with_every_table(
    seeded: str, db: Database, run_report: Callable[..., Result]
) -> None:
    result = run_report("--since", "7d", "--format", "json")
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert set(TABLES) <= set(parsed)
    assert all(set(r) == {"status", "count", "percent"} for r in parsed["status"])
    expected = build_report(db, since="7d").to_dict()
    for name in TABLES:
        assert parsed[name] == expected[name], name
    by_status = {r["status"]: r["count"] for r in parsed["status"]}
    assert by_status == {"completed": 8, "failed": 2, "retrying": 1, "pending": 1}  # ada, bob, cy


def test_table_csv_and_markdown_outputs(
    seeded: str, db: Database, run_report: Callable[..., Result], tmp_path: Path
) -> None:
    table = run_report("--since", "48h", "--store", ADA)
    assert table.exit_code == 0, table.output
    for text in (
        "Chunk outcomes",
        "success rate 71.43%",
        "bad_data",
        "throttled",
        ADA,
        "Attempts per finished chunk",
    ):
        assert text in table.stdout, text

    report = build_report(db, since="48h", store=ADA)
    csv = run_report("--since", "48h", "--store", ADA, "--format", "csv", "--out", str(tmp_path))
    assert csv.exit_code == 0, csv.output
    status = pd.read_csv(tmp_path / "chunk-report-status.csv")
    assert status.to_dict("records") == records(report.status)
    stores = pd.read_csv(tmp_path / "chunk-report-stores.csv")
    assert stores["failed_chunks"].tolist() == [2] and stores["chunks"].tolist() == [7]
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == sorted(
        f"chunk-report-{name}.csv" for name in TABLES
    )

    markdown_dir = tmp_path / "md"
    md = run_report("--since", "48h", "--format", "markdown", "--out", str(markdown_dir))
    assert md.exit_code == 0, md.output
    errors_md = (markdown_dir / "chunk-report-errors.md").read_text()
    assert "| error_category |" in errors_md and "| bad_data | 1 | 1 | 0 |" in errors_md
    assert len(list(markdown_dir.glob("*.md"))) == len(TABLES)


def test_png_chart_is_a_real_png(
    seeded: str, run_report: Callable[..., Result], tmp_path: Path
) -> None:
    for since, name in (("7d", "week.png"), ("1m", "empty.png")):
        result = run_report("--since", since, "--format", "json", "--png", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        json.loads(result.stdout)  # the chart's note goes to stderr, not into the JSON
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (name, len(data))


def test_bad_input_is_a_clear_error(run_report: Callable[..., Result]) -> None:
    for args, message in (
        (["--since", "yesterday"], "invalid --since 'yesterday'"),
        (["--since", "1h", "--until", "2h"], "is not before --until"),
        (["--business", "acme"], "invalid business id 'acme'"),
    ):
        result = run_report(*args)
        assert result.exit_code == 2 and message in " ".join(result.stderr.split()), result.output
        assert "Traceback" not in result.output


# -- the flow -------------------------------------------------------------------------------


def test_the_report_flow_publishes_its_tables_as_artifacts(seeded: str, runtime: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from mailsync.flows.report import artifact_key_prefix, report

    state = report(since="7d", return_state=True)
    result = state.result()
    with Recount(seeded, "c.created_at > now() - interval '7 days'") as recount:
        assert result["summary"]["chunks"] == recount.count() == 12
    with get_client(sync_client=True) as client:
        this_run = ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=this_run))
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert set(by_key) == {f"chunk-report-{name}" for name in (*TABLES, "summary")}
    for name in TABLES:
        data = by_key[f"chunk-report-{name}"].data
        assert (json.loads(data) if isinstance(data, str) else data) == result[name], name
    summary = str(by_key["chunk-report-summary"].data)
    assert "Chunk outcomes" in summary and "bad_data" in summary
    assert artifact_key_prefix(ADA, str(ACME)) == f"chunk-report-{ACME}-ada-contoso-example"


# -- real syncs with injected failures ------------------------------------------------------


def test_report_on_real_syncs_with_injected_failures(
    runtime: Any, simulator: Any, database_url: str
) -> None:
    from mailsync.errors import SyncIncompleteError
    from mailsync.flows.sync_mailbox import sync_mailbox

    simulator.add_mailbox(ADA, 300, seed=29)
    simulator.faults.retry_after_s = 0.01
    # Once the first message page (the plan's count request, which has its own retries) is
    # out, more 429s than one request's retries (6): the chunk attempt fails and is retried.
    simulator.faults.throttle_burst = runtime.settings.http_max_retries + 2
    simulator.faults.throttle_after_pages = 1
    throttled = sync_mailbox(mailbox=ADA, chunk_size=300, page_size=100, graph_url=simulator.url)
    simulator.add_mailbox(BOB, 600, seed=23)
    simulator.faults.malformed_page_at = 2  # a page that is not JSON: bad data, not retried
    simulator.faults.malformed_persistent = False
    with pytest.raises(SyncIncompleteError) as incomplete:  # its flow run fails: alertable
        sync_mailbox(mailbox=BOB, chunk_size=300, page_size=100, graph_url=simulator.url)
    broken = incomplete.value.summary
    assert (throttled["status"], broken["status"]) == ("completed", "partial_failure")

    report = build_report(runtime.db, since="1h")
    assert_matches_sql(report, Recount(database_url, "c.created_at > now() - interval '1 hour'"))
    summary = report.summary
    assert summary["failed"] == 1 and summary["errors"] == {"bad_data": 1}
    assert summary["recovered"] == 1  # the throttled chunk, completed by its second attempt
    assert [r["mailbox"] for r in records(report.stores)] == [BOB, ADA]  # the problem store first
    assert summary["emails_synced"] == _stored(database_url)  # each message counted once
    text = short_report(runtime.db, since="1h")
    assert "failed 1" in text and "bad_data 1" in text


def _stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM emails").fetchone()[0])
