"""`mailsync bench`: how close the sync comes to Graph itself, in one run.

The floor is the time a plain httpx loop takes to page through the simulated mailbox (same
page size, latency, $select and $expand; JSON parsed, nothing stored). The sync is the real
``sync_mailbox`` flow into a fresh Postgres database, run in a fresh child process so that
its start-up is reported apart (``startup_s``) and its peak RSS is its own: the simulator
runs in another process (Graph is not in the syncing process either), and so does the
Prefect server, started here unless PREFECT_API_URL names one.

The sync's time is split three ways. Waiting for Graph (the part of fetching that the
prefetch of the next page did not hide) and writing pages (their transactions) are recorded
by each chunk in ``checkpoint_data["timing"]`` (mailsync.sync.attempt); the rest is overhead:
``per_chunk_overhead_ms`` is all of it per chunk, of which ``chunk_orchestration_ms`` falls
between the first claim and the last commit (Prefect's task runs, claims, heartbeats) and
``flow_fixed_s`` is paid once (the flow run, the job, the count and plan, the job's close).
CPU per message is measured for the sync process, the local Postgres server (all of it,
autovacuum included) and the simulator, while the sync runs: their sum against the two
cores of the machine says what bounds the throughput.

The child is ``mailsync bench-child SPEC`` (hidden): the CLI owns the entry points that run
a flow, and hands the flow to ``measure_sync`` here.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from mailsync.errors import MailsyncError
from mailsync.prefect_server import local_server_pid, prefect_api, stop_process

if TYPE_CHECKING:
    from mailsync.simulator import GraphSimulator

TENANT = "contoso-bench"
SCOPE = "https://graph.microsoft.com/.default"

# The sync flow, as the measured child calls it (keyword arguments, the job's summary back).
SyncFlow = Callable[..., Mapping[str, Any]]  # sync-mailbox: a summary (or skipped)


@dataclass(frozen=True)
class BenchConfig:
    messages: int = 10_000
    latency_ms: float = 0.0
    chunk_size: int = 5_000
    page_size: int = 500
    seed: int = 1
    folders: bool = True  # the simulator's default folder tree (else one folder, Inbox)


@dataclass(frozen=True)
class Floor:
    seconds: float
    messages: int
    requests: int


# -- the floor --------------------------------------------------------------------------------


def fetch_token(http: httpx.Client, sim_url: str, client_id: str, secret: str) -> str:
    form = {
        "client_id": client_id,
        "client_secret": secret,
        "scope": SCOPE,
        "grant_type": "client_credentials",
    }
    response = http.post(f"{sim_url}/{TENANT}/oauth2/v2.0/token", data=form)
    response.raise_for_status()
    return str(response.json()["access_token"])


def get_page(http: httpx.Client, url: str, params: dict[str, str] | None = None) -> Any:
    """A floor's GET, parsed by the sync's parser (orjson). The response is freed at once,
    as the sync's are (``unbind``): held for the collector, a 100k floor's pages took the
    bench's own process to 1 GB."""
    from mailsync.graph.client import unbind

    response = http.get(url, params=params).raise_for_status()
    try:
        return orjson.loads(response.content)
    finally:
        unbind(response)


def measure_floor(sim_url: str, mailbox: str, page_size: int, token: str) -> Floor:
    """Page through the whole mailbox as Graph serves it: nextLinks, parse, store nothing."""
    from mailsync.graph.client import EPOCH, SELECT_FIELDS, GraphClient

    headers = {
        "Authorization": f"Bearer {token}",
        "Prefer": 'IdType="ImmutableId"',
        "Accept": "application/json",
    }
    params: dict[str, str] | None = {
        "$filter": f"receivedDateTime ge {EPOCH}",
        "$orderby": "receivedDateTime asc",
        "$top": str(page_size),
        "$select": SELECT_FIELDS,
    }
    messages = requests = 0
    with httpx.Client(headers=headers, timeout=120.0) as http:
        url: str | None = GraphClient(http, base_url=sim_url).messages_url(mailbox, "inbox")
        started = time.perf_counter()
        while url:
            body = get_page(http, url, params)
            messages += len(body["value"])
            requests += 1
            url, params = body.get("@odata.nextLink"), None
        return Floor(time.perf_counter() - started, messages, requests)


