"""How the bench reads the local Postgres server's CPU (a session that just ended is counted
once its backend is gone, and the bench waits for that instead of racing it) and a child's
peak memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from mailsync.bench.mailbox import backends_gone, postmaster_pid, process_cpu_s
from mailsync.errors import MailsyncError
from mailsync.prefect_server import local_server_pid

BURN = "SELECT count(*) FROM generate_series(1, 4000000) AS g WHERE g % 7 = 0"


def sessions_of(postmaster: int, database: str) -> list[psutil.Process]:
    return [p for p in psutil.Process(postmaster).children() if database in " ".join(p.cmdline())]


def test_a_session_that_just_closed_is_counted_once_its_backend_is_gone(database_url: str) -> None:
    postmaster = postmaster_pid(database_url)
    if postmaster is None:
        pytest.skip("the server is not a process of this host")
    database = str(conninfo_to_dict(database_url)["dbname"])
    backends_gone(postmaster, database)  # postmaster_pid's own session
    before = process_cpu_s(postmaster)

    with psycopg.connect(database_url) as conn:
        busy = conn.info.backend_pid
        conn.execute(BURN)
        burnt = sum(psutil.Process(busy).cpu_times()[:2])
    backends_gone(postmaster, database)  # the connection closed just now

    assert sessions_of(postmaster, database) == []
    assert not psutil.pid_exists(busy) or psutil.Process(busy).ppid() != postmaster
    # Both sides are sums of clock ticks (10 ms each) read at different moments: one tick
    # of rounding apart (0.51 read against 0.51x burnt, CI 2026-12-07) is not a lost session.
    assert process_cpu_s(postmaster) - before >= burnt - 0.02 and burnt > 0.05


def test_waiting_for_a_session_that_stays_open_says_so(database_url: str) -> None:
    postmaster = postmaster_pid(database_url)
    if postmaster is None:
        pytest.skip("the server is not a process of this host")
    database = str(conninfo_to_dict(database_url)["dbname"])
    with psycopg.connect(database_url):
        with pytest.raises(MailsyncError, match=f"backends of {database} still running"):
            backends_gone(postmaster, database, timeout_s=0.3)


def test_a_spawned_childs_peak_rss_is_its_own_not_its_parents() -> None:
    """A child started while this process holds 300 MB reports its own peak (tens of MB):
    ``ru_maxrss`` would report the parent's, and did in the benches' figures until now."""
    held = b"\1" * (300 * 2**20)  # written, so resident
    code = "from mailsync.bench.mailbox import peak_rss_mb; print(peak_rss_mb())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 0 < float(child.stdout) < 200 < len(held) / 2**20


def test_the_process_listening_for_a_local_api_is_found_and_no_other() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        assert local_server_pid(f"http://127.0.0.1:{port}/api") == os.getpid()
        assert local_server_pid(f"http://localhost:{port}/api") == os.getpid()
        # the same port on another host is not a process of this one
        assert local_server_pid(f"https://prefect.example:{port}/api") is None
    assert local_server_pid(f"http://127.0.0.1:{port}/api") is None  # closed: nobody listens
