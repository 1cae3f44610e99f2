"""InOrder: pieces run one at a time, in order, and their errors reach the caller."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from mailsync.errors import DatabaseError, GraphError, LeaseLostError
from mailsync.sync.inorder import Handover, InOrder


def failing(error: Exception) -> Callable[[], None]:
    def piece() -> None:
        raise error

    return piece


def test_pieces_run_in_order_one_at_a_time_beside_the_caller() -> None:
    ran: list[int] = []
    running = threading.Semaphore(1)
    release = threading.Event()

    def piece(n: int) -> None:
        assert running.acquire(blocking=False), "two pieces at once"
        try:
            if n == 0:
                release.wait(10)
            ran.append(n)
        finally:
            running.release()

    with InOrder("test") as in_order:
        in_order.then(lambda: piece(0))
        assert ran == []  # the caller goes on while piece 0 waits
        release.set()
        for n in range(1, 5):
            in_order.then(lambda n=n: piece(n))  # type: ignore[misc]
    assert ran == [0, 1, 2, 3, 4]


def test_a_failed_piece_is_raised_before_the_next_is_handed_over() -> None:
    ran: list[str] = []

    with InOrder("test") as in_order:
        in_order.then(failing(DatabaseError("connection lost")))
        with pytest.raises(DatabaseError, match="connection lost"):
            in_order.then(lambda: ran.append("after"))
        in_order.after_previous()  # reported once
    assert ran == []


def test_the_piece_in_flight_ends_with_the_block_and_its_error_is_raised() -> None:
    with pytest.raises(DatabaseError, match="commit failed"):
        with InOrder("test") as in_order:
            in_order.then(failing(DatabaseError("commit failed")))


def test_a_lost_claim_outranks_the_blocks_error_but_not_a_stop() -> None:
    lost = failing(LeaseLostError("chunk 1: lease lost"))
    with pytest.raises(LeaseLostError):
        with InOrder("test") as in_order:
            in_order.then(lost)
            raise GraphError("throttled")
    with pytest.raises(KeyboardInterrupt):
        with InOrder("test") as in_order:
            in_order.then(lost)
            raise KeyboardInterrupt


def test_the_blocks_error_stands_over_a_pieces_other_error() -> None:
    with pytest.raises(GraphError, match="throttled"):
        with InOrder("test") as in_order:
            in_order.then(failing(DatabaseError("commit failed")))
            raise GraphError("throttled")


def test_a_handover_is_taken_by_one_side_only() -> None:
    """The piece and a caller that stopped race for the page's transaction: one closes it."""
    handover = Handover("the staged page")
    takers = [threading.Thread(target=lambda: got.append(handover.take())) for _ in range(8)]
    got: list[str | None] = []
    for taker in takers:
        taker.start()
    for taker in takers:
        taker.join()
    assert got.count("the staged page") == 1 and got.count(None) == 7
