"""Real parts for every test: an embedded PostgreSQL, a Prefect server, the Graph simulator.

- One PostgreSQL for the session (DATABASE_URL / MAILSYNC_DATABASE_URL override it); the
  schema is applied once to a template database, and each test that wants a database gets
  its own copy (CREATE DATABASE … TEMPLATE: fast and isolated).
- One `prefect server start` for the session, on a free port with its own PREFECT_HOME,
  started in pytest_configure so that PREFECT_API_URL is set before Prefect is imported.
- The Graph simulator is cheap: one per test that wants one.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mailsync-tests-"))
_session_services = ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["MAILSYNC_HOME"] = str(_SESSION_DIR / "home")
    # Fast failure handling in tests: short backoffs, short leases.
    os.environ.setdefault("MAILSYNC_RETRY_BASE_S", "0.05")
    os.environ.setdefault("MAILSYNC_RETRY_MAX_S", "0.5")
    os.environ.setdefault("MAILSYNC_HTTP_BACKOFF_BASE_S", "0.01")
    os.environ.setdefault("MAILSYNC_HTTP_BACKOFF_MAX_S", "0.2")
    from mailsync.prefect_server import prefect_api  # no Prefect import: settings stay unread

    api, _, _ = _session_services.enter_context(prefect_api())  # PREFECT_API_URL, or our own
    os.environ["PREFECT_API_URL"] = api


def pytest_unconfigure(config: pytest.Config) -> None:
    if "prefect" in sys.modules:
        # Ship queued logs and events before the server goes away, or the process hangs
        # at exit retrying them.
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
    _session_services.close()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL of the session's PostgreSQL server."""
    url = os.environ.get("MAILSYNC_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from mailsync.pgembed import embedded_database_url

    yield embedded_database_url(_SESSION_DIR / "pg", keep_running=False)


def _with_dbname(url: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> str:
    import psycopg

    from mailsync.migrate import upgrade

    name = f"mailsync_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(_with_dbname(pg_admin_url, name))
    return name


@pytest.fixture()
def database_url(pg_admin_url: str, template_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh database with the schema, set as MAILSYNC_DATABASE_URL for the test."""
    import psycopg

    name = f"mailsync_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = _with_dbname(pg_admin_url, name)
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", url)
    return url


@pytest.fixture()
def simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A Graph simulator on loopback, with the credentials set in the environment."""
    from mailsync.simulator import GraphSimulator

    with GraphSimulator() as sim:
        monkeypatch.setenv("MAILSYNC_TENANT_ID", "contoso-test")
        monkeypatch.setenv("MAILSYNC_CLIENT_ID", sim.client_id)
        monkeypatch.setenv("MAILSYNC_CLIENT_SECRET", sim.client_secret)
        monkeypatch.setenv("MAILSYNC_GRAPH_URL", sim.url)
        yield sim


@pytest.fixture()
def runtime(database_url: str, simulator: object) -> Iterator[object]:
    """The process runtime rebuilt from this test's environment."""
    from mailsync.runtime import get_runtime, reset_runtime

    reset_runtime()
    yield get_runtime()
    reset_runtime()
