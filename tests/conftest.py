"""Real parts for every test: an embedded PostgreSQL, a Prefect server, the Graph simulator.

- One PostgreSQL for the session (DATABASE_URL / MAILSYNC_DATABASE_URL override it). The
  schema is applied once to a template database; each test that wants a database gets its
  own copy (CREATE DATABASE … TEMPLATE: fast and isolated), dropped when the test ends. The
  template is dropped, and the embedded server stopped, when the session ends.
- One `prefect server start` for the session, and only for tests outside tests/unit (unit
  tests do no I/O, so `pytest tests/unit` never starts it). Prefect reads PREFECT_API_URL
  once, when its settings are first loaded, and test modules import Prefect at collection:
  so pytest_configure fixes the URL (a free port) before anything imports Prefect; the
  process starts once collection has found a test that needs it (it migrates its database
  while PostgreSQL starts), and such a test waits for it before its fixtures are set up.
  A PREFECT_API_URL set by the caller is used as is, and no server is started.
- The Graph simulator is cheap: one per test that wants one.
- Everything lives in one temporary directory, removed when the session ends.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mailsync.prefect_server import PrefectServer
    from mailsync.runtime import Runtime
    from mailsync.simulator import GraphSimulator

UNIT_TESTS = Path(__file__).parent / "unit"
_session_dir: Path | None = None
_prefect: PrefectServer | None = None  # the session's own server, when one is needed


def session_dir() -> Path:
    assert _session_dir is not None, "pytest_configure has not run"
    return _session_dir


def pytest_configure(config: pytest.Config) -> None:
    global _session_dir, _prefect
    _session_dir = Path(tempfile.mkdtemp(prefix="mailsync-tests-"))
    os.environ["PREFECT_HOME"] = str(_session_dir / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["MAILSYNC_HOME"] = str(_session_dir / "home")
    # Fast failure handling in tests: short backoffs, short leases.
    os.environ.setdefault("MAILSYNC_RETRY_BASE_S", "0.05")
    os.environ.setdefault("MAILSYNC_RETRY_MAX_S", "0.5")
    os.environ.setdefault("MAILSYNC_HTTP_BACKOFF_BASE_S", "0.01")
    os.environ.setdefault("MAILSYNC_HTTP_BACKOFF_MAX_S", "0.2")
    if not os.environ.get("PREFECT_API_URL"):
        from mailsync.prefect_server import PrefectServer  # no Prefect import: settings unread

        _prefect = PrefectServer(_session_dir / "prefect-server")
        os.environ["PREFECT_API_URL"] = _prefect.api_url  # nothing listens there yet


def needs_prefect(item: pytest.Item) -> bool:
    return not item.path.is_relative_to(UNIT_TESTS)


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _prefect is not None and any(needs_prefect(item) for item in items):
        _prefect.start()  # in the background; the first test that needs it waits


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture of the test, module-scoped ones included (they deploy, start
    # workers): a hook, not a fixture, so it runs first.
    if _prefect is not None and needs_prefect(item):
        _prefect.wait()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _prefect is not None and _prefect.started:
        if "prefect" in sys.modules:
            # Ship queued logs and events before the server goes away, or the process
            # hangs at exit retrying them.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
        _prefect.stop()
    if _session_dir is not None:
        shutil.rmtree(_session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """The session's Prefect API, answering."""
    if _prefect is not None:
        return _prefect.wait()
    return os.environ["PREFECT_API_URL"]


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL of the session's PostgreSQL server."""
    url = os.environ.get("MAILSYNC_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from mailsync.store.pgembed import embedded_database_url, stop_embedded

    home = session_dir() / "pg"
    yield embedded_database_url(home, keep_running=False)
    stop_embedded(home)


def with_dbname(url: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


def drop_database(admin_url: str, name: str) -> None:
    """Drop a test database, ending whatever connections still use it."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    import psycopg

    from mailsync.store.migrate import upgrade

    name = f"mailsync_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(with_dbname(pg_admin_url, name))
    yield name
    drop_database(pg_admin_url, name)


@pytest.fixture()
def database_url(
    pg_admin_url: str, template_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A fresh database with the schema, set as MAILSYNC_DATABASE_URL for the test, and
    dropped after it."""
    import psycopg

    name = f"mailsync_t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    url = with_dbname(pg_admin_url, name)
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", url)
    yield url
    if "mailsync.runtime" in sys.modules:
        # The process runtime may hold a pool on this database (a CLI command, a flow run
        # in this process): close it before its database goes.
        from mailsync.runtime import reset_runtime

        reset_runtime()
    drop_database(pg_admin_url, name)


# -- Graph ---------------------------------------------------------------------------------


@pytest.fixture()
def simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphSimulator]:
    """A Graph simulator on loopback, with the credentials set in the environment."""
    from mailsync.simulator import GraphSimulator

    with GraphSimulator() as sim:
        monkeypatch.setenv("MAILSYNC_TENANT_ID", "contoso-test")
        monkeypatch.setenv("MAILSYNC_CLIENT_ID", sim.client_id)
        monkeypatch.setenv("MAILSYNC_CLIENT_SECRET", sim.client_secret)
        monkeypatch.setenv("MAILSYNC_GRAPH_URL", sim.url)
        yield sim


@pytest.fixture()
def runtime(database_url: str, simulator: GraphSimulator) -> Iterator[Runtime]:
    """The process runtime rebuilt from this test's environment."""
    from mailsync.runtime import get_runtime, reset_runtime

    reset_runtime()
    yield get_runtime()
    reset_runtime()
