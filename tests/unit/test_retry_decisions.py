"""The retry decisions, each at its one owner: the backoff formula, the error tree, and
Prefect's retry condition (which only reads what the chunk row decided)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from mailsync.errors import (
    AuthError,
    BadDataError,
    ChunkAttemptError,
    ChunkBusyError,
    ConflictError,
    DatabaseError,
    PermissionDeniedError,
    StatementError,
    ThrottledError,
    is_retryable,
)
from mailsync.graph.backoff import backoff_delay, retry_delay
from mailsync.tasks.retry import MAINTENANCE_RETRIES, only_retryable


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_is_between_half_and_all_of_its_capped_exponential(attempt: int) -> None:
    rng = random.Random(attempt)
    cap = min(10.0, 0.5 * 2**attempt)
    delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
    assert all(cap / 2 <= d <= cap for d in delays)
    assert len(set(delays)) > 100  # jittered, not one value


def test_retry_after_wins_only_when_it_asks_for_longer() -> None:
    rng = random.Random(1)
    assert retry_delay(0, 0.5, 10.0, retry_after_s=30.0, rng=rng) == 30.0
    assert retry_delay(5, 0.5, 10.0, retry_after_s=0.0, rng=rng) >= 5.0


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ThrottledError("429"), True),
        (DatabaseError("connection lost"), True),
        (AuthError("token endpoint blinked"), True),
        (ChunkBusyError("held"), True),
        (PermissionDeniedError("403"), False),
        (BadDataError("not json"), False),
        (ConflictError("duplicate"), False),
        (StatementError("check violated"), False),
        (ValueError("a bug"), False),
    ],
)
def test_what_is_worth_another_try(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def _failed_state(exc: BaseException) -> SimpleNamespace:
    return SimpleNamespace(data=exc)


def test_prefect_re_enters_a_chunk_only_when_its_row_chose_retrying() -> None:
    retrying = ChunkAttemptError("throttled, now retrying", category="throttled", will_retry=True)
    spent = ChunkAttemptError("throttled, now failed", category="throttled", will_retry=False)
    assert only_retryable(None, None, _failed_state(retrying)) is True
    assert only_retryable(None, None, _failed_state(spent)) is False
    assert retrying.category == spent.category == "throttled"  # reports keep the cause


def test_maintenance_tasks_share_one_retry_policy() -> None:
    assert MAINTENANCE_RETRIES["retries"] == len(MAINTENANCE_RETRIES["retry_delay_seconds"])
    assert MAINTENANCE_RETRIES["retry_condition_fn"] is only_retryable