def measure_delta_floor(sim_url: str, mailbox: str, page_size: int, token: str) -> Floor:
    """A hand-written delta client over the whole mailbox: the folder tree (one
    mailFolders/delta round), then each real folder's first delta round, folder after
    folder, nextLinks followed to the deltaLink; JSON parsed, nothing stored."""
    from mailsync.graph.client import SELECT_FIELDS, GraphClient

    headers = {
        "Authorization": f"Bearer {token}",
        "Prefer": f'odata.maxpagesize={page_size}, IdType="ImmutableId"',
        "Accept": "application/json",
    }
    graph = GraphClient(httpx.Client(), base_url=sim_url)
    messages = requests = 0
    with httpx.Client(headers=headers, timeout=120.0) as http:
        started = time.perf_counter()
        folders: list[str] = []
        url: str | None = f"{graph.user_url(mailbox)}/mailFolders/delta"
        while url:
            body = get_page(http, url)
            requests += 1
            types = ("#microsoft.graph.mailSearchFolder",)
            folders += [f["id"] for f in body["value"] if f.get("@odata.type") not in types]
            url = body.get("@odata.nextLink")
        for folder in folders:
            url = f"{graph.messages_url(mailbox, folder)}/delta"
            params: dict[str, str] | None = {"$select": SELECT_FIELDS}
            while url:
                body = get_page(http, url, params)
                messages += len(body["value"])
                requests += 1
                url, params = body.get("@odata.nextLink"), None
        return Floor(time.perf_counter() - started, messages, requests)


# -- the processes around the sync: Prefect server, simulator ----------------------------


