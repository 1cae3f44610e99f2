"""Helpers of the end-to-end tests: real processes (mailsync, prefect workers), stopped by
their own process group only; faults that land on a simulator event (a held page), and
outcomes polled with deadlines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from mailsync.simulator.faults import Faults

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(sys.executable).parent


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, every_s: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


@contextmanager
def holding(faults: Faults, after_pages: int) -> Iterator[Callable[[], None]]:
    """Hold every page request after the first ``after_pages`` (``hold_after_pages``); yield
    a function that returns once one is held (or fails), and answer them all on leaving.

    The fault a test injects while a request is held (a kill, a stop, a restart, a cancel)
    lands at a known point: the sync is waiting for a page, inside the chunk that page
    belongs to; no polling the database for "part-way", no latency to widen a window."""
    faults.hold_after_pages = after_pages

    def wait_held(timeout_s: float = 90) -> None:
        if not faults.wait_held(timeout_s):
            raise AssertionError(f"no page request was held within {timeout_s:g} s")

    try:
        yield wait_held
    finally:
        faults.release_held()  # a dead client's request is answered into a closed socket


def query(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


class Processes:
    """Subprocesses started by one test, each in its own session (process group), output
    in files under the test's tmp_path; all of them stopped when the test ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                args,
                env=env,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
        """SIGTERM to the process's own group (a worker and its flow runs), then SIGKILL."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout_s)

    def stop_all(self) -> None:
        for proc in self.started:
            self.stop(proc)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment (database URL, Graph credentials and URL, Prefect API
    set by the fixtures) for a subprocess, plus ``extra``."""
    return {**os.environ, **extra}


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 120) -> str:
    """Run a command to completion; its output, or a failure that shows it."""
    done = subprocess.run(
        args, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout
