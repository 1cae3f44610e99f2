"""A `prefect server start` of our own, for the benchmark and the test suite.

Prefect's ephemeral mode starts a temporary server in every process (seconds each); one
server started here, with its own PREFECT_HOME and no analytics, serves every flow run of
a benchmark or of a whole test session in milliseconds.

Starting is split from waiting: a first start migrates the server's database (~10-20 s),
so a caller can start it, do other work (the test session starts PostgreSQL meanwhile),
and wait only when it needs the API. The URL is known before the process exists, because
Prefect reads PREFECT_API_URL once per process, when its settings are first loaded.
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
from typing import IO, Any
from urllib.parse import urlsplit

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


class PrefectServer:
    """One `prefect server start` on loopback: ``start()`` returns at once, ``wait()``
    blocks until the API answers, ``stop()`` ends it. Its log is ``home/server.log``."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._started_at = 0.0
        self.start_s: float | None = None  # seconds from start() to healthy
        self._failure: MailsyncError | None = None  # a failed start fails every later wait

    @property
    def started(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        if self._proc is not None:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
        }
        env.pop("PREFECT_API_URL", None)  # the server is not a client of another one
        self._log = open(self.home / "server.log", "wb")  # lives as long as the server
        self._started_at = time.perf_counter()
        command = ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self._proc = subprocess.Popen(
            [sys.executable, "-m", *command, "--no-ui"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout_s: float = PREFECT_START_TIMEOUT_S) -> str:
        """The API URL, once /health answers; MailsyncError if the server dies or stalls."""
        self.start()
        assert self._proc is not None
        if self._failure is not None:
            raise self._failure
        if self.start_s is None:
            try:
                _wait_healthy(f"{self.api_url}/health", self._proc, timeout_s)
            except MailsyncError as exc:
                log = (self.home / "server.log").read_text(errors="replace")[-3000:]
                self._failure = MailsyncError(f"{exc}; the end of its log:\n{log}")
                raise self._failure from None
            self.start_s = time.perf_counter() - self._started_at
        return self.api_url

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def prefect_api() -> Iterator[tuple[str, float, bool]]:
    """(API URL, seconds its server took to start, started here?): PREFECT_API_URL if set,
    else our own `prefect server start` (an ephemeral server costs seconds per process)."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"], 0.0, False
        return
    with tempfile.TemporaryDirectory(prefix="mailsync-bench-prefect-") as home:
        server = PrefectServer(Path(home))
        try:
            api = server.wait()
            yield api, server.start_s or 0.0, True
        finally:
            server.stop()


def local_server_pid(api_url: str) -> int | None:
    """The pid of the process of this host that listens for ``api_url``; None when the API
    is on another host or no process of ours listens there (the benches count its CPU)."""
    import psutil

    url = urlsplit(api_url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1") or url.port is None:
        return None
    try:
        listening = psutil.net_connections(kind="tcp")
    except psutil.Error:
        return None
    for conn in listening:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == url.port:
            return int(conn.pid) if conn.pid is not None else None
    return None


def _wait_healthy(url: str, proc: subprocess.Popen[Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MailsyncError(f"prefect server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise MailsyncError(f"prefect server not healthy at {url} after {timeout_s:g} s")
