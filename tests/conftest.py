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
- Under pytest-xdist (pyproject's addopts: `-n 3 --dist loadfile`), the controller owns
  all of that: it starts PostgreSQL and builds the template before the workers exist, and
  one Prefect server for each worker, and hands them the URLs in the environment they
  inherit (MAILSYNC_TEST_*). The workers share PostgreSQL (a database per test) but not
  Prefect: a server keeps its state in SQLite, whose one writer at a time made one
  worker's API calls wait up to its 60 s busy timeout behind the other's (a 7 s test took
  68 s); a second server costs ~12 CPU-s to start. Modules that must not overlap on one
  server share an `xdist_group` mark, and take that group's file lock (one per server)
  for as long as the module runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
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
# What an xdist controller hands its workers (names of environment variables).
SHARED_SESSION_DIR = "MAILSYNC_TEST_SESSION_DIR"
SHARED_PG_URL = "MAILSYNC_TEST_PG_URL"
SHARED_TEMPLATE = "MAILSYNC_TEST_TEMPLATE_DB"
WORKER_PREFECT_URL = "MAILSYNC_TEST_PREFECT_URL_"  # + the worker's id (gw0, gw1, …)
_session_dir: Path | None = None
_prefect: PrefectServer | None = None  # the session's own server, when one is needed
_worker_servers: list[PrefectServer] = []  # a controller's: one per xdist worker
_shared_pg: tuple[Path, str, str] | None = None  # (home, admin URL, template) for workers


def session_dir() -> Path:
    assert _session_dir is not None, "pytest_configure has not run"
    return _session_dir


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """An xdist controller: it runs no test, its workers do (pytest-xdist's own test)."""
    dist = config.getoption("dist", "no")
    return not is_worker(config) and dist != "no" and bool(config.getoption("tx", None))


def pytest_configure(config: pytest.Config) -> None:
    global _session_dir, _prefect
    if is_worker(config):
        # The controller set everything up; its environment is ours, and a Prefect server
        # of our own among them (before anything imports Prefect: it reads the URL once).
        _session_dir = Path(os.environ[SHARED_SESSION_DIR])
        worker = config.workerinput["workerid"]  # type: ignore[attr-defined]
        if own_url := os.environ.get(WORKER_PREFECT_URL + worker):
            os.environ["PREFECT_API_URL"] = own_url
            home = _session_dir / "prefect" / worker
            home.mkdir(parents=True, exist_ok=True)
            os.environ["PREFECT_HOME"] = str(home)
        return
    _session_dir = Path(tempfile.mkdtemp(prefix="mailsync-tests-"))
    os.environ[SHARED_SESSION_DIR] = str(_session_dir)
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
    if is_controller(config) and needs_services(config):
        # The workers are not started yet: what is set here, they inherit. The Prefect
        # server migrates in the background while PostgreSQL starts and the template is
        # built; a worker's first test that needs the server waits for its /health.
        if _prefect is not None:
            _prefect = None  # the workers' own servers instead
            for worker in range(len(config.getoption("tx"))):
                server = PrefectServer(_session_dir / "prefect-server" / f"gw{worker}")
                server.start()
                os.environ[WORKER_PREFECT_URL + f"gw{worker}"] = server.api_url
                _worker_servers.append(server)
        share_postgres(_session_dir)


def needs_services(config: pytest.Config) -> bool:
    """Whether the run may hold a test outside tests/unit (decided from the paths asked
    for: a controller collects nothing)."""
    paths = [arg.split("::")[0] for arg in config.args] or [str(config.rootpath / "tests")]
    return any(not Path(p).resolve().is_relative_to(UNIT_TESTS) for p in paths)


def share_postgres(session: Path) -> None:
    """Start the session's PostgreSQL and build the template, for the workers to use."""
    global _shared_pg
    import psycopg

    from mailsync.store.migrate import upgrade
    from mailsync.store.pgembed import embedded_database_url

    url = os.environ.get("MAILSYNC_DATABASE_URL") or os.environ.get("DATABASE_URL")
    home = session / "pg"
    admin = url or embedded_database_url(home, keep_running=False)
    template = f"mailsync_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{template}"')
    upgrade(with_dbname(admin, template))
    os.environ[SHARED_PG_URL] = admin
    os.environ[SHARED_TEMPLATE] = template
    _shared_pg = (home if url is None else Path(), admin, template)


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
    if needs_prefect(item):
        wait_for_prefect()


def wait_for_prefect() -> str:
    """The session's Prefect API once it answers: our own server's, or the controller's
    (a worker has no process to watch, only the URL)."""
    url = os.environ["PREFECT_API_URL"]
    if _prefect is not None:
        return _prefect.wait()
    if "PYTEST_XDIST_WORKER" in os.environ:
        _wait_healthy(url)
    return url


_healthy: set[str] = set()


def _wait_healthy(api_url: str, timeout_s: float = 180) -> None:
    import httpx

    if api_url in _healthy:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                _healthy.add(api_url)
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "")
            log = _session_dir / "prefect-server" / worker / "server.log" if _session_dir else None
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"the controller's Prefect server at {api_url} not up\n{tail}")
        time.sleep(0.2)


