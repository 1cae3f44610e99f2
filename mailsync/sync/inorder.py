"""Finishing work in a thread of its own, one piece at a time, in the order it was handed over.

An attempt's pages are transactions that must commit in order. Each has a half that touches
nothing shared (staging its rows, mailsync.sync.ingest.stage_messages) and a half that does (the
upsert, the fence, the checkpoint, the commit). ``InOrder`` lets the caller stage page N+1
while page N finishes: ``after_previous`` waits for the piece in flight (and raises its
error), ``then`` hands over the next one. At most one piece is in flight, so a piece starts
only after the one before it has ended, and the caller learns of a failure before it hands
over anything that would follow it.

What is handed over may hold a resource that one side must close: the piece when it runs,
the caller when it stops before the piece could (a signal lands anywhere in the main
thread). ``Handover`` gives it to whichever side takes it first, and only to that one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Generic, TypeVar

from mailsync.errors import LeaseLostError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Handover(Generic[T]):
    """A value that exactly one of two threads takes: ``take`` returns it once, then None.
    The lock's non-blocking acquire is atomic, so a caller stopped while handing a piece
    over and the piece starting meanwhile cannot both close the same transaction."""

    def __init__(self, value: T) -> None:
        self._value = value
        self._taken = threading.Lock()

    def take(self) -> T | None:
        return self._value if self._taken.acquire(blocking=False) else None


class InOrder:
    def __init__(self, name: str) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._in_flight: Future[None] | None = None

    def after_previous(self) -> None:
        """Wait until the piece in flight has ended; raise what it raised."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def then(self, piece: Callable[[], None]) -> None:
        """Run ``piece`` once the piece before it has ended (``after_previous`` first)."""
        self.after_previous()
        self._in_flight = self._thread.submit(piece)

    def __enter__(self) -> InOrder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """The piece in flight ends before the block does. Its error is raised when the
        block ended normally; when the block raised too, the block's error stands, unless
        it is an error and the piece found the claim lost (then nothing more of the attempt
        may be written); a stop (Ctrl-C, SIGTERM) always stands."""
        try:
            self.after_previous()
        except Exception as piece_error:
            lost = isinstance(piece_error, LeaseLostError) and isinstance(exc, Exception)
            if exc is None or lost:
                raise
            logger.warning("%s; and before it: %s", exc, piece_error)
        finally:
            self._thread.shutdown(wait=True)
