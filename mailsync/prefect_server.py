"""A `prefect server start` of our own, for the benchmark and the test suite.

Prefect's ephemeral mode starts a temporary server in every process (seconds each); one
server started here, with its own PREFECT_HOME and no analytics, serves every flow run of
a benchmark or of a whole test session in milliseconds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from mailsync.errors import MailsyncError

PREFECT_START_TIMEOUT_S = 180.0  # a first start migrates its database: ~20 s here, more under load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def prefect_api() -> Iterator[tuple[str, float, bool]]:
    """(API URL, seconds its server took to start, started here?): PREFECT_API_URL if set,
    else our own `prefect server start` (an ephemeral server costs seconds per process)."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"], 0.0, False
        return
    with tempfile.TemporaryDirectory(prefix="mailsync-bench-prefect-") as home:
        port = free_port()
        env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_API_HOST": "127.0.0.1"}  # fmt: skip
        log = open(Path(home) / "server.log", "wb")  # lives as long as the server
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port), "--no-ui"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{port}/api"
            _wait_healthy(f"{api}/health", proc)
            yield api, time.perf_counter() - started, True
        finally:
            stop_process(proc)
            log.close()


def _wait_healthy(url: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + PREFECT_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MailsyncError(f"prefect server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise MailsyncError(f"prefect server not healthy at {url} after {PREFECT_START_TIMEOUT_S} s")