@contextmanager
def simulator_process(
    mailboxes: dict[str, int], seed: int, folders: str | None = None
) -> Iterator[tuple[str, int]]:
    """A Graph simulator serving the mailboxes ({name: messages}), in its own process (its
    CPU and GIL are not the sync's): its URL and its pid. ``folders="default"``: each
    mailbox has the simulator's default folder tree."""
    code = (
        "import json, sys; from mailsync.simulator import serve_forever; "
        "serve_forever('127.0.0.1', 0, json.loads(sys.argv[1]), int(sys.argv[2]), "
        "folders=json.loads(sys.argv[3]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(mailboxes), str(seed), json.dumps(folders)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()  # the first line, once the mailboxes are built
        if not url.startswith("http"):
            raise MailsyncError(f"the simulator did not start (exit {proc.poll()})")
        yield url, proc.pid
    finally:
        stop_process(proc)


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process and of its children, the exited ones included (Postgres'
    backends are the postmaster's children; it collects each one's CPU when it exits).

    A child that exits while this reads is read again: once reaped it is in its parent's
    count, before that in its own, never in both or neither. The set of children must be the
    same before and after a read that kept every child's figure; an autovacuum worker that
    ended mid-read lost its seconds of CPU from a reading (3 runs in ~60, 2026-12-07)."""
    import psutil

    proc = psutil.Process(pid)
    for _ in range(1000):
        children = proc.children(recursive=True)
        total = sum(proc.cpu_times()[:4])  # user, system, children_user, children_system
        try:
            total += sum(sum(child.cpu_times()[:2]) for child in children)
        except psutil.NoSuchProcess:  # reaped meanwhile: perhaps already in the parent's
            pass
        else:
            if {c.pid for c in proc.children(recursive=True)} == {c.pid for c in children}:
                return float(total)
        time.sleep(0.001)
    raise MailsyncError(f"the children of process {pid} kept changing while read")


def backends_gone(postmaster: int, database: str, timeout_s: float = 10.0) -> None:
    """Wait until no backend of ``database`` is left under the postmaster, not even as a
    zombie: its CPU is then in the postmaster's own count. The sync's backends exit as its
    process does, just when the bench reads the server's CPU: read before they are gone, the
    reading would miss what they spend on the way out."""
    import psutil

    def exiting(child: psutil.Process) -> bool:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                return True
            title = " ".join(child.cmdline())
        except psutil.Error:  # reaped meanwhile: counted by the postmaster
            return False
        # An autovacuum worker of the database is not a session that ends with the sync:
        # after 100,000 rows it vacuums for longer than the timeout (2 runs in 6 failed on
        # it). What it spent so far is counted as a live child's.
        return database in title and "autovacuum" not in title

    deadline = time.monotonic() + timeout_s
    while any(exiting(child) for child in psutil.Process(postmaster).children()):
        if time.monotonic() > deadline:
            raise MailsyncError(f"backends of {database} still running after {timeout_s:.0f} s")
        time.sleep(0.01)


def postmaster_pid(database_url: str) -> int | None:
    """The local Postgres server's pid, or None when it is not a process of this host."""
    import psutil
    import psycopg

    with psycopg.connect(database_url) as conn:  # the backend lives as long as this
        try:
            parent = psutil.Process(conn.info.backend_pid).parent()
        except psutil.Error:
            return None
    return parent.pid if parent and "postgres" in parent.name() else None


def cpu_during(
    run: Callable[[], dict[str, Any]], database_url: str, sim_pid: int, prefect_api_url: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """``run()`` (the measured child) and the CPU seconds the simulator, the local Postgres
    server and the local Prefect server (each when it is a process of this host) spent
    meanwhile: from the child's spawn to its end, its start-up flow run included. Postgres
    is read only once the database's sessions have ended: the bench's own before, the
    sync's after."""
    from psycopg.conninfo import conninfo_to_dict

    watched = {"simulator": sim_pid}
    if (prefect_pid := local_server_pid(prefect_api_url)) is not None:
        watched["prefect_server"] = prefect_pid
    database = str(conninfo_to_dict(database_url)["dbname"])
    if (postmaster := postmaster_pid(database_url)) is not None:
        watched["postgres"] = postmaster
        backends_gone(postmaster, database)
    before = {name: process_cpu_s(pid) for name, pid in watched.items()}
    result = run()
    if postmaster is not None:
        backends_gone(postmaster, database)
    return result, {name: process_cpu_s(watched[name]) - s for name, s in before.items()}


def set_latency(sim_url: str, latency_ms: float) -> None:
    httpx.post(f"{sim_url}/_sim/faults", json={"latency_ms": latency_ms}).raise_for_status()


# -- a fresh database ----------------------------------------------------------------------


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database with the schema on the configured server (the embedded one unless
    MAILSYNC_DATABASE_URL is set), dropped afterwards: the sync really inserts."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from mailsync.config import load_settings
    from mailsync.runtime import resolve_database_url
    from mailsync.store.migrate import upgrade

    admin_url = resolve_database_url(load_settings())
    name = f"mailsync_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, not input
    url = make_conninfo(admin_url, dbname=name)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the sync, in a child process -----------------------------------------------------------


def child_env(api_url: str, database_url: str, sim_url: str, **extra: str) -> dict[str, str]:
    """The measured child's environment: this Prefect API, this database, the simulator as
    Graph with its tenant's credentials, no attachment content (and ``extra`` settings).

    Attachments are off unless ``extra`` asks for them (``mailsync bench --attachments``
    measures them): the floor reads messages only, so a sync that also fetched content
    would be compared with a floor that did not."""
    from mailsync.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "MAILSYNC_DATABASE_URL": database_url,
        "MAILSYNC_TENANT_ID": TENANT,
        "MAILSYNC_CLIENT_ID": DEFAULT_CLIENT_ID,
        "MAILSYNC_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "MAILSYNC_GRAPH_URL": sim_url,
        "MAILSYNC_ATTACHMENTS": "none",
        **extra,
    }


def point_this_process_at(
    api_url: str, database_url: str, simulator: GraphSimulator, tenant: str
) -> None:
    """For a bench that runs the flow in its own process: this Prefect API, this database,
    the simulator as Graph with its credentials; the runtime rebuilt from them."""
    from mailsync.runtime import reset_runtime

    os.environ.update(
        PREFECT_API_URL=api_url,
        MAILSYNC_DATABASE_URL=database_url,
        MAILSYNC_TENANT_ID=tenant,
        MAILSYNC_CLIENT_ID=simulator.client_id,
        MAILSYNC_CLIENT_SECRET=simulator.client_secret,
        MAILSYNC_GRAPH_URL=simulator.url,
    )
    reset_runtime()


def run_sync_child(
    child: Sequence[str], spec: dict[str, Any], env: dict[str, str]
) -> dict[str, Any]:
    """Run the ``child`` command with SPEC as its last argument; its result (the JSON of its
    last line of output) plus when it was spawned."""
    spawned = time.time()
    proc = subprocess.run(
        [*child, json.dumps(spec)], env=env, capture_output=True, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise MailsyncError(f"the sync process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["process_start_s"] = result["called_at"] - spawned
    return result


def measure_sync(spec: dict[str, Any], sync_mailbox: SyncFlow) -> dict[str, Any]:
    """The child's work: start up, run the flow, report times, chunk timings, peak RSS."""
    import psutil

    from mailsync.runtime import get_runtime
    from mailsync.sync.jobs import default_business_id, load_job

    runtime = get_runtime()
    business_id = default_business_id(TENANT)
    runtime.db.all("list_chunks", business_id, job_id=uuid.uuid4())  # connecting: start-up
    warm_up_prefect()
    baseline_rss = psutil.Process().memory_info().rss
    cpu_before, called_at = _own_cpu_s(), time.time()
    summary = sync_mailbox(
        mailbox=spec["mailbox"],
        folder=spec.get("folder", "inbox"),
        business_id=business_id,
        chunk_size=spec["chunk_size"],
        page_size=spec["page_size"],
        graph_url=spec["graph_url"],
    )
    returned_at, cpu_s = time.time(), _own_cpu_s() - cpu_before
    job = load_job(runtime.db, summary["job_id"])
    assert job.completed_at is not None, "the flow has returned: its job is closed"
    chunks = runtime.db.all("list_chunks", business_id, job_id=summary["job_id"])
    return {
        "called_at": called_at,
        # The job's clock is the database's: the same host's clock for the embedded server.
        "job_completed_at": job.completed_at.timestamp(),
        "returned_at": returned_at,
        "cpu_s": cpu_s,
        "summary": summary,
        "chunks": [_chunk_timing(c) for c in chunks],
        "baseline_rss_mb": baseline_rss / 2**20,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set, import and all.

    Linux's ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: a spawned child's ``ru_maxrss``
    starts at its parent's peak (after a vfork, as ``subprocess`` spawns; after a plain
    fork, at the parent's RSS then), because the kernel keeps the larger across exec. The
    child of a bench whose floor had held 375 MB of pages reported 375 MB, whatever it used."""
    with suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    # Elsewhere: ru_maxrss, with the parent's peak in it (bytes on macOS, KiB on the BSDs).
    unit = 2**20 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def warm_up_prefect() -> None:
    """A process's first flow run pays Prefect's one-off costs (its API client, imports it
    defers, schemas it builds): start-up, not sync. An empty flow run pays them here,
    with a parameter: a parameter's first serialization imports FastAPI's encoder (~0.35 s
    of CPU, measured in the sync-all flow of a 60-mailbox tenant, 2026-12-07)."""
    from prefect import flow

    flow(name="mailsync-bench-warm-up", log_prints=False)(_nothing)(warm=True)


def _nothing(warm: bool = False) -> None:
    return None


def _chunk_timing(chunk: dict[str, Any]) -> dict[str, float]:
    timing = (chunk["checkpoint_data"] or {}).get("timing") or {}
    processing_ms = float(chunk["processing_time_ms"] or 0)
    # The last page's transaction (completed_at is its start: now()) wrote its rows before
    # the timing was taken (writing_ms) and went on until the attempt's clock stopped.
    last_write_ms = timing.get("writing_ms", 0.0) + max(
        0.0, processing_ms - timing.get("elapsed_ms", processing_ms)
    )
    return {
        "claimed_at": chunk["started_at"].timestamp(),
        "done_at": chunk["completed_at"].timestamp() + last_write_ms / 1000,
        "processing_ms": processing_ms,
        "fetch_ms": timing.get("fetch_ms", 0.0),
        "fetch_wait_ms": timing.get("fetch_wait_ms", 0.0),
        "write_ms": timing.get("write_ms", 0.0) + last_write_ms,
    }


# -- the whole run --------------------------------------------------------------------------


def run_bench(config: BenchConfig, child: Sequence[str]) -> dict[str, Any]:
    """The whole benchmark; ``child`` is the command that runs ``measure_sync`` in a fresh
    process, given the spec (JSON) as its last argument."""
    from mailsync.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    mailbox = f"bench-{uuid.uuid4().hex[:8]}@contoso.example"
    tree = "default" if config.folders else None
    # With folders, the floor is a sequential delta client over them (what a sync of every
    # folder cannot beat); with one folder, a listing of it.
    floor_of = measure_delta_floor if config.folders else measure_floor
    with (
        prefect_api() as (api_url, prefect_start_s, own_server),
        simulator_process({mailbox: config.messages}, config.seed, tree) as (sim_url, sim_pid),
        httpx.Client(timeout=60.0) as http,
    ):
        token = fetch_token(http, sim_url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        # Unmeasured pass: the simulator renders each message once, on first request.
        floor_of(sim_url, mailbox, config.page_size, token)
        set_latency(sim_url, config.latency_ms)
        floor = floor_of(sim_url, mailbox, config.page_size, token)
        with fresh_database() as database_url:
            env = child_env(api_url, database_url, sim_url)
            spec = {
                "mailbox": mailbox,
                "folder": "all" if config.folders else "inbox",
                "chunk_size": config.chunk_size,
                "page_size": config.page_size,
                "graph_url": sim_url,
            }
            measured, cpu = cpu_during(
                lambda: run_sync_child(child, spec, env), database_url, sim_pid, api_url
            )
    cpu["sync_process"] = measured["cpu_s"]
    return summarize(config, floor, measured, cpu, prefect_start_s, own_server)


def summarize(
    config: BenchConfig,
    floor: Floor,
    child: dict[str, Any],
    cpu_s: dict[str, float],
    prefect_start_s: float,
    own_server: bool,
) -> dict[str, Any]:
    summary, chunks = child["summary"], child["chunks"]
    if summary["status"] != "completed" or summary["emails_stored"] != config.messages:
        raise MailsyncError(
            f"the sync did not store the mailbox: {summary['status']}, "
            f"{summary['emails_stored']} of {config.messages} messages"
        )
    sync_s = child["job_completed_at"] - child["called_at"]
    work_s = sum(c["fetch_wait_ms"] + c["write_ms"] for c in chunks) / 1000
    # From the first claim to the last chunk's commit: chunks and what runs between them.
    span_s = max(c["done_at"] for c in chunks) - min(c["claimed_at"] for c in chunks)
    return {
        **asdict(config),
        "floor_s": round(floor.seconds, 3),
        "sync_s": round(sync_s, 3),
        "ratio": round(sync_s / floor.seconds, 3),
        "msgs_per_s": round(config.messages / sync_s, 1),
        "floor_msgs_per_s": round(floor.messages / floor.seconds, 1),
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "baseline_rss_mb": round(child["baseline_rss_mb"], 1),
        "per_chunk_overhead_ms": round(1000 * (sync_s - work_s) / len(chunks), 1),
        "chunk_orchestration_ms": round(1000 * (span_s - work_s) / len(chunks), 1),
        "flow_fixed_s": round(sync_s - span_s, 3),
        "chunks": len(chunks),
        "fetch_s": round(sum(c["fetch_ms"] for c in chunks) / 1000, 3),
        "fetch_wait_s": round(sum(c["fetch_wait_ms"] for c in chunks) / 1000, 3),
        "write_s": round(sum(c["write_ms"] for c in chunks) / 1000, 3),
        "flow_return_s": round(child["returned_at"] - child["called_at"], 3),
        "startup_s": round(prefect_start_s + child["process_start_s"], 3),
        "prefect_server_start_s": round(prefect_start_s, 3),
        "process_start_s": round(child["process_start_s"], 3),
        "prefect_server": "started by bench" if own_server else "PREFECT_API_URL",
        "floor_requests": floor.requests,
        "api_calls": summary["api_calls"],
        # CPU per message while the sync ran (Postgres: the whole local server).
        "cpu_us_per_msg": {k: round(1e6 * v / config.messages, 1) for k, v in cpu_s.items()},
    }
