"""A stop asked from outside the flow's thread: SIGTERM or Ctrl-C while `mailsync sync`
runs its flow in a thread (its main thread draws the progress bar and gets the signal).

The attempt looks at ``STOP`` between pages and in its waits; a set ``STOP`` raises
``StopRequested`` there, and the attempt releases its chunk at once (mailsync.sync.attempt) before
the run ends. Where a flow runs in the main thread (a Prefect worker's flow run), Prefect's
own SIGTERM handler raises ``TerminationSignal`` instead, with the same release.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP = threading.Event()


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


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """In the main thread: SIGTERM and SIGINT set ``STOP`` instead of killing the process,
    so the flow's thread can give its chunk back; the handlers are restored on exit."""

    def ask_to_stop(signum: int, frame: FrameType | None) -> None:
        STOP.set()

    previous = {sig: signal.signal(sig, ask_to_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
