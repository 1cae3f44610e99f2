"""The report's window and filters: parsed without I/O, bad input refused clearly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pandas as pd
import pytest

from mailsync.errors import InvalidInputError
from mailsync.report import (
    ReportScope,
    attempts_distribution,
    chunk_durations,
    parse_window,
    records,
    success_trend,
)

NOW = datetime(2024, 5, 10, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "back"),
    [
        ("90m", timedelta(minutes=90)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (" 36H ", timedelta(hours=36)),
        ("1 d", timedelta(days=1)),
    ],
)
def test_a_duration_reaches_back_from_now(since: str, back: timedelta) -> None:
    window = parse_window(since, now=NOW)
    assert (window.since, window.until) == (NOW - back, NOW)


def test_iso_dates_and_datetimes_are_utc() -> None:
    quarter_past_eight = datetime(2024, 5, 1, 8, 15, tzinfo=UTC)
    assert parse_window("2024-05-01", now=NOW).since == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_window("2024-05-01T08:15:00Z", now=NOW).since == quarter_past_eight
    # naive means UTC; an offset is converted
    assert parse_window("2024-05-01T08:15", now=NOW).since == quarter_past_eight
    plus_two = parse_window("2024-05-01T10:15:00+02:00", now=NOW).since
    assert plus_two == datetime(2024, 5, 1, 8, 15, tzinfo=UTC) and plus_two.tzinfo == UTC


def test_until_takes_the_same_forms() -> None:
    assert parse_window("7d", "1d", now=NOW).until == NOW - timedelta(days=1)
    assert parse_window("2024-05-01", "2024-05-02T00:00:00Z", now=NOW).until == datetime(
        2024, 5, 2, tzinfo=UTC
    )
    assert parse_window("24h", "  ", now=NOW).until == NOW  # blank: now


def test_now_may_be_given_in_any_zone() -> None:
    local_now = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert parse_window("1h", now=local_now).since == NOW - timedelta(hours=1)


def test_the_trend_is_hourly_up_to_48_hours_then_daily() -> None:
    assert parse_window("90m", now=NOW).bucket == "hour"
    assert parse_window("48h", now=NOW).bucket == "hour"
    assert parse_window("49h", now=NOW).bucket == "day"
    assert parse_window("7d", now=NOW).bucket == "day"


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("", None, "invalid --since ''"),
        ("abc", None, "expected a duration like 90m"),
        ("5x", None, "invalid --since '5x'"),
        ("-5h", None, "invalid --since '-5h'"),
        ("0h", None, "at least 1h"),
        ("24h", "soon", "invalid --until 'soon'"),
        ("2024-13-01", None, "ISO date"),
        ("1h", "2h", "is not before --until"),
        ("2024-06-01", None, "is not before --until"),  # after NOW: an empty, inverted window
        ("99999999w", None, "reaches back too far"),
    ],
)
def test_bad_windows_are_refused_with_a_clear_message(
    since: str, until: str | None, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as caught:
        parse_window(since, until, now=NOW)
    assert caught.value.category == "invalid_input"


def test_filters_are_normalised_and_a_bad_business_is_refused() -> None:
    scope = ReportScope.parse(
        "24h", store="  ada@contoso.example ", business=str(UUID(int=7)), now=NOW
    )
    assert scope.store == "ada@contoso.example" and scope.business == UUID(int=7)
    assert ReportScope.parse("24h", store=" ", now=NOW).store is None
    assert "ada@contoso.example" in scope.describe() and "2024-05-09 12:30" in scope.describe()
    with pytest.raises(InvalidInputError, match="invalid business id 'acme'"):
        ReportScope.parse("24h", business="acme", now=NOW)


def _chunks(rows: list[tuple[str, int, int, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["status", "attempts", "processing_time_ms", "created_at"])
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def test_pandas_tables_skip_chunks_that_never_ran_and_keep_quiet_hours() -> None:
    chunks = _chunks(
        [
            ("completed", 1, 100, "2024-05-10T08:05Z"),
            ("completed", 2, 300, "2024-05-10T08:55Z"),
            ("failed", 3, 900, "2024-05-10T10:10Z"),
            ("completed", 0, 0, "2024-05-10T10:10Z"),
            ("pending", 0, 0, "2024-05-10T10:10Z"),
        ]
    )
    durations = chunk_durations(chunks).set_index("outcome")
    assert durations.loc["finished", "chunks"] == 3 and durations.loc["finished", "p50_ms"] == 300
    assert durations.loc["finished", "max_ms"] == 900
    assert records(attempts_distribution(chunks)) == [
        {"attempts": 1, "chunks": 1, "completed": 1, "failed": 0, "percent": 33.33},
        {"attempts": 2, "chunks": 1, "completed": 1, "failed": 0, "percent": 33.33},
        {"attempts": 3, "chunks": 1, "completed": 0, "failed": 1, "percent": 33.33},
    ]
    trend = records(success_trend(chunks, "hour"))
    assert [(t["bucket"][11:16], t["chunks"], t["success_rate"]) for t in trend] == [
        ("08:00", 2, 100.0),
        ("09:00", 0, None),
        ("10:00", 3, 50.0),
    ]  # the quiet hour has no rate, not 0 and not NaN


def test_empty_chunk_tables_have_their_columns() -> None:
    empty = _chunks([])
    for frame in (
        chunk_durations(empty),
        attempts_distribution(empty),
        success_trend(empty, "day"),
    ):
        assert frame.empty and len(frame.columns) >= 5
