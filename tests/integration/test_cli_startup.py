"""`mailsync sync` when what it needs is not there: the CLI as a subprocess fails within
seconds, with one line on stderr that says what failed and what to set, and writes nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mailsync.simulator import GraphSimulator

MAILSYNC = Path(sys.executable).parent / "mailsync"
MAILBOX = "ada@contoso.example"
# A failure found before any work: the interpreter and Prefect's import (~2 s alone, more on
# a busy machine), then one refused connection or a missing directory.
DEADLINE_S = 30.0


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def mailsync(*args: str, **env: str | None) -> Run:
    """Run the `mailsync` command with this process's environment changed by ``env`` (None:
    removed); killed at the deadline (a hang fails the test as TimeoutExpired)."""
    environment = {**os.environ}
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    done = subprocess.run(
        [str(MAILSYNC), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_clear_line(run: Run, *words: str) -> str:
    assert run.returncode != 0, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def jobs(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM sync_queue").fetchone()
    return int(row[0]) if row else 0


def sync(*extra: str, **env: str | None) -> Run:
    return mailsync("sync", "--mailbox", MAILBOX, *extra, **env)


def test_an_unreachable_prefect_api_fails_at_once(
    database_url: str, simulator: GraphSimulator
) -> None:
    simulator.add_mailbox(MAILBOX, 10)
    url = f"http://127.0.0.1:{closed_port()}/api"
    run = sync(PREFECT_API_URL=url)
    assert_one_clear_line(run, "error (config)", url, "cannot be reached", "PREFECT_API_URL")
    assert jobs(database_url) == 0 and simulator.stats.total == 0


def test_a_url_that_is_not_prefects_api_says_what_to_set(
    database_url: str, simulator: GraphSimulator
) -> None:
    with GraphSimulator() as other:  # an HTTP server, but no Prefect API at /health
        run = sync(PREFECT_API_URL=other.url)
    assert_one_clear_line(run, "answered HTTP 4", "to /health", "PREFECT_API_URL")
    assert jobs(database_url) == 0


def test_a_prefect_home_that_cannot_be_made_fails_at_once(
    database_url: str, simulator: GraphSimulator, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    home = tmp_path / "a-file" / "prefect"  # under a file: no one can create it
    run = sync(PREFECT_HOME=str(home), PREFECT_API_URL=None)
    assert_one_clear_line(run, f"cannot create PREFECT_HOME {home}", "set PREFECT_HOME")
    assert jobs(database_url) == 0


def test_a_database_that_refuses_connections_fails_at_once(simulator: GraphSimulator) -> None:
    url = f"postgresql://x@127.0.0.1:{closed_port()}/db"
    run = sync(MAILSYNC_DATABASE_URL=url)
    assert_one_clear_line(run, "error (db)", "cannot connect", "check MAILSYNC_DATABASE_URL")
    assert simulator.stats.total == 0


def test_a_database_login_that_does_not_exist_fails_at_once(
    database_url: str, simulator: GraphSimulator
) -> None:
    params = conninfo_to_dict(database_url)
    params.update(user="nobody_here", password="s3cret-pw")
    run = sync(MAILSYNC_DATABASE_URL=make_conninfo(**params))
    assert_one_clear_line(run, "error (db)", "nobody_here", "check MAILSYNC_DATABASE_URL")
    assert "s3cret-pw" not in run.stderr
    assert jobs(database_url) == 0


def test_a_wrong_client_secret_fails_before_anything_is_written(
    database_url: str, simulator: GraphSimulator
) -> None:
    simulator.add_mailbox(MAILBOX, 10)
    run = sync(MAILSYNC_CLIENT_SECRET="not-the-secret")
    assert_one_clear_line(run, "error (auth)", "invalid_client", "MAILSYNC_CLIENT_SECRET")
    assert "not-the-secret" not in run.stderr
    assert jobs(database_url) == 0
    assert simulator.stats.token_requests == 1 and simulator.stats.data_requests == 0


def test_an_unreachable_graph_host_fails_at_once(database_url: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    run = mailsync(
        "sync",
        "--mailbox",
        MAILBOX,
        "--graph-url",
        url,
        MAILSYNC_TENANT_ID="t",
        MAILSYNC_CLIENT_ID="c",
        MAILSYNC_CLIENT_SECRET="s",
    )
    assert_one_clear_line(run, "error (transient)", "unreachable", "--graph-url")
    assert jobs(database_url) == 0


def test_debug_adds_the_traceback_and_ends_with_the_same_line(
    database_url: str, simulator: GraphSimulator
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api"
    run = mailsync("--debug", "sync", "--mailbox", MAILBOX, PREFECT_API_URL=url)
    assert run.returncode != 0
    assert "Traceback (most recent call last)" in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error (config): the Prefect API at") and "PREFECT_API_URL" in last


def test_missing_homes_are_made(
    database_url: str, simulator: GraphSimulator, tmp_path: Path, prefect_api_url: str
) -> None:
    prefect_home = tmp_path / "not" / "yet" / "prefect"
    simulator.add_mailbox(MAILBOX, 30, seed=3)
    run = sync("--json", PREFECT_HOME=str(prefect_home), PREFECT_API_URL=prefect_api_url)
    assert run.returncode == 0, run.stderr
    assert prefect_home.is_dir()
    assert jobs(database_url) == 1


def test_a_missing_mailsync_home_is_made_for_the_embedded_database(tmp_path: Path) -> None:
    home = tmp_path / "not" / "yet" / "mailsync"
    env: dict[str, str | None] = {
        "MAILSYNC_HOME": str(home),
        "MAILSYNC_DATABASE_URL": None,
        "DATABASE_URL": None,
    }
    try:
        run = mailsync("db", "upgrade", **env)
        assert run.returncode == 0, run.stderr
        assert (home / "pgdata" / "PG_VERSION").exists()
    finally:
        mailsync("db", "stop", **env)


def test_a_mailsync_home_that_cannot_be_made_fails_at_once(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    home = tmp_path / "a-file" / "mailsync"
    run = mailsync(
        "db", "upgrade", MAILSYNC_HOME=str(home), MAILSYNC_DATABASE_URL=None, DATABASE_URL=None
    )
    assert_one_clear_line(run, f"cannot create MAILSYNC_HOME {home}", "set MAILSYNC_HOME")
