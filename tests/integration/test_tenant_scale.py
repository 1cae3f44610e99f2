"""Prefect at tenant scale: one artifact key per mailbox, quiet no-change cycles, mailsync's
warnings in the run's logs, tables that read in 80 columns.

Real parts only: the session's Prefect server (its API is what the UI reads), the
simulator over HTTP, the test's own Postgres. Each test uses a domain of its own, so that
what it counts in the shared Prefect server is its own.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import pytest
from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)
from prefect.client.schemas.sorting import ArtifactSort
from prefect.logging.handlers import APILogWorker
from prefect.task_runners import ThreadPoolTaskRunner
from typer.testing import CliRunner

from mailsync.artifacts import mailbox_key, sync_all_key
from mailsync.cli import app
from mailsync.flows.sync_all import sync_all
from mailsync.simulator import GraphSimulator
from mailsync.store.db import Database
from mailsync.sync.jobs import default_business_id
from mailsync.sync.registry import Registration, add_mailbox
from mailsync.tasks.retention import RetentionPolicy, prune_prefect_history

BUSINESS = str(default_business_id("contoso-test"))  # the simulator fixture's tenant
T = TypeVar("T")


def every(read: Callable[[int], Sequence[T]], page: int = 200) -> list[T]:
    """All the records a paged Prefect read returns (its API answers 200 at most)."""
    found: list[T] = []
    while True:
        batch = read(len(found))
        found += batch
        if len(batch) < page:
            return found


def artifacts_of(client: SyncPrefectClient, keys_: list[str]) -> list[Any]:
    """Every version of the artifacts of these keys, paged in id order: Prefect's default
    order (by creation time) has ties, and offset pages over ties repeat and skip rows."""
    keys = ArtifactFilter(key=ArtifactFilterKey(any_=keys_))
    return every(
        lambda at: client.read_artifacts(
            artifact_filter=keys, sort=ArtifactSort.ID_DESC, limit=200, offset=at
        )
    )


def logs_of(client: SyncPrefectClient, flow_run_ids: list[UUID]) -> list[Any]:
    APILogWorker.drain_all(timeout=30)  # the runs' last lines, sent now
    runs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
    return every(lambda at: client.read_logs(runs, limit=200, offset=at))


def make_all_due(url: str) -> None:
    """Every mailbox's next turn moved to the past, as an interval passing would."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE stores SET next_due_at = now() - interval '1 second'")


# -- 20 mailboxes, three cycles that find nothing new ----------------------------------------

# What is counted is per mailbox (a key, a version per sync, a line per cycle): 20 prove it
# as 200 did, in a tenth of the time.
MAILBOXES = 20
NO_CHANGE_CYCLES = 3


def test_no_change_cycles_add_one_small_version_per_mailbox_and_one_line(
    runtime: Any, simulator: GraphSimulator, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    for runs_logger in ("prefect.flow_runs", "prefect.task_runs"):  # the session quiets them
        caplog.set_level(logging.INFO, logger=runs_logger)  # to WARNING; an operator's: INFO
    domain = f"t{uuid.uuid4().hex[:8]}.example"
    boxes = [f"user{i:03d}@{domain}" for i in range(MAILBOXES)]
    for i, mailbox in enumerate(boxes):
        simulator.add_mailbox(mailbox, 3, seed=i)
    with Database(database_url) as db:
        for mailbox in boxes:
            add_mailbox(db, Registration.checked(BUSINESS, mailbox, "all"))
    flow = sync_all.with_options(task_runner=ThreadPoolTaskRunner(max_workers=8))

    runs = []
    for _ in range(1 + NO_CHANGE_CYCLES):  # the first copies the mail, the others find none
        state = flow(business_id=BUSINESS, return_state=True)
        result = state.result()
        assert len(result["mailboxes"]) == MAILBOXES
        assert {m["status"] for m in result["mailboxes"]} == {"completed"}
        runs.append(state.state_details.flow_run_id)
        make_all_due(database_url)

    with get_client(sync_client=True) as client:
        versions = artifacts_of(client, [mailbox_key(m) for m in boxes])
        logs = logs_of(client, runs)
    # One key per mailbox, whatever the number of syncs; one version per sync (its job is
    # in the description). Counted by job: Prefect's client sends a POST again after a
    # ReadTimeout, so a version whose answer came late under load is there twice (83 of 80,
    # twice, beside the 20-mailbox notifications test), the client's retry, not a publish.
    assert {a.key for a in versions} == {mailbox_key(m) for m in boxes}
    per_sync = {(a.key, a.description) for a in versions}
    assert len(per_sync) == MAILBOXES * (1 + NO_CHANGE_CYCLES) <= len(versions)
    assert {a.type for a in versions} == {"table"}  # no progress bars for quick syncs
    for run in runs[1:]:
        quiet = [a for a in versions if a.flow_run_id == run]
        assert len({a.description for a in quiet}) == MAILBOXES
        assert all(a.data in ([], "[]") and "nothing changed" in a.description for a in quiet)
        # Each mailbox says so in one line of the run's logs: none of mailsync's others.
        mine = [
            log
            for log in logs
            if log.flow_run_id == run
            and domain in log.message
            and "mailboxes due" not in log.message
        ]
        assert len(mine) == MAILBOXES
        assert all("1 folder checked" in log.message for log in mine)
        assert all("nothing changed" in log.message for log in mine)
    with get_client(sync_client=True) as client:
        # sync-all's own table: one key for the business, a version per run.
        own = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[sync_all_key(BUSINESS)])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)),
        )
    assert sorted(str(a.flow_run_id) for a in own) == sorted(str(run) for run in runs)


