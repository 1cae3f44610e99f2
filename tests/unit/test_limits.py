"""The arithmetic of Graph's shared limits (mailsync/graph/limits.py), without a database."""

from __future__ import annotations

import pytest

from mailsync.graph.limits import ARRIVAL_HEADROOM_S, Limit, mailbox_of


@pytest.mark.parametrize(
    ("requests", "window_s"), [(10_000, 600.0), (130_000, 10.0), (40, 1.0), (2, 5.0), (120, 10.0)]
)
def test_a_bucket_never_holds_more_than_its_budget_in_any_window(
    requests: int, window_s: float
) -> None:
    bucket = Limit("k", 4, requests, window_s).as_json()
    # A full bucket at the window's start, then refills until the window's end, with the
    # headroom for slots taken now that reach Graph later: never more than the budget.
    most = bucket["capacity"] + bucket["refill_per_s"] * (window_s + ARRIVAL_HEADROOM_S)
    assert most <= requests + 1e-9
    assert bucket["capacity"] >= 1 and bucket["refill_per_s"] > 0


def test_outlooks_budget_leaves_a_burst_and_about_sixteen_a_second() -> None:
    bucket = Limit("k", 4, 10_000, 600.0).as_json()
    assert bucket["capacity"] == 200
    assert bucket["refill_per_s"] == pytest.approx(16.28, abs=0.01)


def test_mailbox_of_reads_the_user_segment() -> None:
    assert mailbox_of("/v1.0/users/Ada%40contoso.example/mailFolders/inbox") == (
        "ada@contoso.example"
    )
    assert mailbox_of("/v1.0/users/0b1c/messages") == "0b1c"
    assert mailbox_of("/v1.0/users") is None  # the directory: the app's limit only
    assert mailbox_of("/tenant/oauth2/v2.0/token") is None
