"""Threads that a stopping process leaves behind instead of waiting for.

A ThreadPoolExecutor's threads are joined when the interpreter exits (Python 3.9 and
later), whatever they are doing. mailsync's threads ask Graph, and a request that hangs
waits for its HTTP timeout (60 s): a process stopped then (SIGTERM, Ctrl-C, a run cancelled
from the UI) gave its chunk back at once but could not exit, and a Prefect worker killed it
30 s later. What these threads do is worth nothing once the process stops: a page nobody
will take, an attachment whose claim the next run takes again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

P = TypeVar("P")


class DaemonThreads:
    """Calls run in at most ``max_workers`` daemon threads, started as needed and reused
    (ThreadPoolExecutor's rule: an idle thread takes the call, else a new one starts): what
    a ThreadPoolExecutor does, with threads that do not hold up the interpreter's exit. A
    thread per call instead raised a 100k sync's peak RSS to 199-214 MB (175-187 with a
    ThreadPoolExecutor, 175-191 with these: `mailsync bench --messages 100000`, 3 runs
    each)."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers, self._name = max_workers, name
        self._calls: SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None]
        self._calls = SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def submit(self, call: Callable[..., P], *args: Any) -> Future[P]:
        future: Future[P] = Future()
        self._calls.put((future, call, args))
        if self._idle.acquire(timeout=0):
            return future  # an idle thread takes it
        with self._lock:
            if len(self._threads) >= self._max_workers:
                return future  # it waits for a thread's turn
            name = f"{self._name}_{len(self._threads) + 1}"
            thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._threads.append(thread)
        thread.start()
        return future

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            self._run(*item)
            del item  # nothing of the call kept while idle
            self._idle.release()

    @staticmethod
    def _run(future: Future[P], call: Callable[..., P], args: tuple[Any, ...]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # cancelled before its turn: never called
        try:
            result = call(*args)
        except BaseException as exc:  # the taker raises it
            future.set_exception(exc)
        else:
            future.set_result(result)

    def close(self, wait_s: float) -> None:
        """Cancel what has not started, and join the threads, each after its current call,
        for at most ``wait_s`` in all: one that hangs is left to end with the process."""
        while True:  # what no thread has taken yet (ThreadPoolExecutor's cancel_futures)
            try:
                item = self._calls.get_nowait()
            except Empty:
                break
            if item is not None:
                item[0].cancel()
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self._calls.put(None)
        deadline = time.monotonic() + wait_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
