"""`mailsync bench --notifications`: from a change in a mailbox to its row in Postgres.

Everything real, as a user runs it: a Prefect server (PREFECT_API_URL, or one started here),
the sync-changed deployment built from prefect.yaml (its trigger, debounce and concurrency
limit included) on a process work pool, one ``prefect worker start`` process, the receiver
and the relay (in this process, as ``mailsync notifications serve`` runs them), the
simulator delivering Graph's notifications, and Postgres.

``mailboxes`` mailboxes are registered, synced once and subscribed; one unmeasured change to
an extra mailbox, waited for in Postgres, proves the trigger live and warms the worker.
Then each measured mailbox receives one
burst of new messages (``changes`` in all, spread evenly), the bursts ``spacing_s`` apart.
A change's latency is from the moment the simulator made it to its row's ``first_synced_at``
in Postgres (the inserting transaction's start: same clock, same machine). Also measured:
Graph requests per change (every request the simulator served in the phase, subscriptions
excluded, over the changes), syncs started per burst (jobs per mailbox in the phase), and
the flow runs the trigger started (each a process start). Afterwards every mailbox's live
rows must equal the mailbox.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailsync.bench.mailbox import SyncFlow, fresh_database, point_this_process_at
from mailsync.prefect_server import prefect_api

TENANT = "contoso-bench-notify"
POOL = "mailsync-bench-notifications"
SYNC_DEPLOYMENT = ("flows/sync_changed.py:sync_changed", "on-change")  # prefect.yaml's entry
POLL_S = 0.2
WARM_UP = "notify-warm-up@contoso.example"


@dataclass(frozen=True)
class NotificationsConfig:
    mailboxes: int = 20
    changes: int = 200
    messages: int = 20  # each mailbox's mail before the changes
    spacing_s: float = 0.5  # between two mailboxes' bursts
    worker_query_s: float = 1.0  # PREFECT_WORKER_QUERY_SECONDS of the worker (default 10)
    timeout_s: float = 600.0
    seed: int = 1


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (no interpolation: a reported figure is one measured)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def run_bench_notifications(config: NotificationsConfig, sync_mailbox: SyncFlow) -> dict[str, Any]:
    from mailsync.runtime import reset_runtime
    from mailsync.simulator import GraphSimulator

    spec = _deployment_spec()  # a missing prefect.yaml is said now, not after the servers
    with (
        prefect_api() as (api_url, _, _),
        GraphSimulator() as simulator,
        fresh_database() as url,
        tempfile.TemporaryDirectory(prefix="mailsync-bench-worker-") as workdir,
    ):
        point_this_process_at(api_url, url, simulator, TENANT)
        # Prefect read its settings when this process imported it: its client (the pool, the
        # deployment, the first syncs' flow runs) must be pointed at this server explicitly.
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            with temporary_settings(updates={PREFECT_API_URL: api_url}):
                return _run(config, sync_mailbox, simulator, url, api_url, Path(workdir), spec)
        finally:
            reset_runtime()


def _run(
    config: NotificationsConfig,
    sync_mailbox: SyncFlow,
    simulator: Any,
    url: str,
    api_url: str,
    workdir: Path,
    spec: dict[str, Any],
) -> dict[str, Any]:
    from mailsync.notify.receiver import create_app
    from mailsync.notify.relay import PrefectEmitter, Relay
    from mailsync.notify.serve import ReceiverServer
    from mailsync.notify.subscriptions import SubscriptionManager
    from mailsync.runtime import get_runtime
    from mailsync.sync.jobs import default_business_id
    from mailsync.sync.registry import Registration, add_mailbox

    runtime = get_runtime()
    business = default_business_id(TENANT)
    names = [f"notify{i:02d}@contoso.example" for i in range(config.mailboxes)]
    names.append(WARM_UP)
    boxes = [
        simulator.add_mailbox(n, config.messages, seed=config.seed + i) for i, n in enumerate(names)
    ]
    for name in names:
        add_mailbox(runtime.db, Registration.checked(business, name))
        sync_mailbox(mailbox=name, folder="all", graph_url=simulator.url)  # the first, full

    emitter = PrefectEmitter(api_url)
    stop = threading.Event()
    public: list[str] = []  # the receiver's URL, once it listens
    relay = Relay(
        runtime.db,
        emitter,
        lambda b: SubscriptionManager(runtime.db, runtime.graph(), b, public[0]),
    )
    with ReceiverServer(create_app(runtime.db, on_recorded=relay.wake.set)) as receiver:
        public.append(receiver.url)
        relay_thread = threading.Thread(target=relay.run_forever, args=(stop,), daemon=True)
        relay_thread.start()
        report = SubscriptionManager(runtime.db, runtime.graph(), business, receiver.url).sync()
        if report.failed:
            raise RuntimeError(f"subscriptions failed: {report.failed}")
        deployment_id = _deploy(spec)
        worker = _start_worker(config, workdir, api_url)
        try:
            # Unmeasured: Prefect's triggers service loads a new automation a moment after
            # it is created (an event before that starts nothing), and the worker's first
            # run pays its start-up. One change, waited for in Postgres, covers both.
            warm_up = boxes.pop()
            warm_id = warm_up.add_messages(1)[0].id
            if not _wait_landed(url, {warm_id: time.time()}, config.timeout_s):
                raise RuntimeError("the warm-up change never reached Postgres")
            # The measured changes start no earlier than the warm-up's run has ended: their
            # first sync pays a flow run's start, as a change in a quiet hour does.
            warm_runs = _wait_runs_ended(deployment_id, config.timeout_s)
            load_before = os.getloadavg()
            phase = _changes(config, simulator, boxes, url)
            phase["flow_runs"] = _subtract(_flow_runs(deployment_id), warm_runs)
            phase["load_average"] = {"before": _rounded(load_before), "after": _rounded()}
        finally:
            stop.set()
            relay.wake.set()
            relay_thread.join(timeout=15)
            _stop(worker)
            _undeploy(deployment_id)
            emitter.close()
    return {"mailboxes": config.mailboxes, "changes": config.changes, **phase}


def _changes(
    config: NotificationsConfig, simulator: Any, boxes: list[Any], url: str
) -> dict[str, Any]:
    import psycopg

    per_box = [config.changes // len(boxes)] * len(boxes)
    for i in range(config.changes % len(boxes)):
        per_box[i] += 1
    before = simulator.stats.as_dict()
    with psycopg.connect(url, autocommit=True) as conn:
        started_db = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    made: dict[str, float] = {}  # graph id -> when the simulator made it (epoch s)
    begun = time.monotonic()
    for box, count in zip(boxes, per_box, strict=True):
        when = time.time()
        for message in box.add_messages(count):
            made[message.id] = when
        time.sleep(config.spacing_s)  # a bench's pacing, not a test's wait
    landed = _wait_landed(url, made, config.timeout_s - (time.monotonic() - begun))
    assert simulator.subscriptions.wait_idle(30)
    with psycopg.connect(url, autocommit=True) as conn:
        jobs = conn.execute(
            "SELECT s.mailbox, count(q.id) AS n FROM stores s LEFT JOIN sync_queue q"
            " ON q.store_id = s.id AND q.created_at >= %s WHERE s.mailbox <> %s"
            " GROUP BY s.mailbox",
            (started_db, WARM_UP),
        ).fetchall()
        exact = all(
            {
                r[0]
                for r in conn.execute(
                    "SELECT e.graph_id FROM emails e JOIN stores s ON s.id = e.store_id"
                    " WHERE s.mailbox = %s AND e.deleted_at IS NULL",
                    (box.user,),
                ).fetchall()
            }
            == box.ids()
            for box in boxes
        )
    latencies = [landed[i] - made[i] for i in landed]
    after = simulator.stats.as_dict()
    requests = after["data_requests"] - before["data_requests"]
    syncs = [int(n) for _, n in jobs]
    return {
        "landed": len(landed),
        "exact": exact and len(landed) == len(made),
        "latency_s": {
            "p50": round(statistics.median(latencies), 2) if latencies else None,
            "p95": round(percentile(latencies, 0.95), 2) if latencies else None,
            "max": round(max(latencies), 2) if latencies else None,
        },
        "graph_requests_per_change": round(requests / max(1, config.changes), 2),
        "graph_requests_by_kind": _subtract(after["by_kind"], before["by_kind"]),
        "syncs_per_burst": {"min": min(syncs), "max": max(syncs), "total": sum(syncs)},
        "notifications": simulator.subscriptions.notifications,
        "worker_query_s": config.worker_query_s,
    }


def _wait_landed(url: str, made: dict[str, float], timeout_s: float) -> dict[str, float]:
    """{graph id: first_synced_at (epoch s)} of the changes in Postgres, once all are (or
    the time is up)."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    landed: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        while len(landed) < len(made) and time.monotonic() < deadline:
            for graph_id, first in conn.execute(
                "SELECT graph_id, first_synced_at FROM emails WHERE graph_id = ANY(%s)",
                (list(set(made) - set(landed)),),
            ).fetchall():
                landed[graph_id] = _epoch(first)
            time.sleep(POLL_S)  # a bench's sampling; the figure is first_synced_at, not this
    return landed