def pytest_unconfigure(config: pytest.Config) -> None:
    if is_worker(config):
        return  # the controller owns the servers and the directory
    for server in _worker_servers:
        server.stop()
    if _prefect is not None and _prefect.started:
        if "prefect" in sys.modules:
            # Ship queued logs and events before the server goes away, or the process
            # hangs at exit retrying them.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)
        _prefect.stop()
    if _shared_pg is not None:
        home, admin, template = _shared_pg
        drop_database(admin, template)
        if home != Path():
            from mailsync.store.pgembed import stop_embedded

            stop_embedded(home)
    if _session_dir is not None:
        shutil.rmtree(_session_dir, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _xdist_group_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module marked ``xdist_group(name)`` holds that group's lock from before its own
    module fixtures (autouse: set up first) until its last test's teardown; another
    worker's module of the same group waits for it. Not --dist loadgroup: pytest-xdist 3.8
    names the group by assigning item._nodeid, which pytest 9.2 no longer reads (the id
    lives in item._id), so the group was silently spread over both workers."""
    mark = request.node.get_closest_marker("xdist_group")
    if mark is None or "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    import fcntl
    import hashlib

    name = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
    # What the group shares lives on a Prefect server: a worker with a server of its own
    # waits for no one; workers given one PREFECT_API_URL take turns.
    server = hashlib.sha256(os.environ["PREFECT_API_URL"].encode()).hexdigest()[:12]
    with open(session_dir() / f"xdist-group-{name}-{server}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_flow_heartbeats() -> Iterator[None]:
    """Prefect's flow-run heartbeats off for the flows tests run in this process, as the
    `mailsync` command has them (mailsync.cli): joining the heartbeat's thread, which
    sleeps in 1 s steps, added up to a second to every flow run (Prefect's own test suite
    turns them off too). Flows in subprocesses keep what the command or worker gives them."""
    if "prefect" not in sys.modules:  # unit tests: no flow, no Prefect import
        yield
        return
    from mailsync.cli import no_flow_heartbeats

    with no_flow_heartbeats():
        yield


@pytest.fixture(scope="session")
def prefect_api_url() -> str:
    """The session's Prefect API, answering."""
    return wait_for_prefect()


# -- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL of the session's PostgreSQL server."""
    url = (
        os.environ.get(SHARED_PG_URL)  # an xdist worker: the controller's
        or os.environ.get("MAILSYNC_DATABASE_URL")
        or os.environ.get("DATABASE_URL")
    )
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

    if os.environ.get(SHARED_TEMPLATE):  # an xdist worker: the controller's, dropped by it
        yield os.environ[SHARED_TEMPLATE]
        return
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