# -- warnings in the run's logs --------------------------------------------------------------


def test_a_delta_reset_warning_is_in_the_runs_logs(
    runtime: Any, simulator: GraphSimulator, database_url: str
) -> None:
    mailbox = f"reset@t{uuid.uuid4().hex[:8]}.example"
    simulator.add_mailbox(mailbox, 40, seed=5)
    cli = CliRunner()
    first = cli.invoke(app, ["sync", "--mailbox", mailbox, "--json"])
    assert first.exit_code == 0, first.output
    simulator.expire_delta_tokens()  # the next sync's delta link answers 410

    second = cli.invoke(app, ["sync", "--mailbox", mailbox, "--json"])

    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["delta_resets"] == 1 and summary["emails_stored"] == 40
    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        warnings = LogFilter(level=LogFilterLevel(ge_=logging.WARNING))
        found = every(lambda at: client.read_logs(warnings, limit=200, offset=at))
    resets = [log for log in found if mailbox in log.message]
    assert len(resets) == 1 and "delta state expired" in resets[0].message
    assert (resets[0].name, resets[0].level) == ("mailsync.sync.rounds", 30)
    assert resets[0].task_run_id is not None  # the chunk's task run, as the UI shows it


# -- 80 columns ------------------------------------------------------------------------------


def test_mailbox_list_prints_every_address_on_one_line_in_80_columns(
    runtime: Any, database_url: str
) -> None:
    boxes = [
        "firstname.lastname@contoso-subsidiary.example",
        "o'brien+billing@contoso.example",
        "x@contoso.example",
    ]
    with Database(database_url) as db:
        for mailbox in boxes:
            add_mailbox(db, Registration.checked(BUSINESS, mailbox, "all"))
    env = {**os.environ, "COLUMNS": "80"}
    command = [sys.executable, "-m", "mailsync.cli", "mailbox", "list"]

    listed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    as_json = subprocess.run(
        [*command, "--json"], env=env, capture_output=True, text=True, check=True
    )

    lines = listed.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), listed.stdout
    for mailbox in boxes:
        assert sum(mailbox in line for line in lines) == 1, listed.stdout
    header = next(line for line in lines if "mailbox" in line and "health" in line)
    assert "last job" in header  # whole headers, the important ones first
    rows = json.loads(as_json.stdout.splitlines()[-1])["mailboxes"]
    assert {row["mailbox"] for row in rows} == set(boxes)
    assert {"next_due_at", "interval_minutes", "last_error"} <= set(rows[0])  # all fields


# -- Prefect's database kept to the jobs' windows --------------------------------------------


def test_cleanup_deletes_old_runs_of_its_flows_and_their_artifacts(
    runtime: Any, prefect_api_url: str
) -> None:
    # Real runs on the real server, of a flow of the test's own (so that the session's other
    # runs are not the test's to delete); aged by moving the cleanup's clock on, since the
    # server stamps end times itself.
    name = f"probe-{uuid.uuid4().hex[:8]}"

    @flow(name=name, log_prints=False)
    def probe(fail: bool) -> None:
        create_table_artifact(key=name, table=[{"fail": fail}])
        if fail:
            raise ValueError("a failed run")

    ended = [probe(fail=f, return_state=True) for f in (False, False, True, True)]
    ids = [state.state_details.flow_run_id for state in ended]
    assert [state.type.value for state in ended] == ["COMPLETED"] * 2 + ["FAILED"] * 2
    with get_client(sync_client=True) as client:
        waiting = client.create_flow_run(probe, parameters={"fail": False})  # never ends
    policy = RetentionPolicy()  # 30 days completed, 7 failed
    now = datetime.now(UTC)

    @flow(name=f"{name}-cleanup")  # the cleanup's task, as its flow runs it
    def prune(days: float) -> dict[str, int]:
        return prune_prefect_history(policy, now + timedelta(days=days), flows=[name])

    def left() -> tuple[set[UUID], int, int]:
        """The probe's runs; its table's versions; every artifact of the ended runs (a
        failed run's error is kept as an artifact of its own, with no key)."""
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
            versions = artifacts_of(client, [name])
            of_runs = client.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids))
            )
        return {run.id for run in runs}, len(versions), len(of_runs)

    _, _, published = left()
    assert published >= 4  # a table each, the failed runs' errors
    assert prune(6.9) == {"prefect_runs_deleted": 0, "artifacts_deleted": 0}
    failed_runs = prune(7.1)
    assert failed_runs["prefect_runs_deleted"] == 2  # the failed ones, with what they left
    assert left() == ({*ids[:2], waiting.id}, 2, published - failed_runs["artifacts_deleted"])
    assert prune(30.1)["prefect_runs_deleted"] == 2
    assert left() == ({waiting.id}, 0, 0)  # a run that has not ended stays, however old
