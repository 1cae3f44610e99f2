"""The arithmetic of Graph's shared limits (mailsync/graph/limits.py), without a database."""

from __future__ import annotations

import pytest

from mailsync.graph.limits import ARRIVAL_HEADROOM_S, WINDOW_SLICES, Limit, mailbox_of


@pytest.mark.parametrize(
    ("requests", "window_s"), [(10_000, 600.0), (130_000, 10.0), (40, 1.0), (2, 5.0), (120, 10.0)]
)
def test_a_window_counts_the_budget_over_the_window_and_its_headroom(
    requests: int, window_s: float
) -> None:
    window = Limit("k", 4, requests, window_s).as_json()
    # The whole budget may go at once; what is counted is every slot of the last window
    # plus the headroom for slots taken now that reach Graph later.
    assert window["budget"] == requests
    assert window["span_s"] == window_s + ARRIVAL_HEADROOM_S
    assert window["slice_s"] * WINDOW_SLICES == pytest.approx(window["span_s"])


def test_mailbox_of_reads_the_user_segment() -> None:
    assert mailbox_of("/v1.0/users/Ada%40contoso.example/mailFolders/inbox") == (
        "ada@contoso.example"
    )
    assert mailbox_of("/v1.0/users/0b1c/messages") == "0b1c"
    assert mailbox_of("/v1.0/users") is None  # the directory: the app's limit only
    assert mailbox_of("/tenant/oauth2/v2.0/token") is None
