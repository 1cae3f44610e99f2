"""A stop asked from outside the flow's thread: SIGTERM or Ctrl-C while `mailsync sync`
runs its flow in a thread (its main thread draws the progress bar and gets the signal).

The attempt looks at ``STOP`` between pages and in its waits; a set ``STOP`` raises
``StopRequested`` there, and the attempt releases its chunk at once (mailsync.sync.attempt) before
the run ends. A wait on a page (``result``: the request runs in a prefetch thread,
mailsync.graph.prefetch) is woken by the stop itself, so a Graph request that hangs, or
waits out its retries, does not keep the chunk: it is released at once.

Where a flow runs in the main thread (a Prefect worker's flow run), Prefect's
own SIGTERM handler raises ``TerminationSignal`` instead, with the same release.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError
from concurrent.futures import wait as wait_any
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

STOP = threading.Event()
# The stop as a future too: a wait on a page's future waits on both at once
# (concurrent.futures.wait), and whichever comes first wakes it, with no polling.
_stopped: Future[None] = Future()


class StopRequested(KeyboardInterrupt):
    """Raised in the flow's thread once a stop was asked for (a KeyboardInterrupt, so that
    everything that lets Ctrl-C through lets this through)."""


def check() -> None:
    if STOP.is_set():
        raise StopRequested("stop requested (SIGTERM or Ctrl-C)")


def wait(seconds: float) -> None:
    """Sleep, but wake and raise as soon as a stop is asked for."""
    if STOP.wait(seconds):
        check()


def request_stop() -> None:
    """Ask the flow's thread to stop: what SIGTERM and Ctrl-C do under ``stop_on_signals``."""
    STOP.set()
    with suppress(InvalidStateError):  # asked twice
        _stopped.set_result(None)


def clear() -> None:
    """Forget a stop asked for (a process that goes on after one: tests)."""
    global _stopped
    STOP.clear()
    _stopped = Future()


def result(future: Future[T]) -> T:
    """``future``'s result, waited for until it comes or a stop is asked for, whichever is
    first (then ``StopRequested``; the future goes on, and its result is nobody's)."""
    check()
    either: tuple[Future[Any], ...] = (future, _stopped)
    wait_any(either, return_when=FIRST_COMPLETED)
    check()
    return future.result()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """In the main thread: SIGTERM and SIGINT set ``STOP`` instead of killing the process,
    so the flow's thread can give its chunk back; the handlers are restored on exit."""

    def ask_to_stop(signum: int, frame: FrameType | None) -> None:
        request_stop()  # (this main thread waits on no page: nothing here can deadlock)

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