def _flow_runs(deployment_id: Any) -> dict[str, int]:
    """The deployment's flow runs so far, by state (the warm-up's included)."""
    from collections import Counter

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return dict(Counter((r.state.name if r.state else None) or "none" for r in runs))


def _wait_runs_ended(deployment_id: Any, timeout_s: float) -> dict[str, int]:
    """Once no flow run of the deployment is scheduled, queued or running: its runs by
    state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = _flow_runs(deployment_id)
        if set(runs) <= {"Completed", "Failed", "Crashed", "Cancelled"}:
            return runs
        time.sleep(POLL_S)  # a bench's sampling of Prefect's states
    raise RuntimeError(f"the warm-up's flow runs never ended: {runs}")


def _subtract(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Counts of the phase alone (what changed between two snapshots)."""
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


def _rounded(load: tuple[float, float, float] | None = None) -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine's business, beside the figures)."""
    return [round(x, 1) for x in (load or os.getloadavg())]


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _deployment_spec() -> dict[str, Any]:
    """sync-changed/on-change as prefect.yaml (in the working directory) declares it."""
    from mailsync.deployments.serve import PREFECT_FILE, load_specs
    from mailsync.errors import ConfigError

    if not PREFECT_FILE.is_file():
        raise ConfigError(
            f"bench --notifications deploys from {PREFECT_FILE}, and there is none here "
            f"({Path.cwd()}): run it from the checkout's root"
        )
    [spec] = [
        s for s in load_specs(PREFECT_FILE) if (s["entrypoint"], s["name"]) == SYNC_DEPLOYMENT
    ]
    return spec


def _deploy(spec: dict[str, Any]) -> Any:
    """The deployment (trigger included) on a process pool of its own; its id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from mailsync.deployments.serve import build_deployment

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    return build_deployment({**spec, "schedules": []}).apply(work_pool_name=POOL)


def _undeploy(deployment_id: Any) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")
        client.delete_deployment(deployment_id)


def _start_worker(
    config: NotificationsConfig, workdir: Path, api_url: str
) -> subprocess.Popen[bytes]:
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_WORKER_QUERY_SECONDS": str(config.worker_query_s),
    }
    log = open(workdir / "worker.log", "wb")  # the child keeps its own copy
    try:
        return subprocess.Popen(
            [prefect, "worker", "start", "--pool", POOL, "--limit", "8"],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)
