"""Threads that a stopping process leaves behind instead of waiting for.

A ThreadPoolExecutor's threads are joined when the interpreter exits (Python 3.9 and
later), whatever they are doing. mailsync's threads ask Graph, and a request that hangs
waits for its HTTP timeout (60 s): a process stopped then (SIGTERM, Ctrl-C, a run cancelled
from the UI) gave its chunk back at once but could not exit, and a Prefect worker killed it
30 s later. What these threads do is worth nothing once the process stops: a page nobody
will take, an attachment whose claim the next run takes again.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from typing import Any, TypeVar

P = TypeVar("P")


class DaemonThreads:
    """Calls run in daemon threads, at most ``max_workers`` at once, each in a thread of
    its own (started when submitted, waiting its turn in it): what a ThreadPoolExecutor does,
    with threads that do not hold up the interpreter's exit."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._turns = threading.BoundedSemaphore(max_workers)
        self._name, self._numbers = name, itertools.count()
        self._lock = threading.Lock()
        self._unfinished: set[Future[Any]] = set()

    def submit(self, call: Callable[..., P], *args: Any) -> Future[P]:
        future: Future[P] = Future()
        with self._lock:
            self._unfinished.add(future)
        future.add_done_callback(self._finished)
        name = f"{self._name}_{next(self._numbers)}"
        threading.Thread(
            target=self._run, args=(future, call, args), name=name, daemon=True
        ).start()
        return future

    def _run(self, future: Future[P], call: Callable[..., P], args: tuple[Any, ...]) -> None:
        with self._turns:
            if not future.set_running_or_notify_cancel():
                return  # cancelled before its turn: never called
            try:
                result = call(*args)
            except BaseException as exc:  # the taker raises it
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _finished(self, future: Future[Any]) -> None:
        with self._lock:
            self._unfinished.discard(future)

    def close(self, wait_s: float) -> None:
        """Cancel what has not started; wait at most ``wait_s`` for what has."""
        with self._lock:
            unfinished = list(self._unfinished)
        for future in unfinished:
            future.cancel()
        wait_all(unfinished, timeout=wait_s)
