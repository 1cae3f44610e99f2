"""The safety net under change notifications: sync-all still polls (hourly for a mailbox
with a live subscription), a poll that finds changes no notification announced counts
``missed_changes``, and a notification's run never runs beside the mailbox's job.
Real Postgres, the simulator over HTTP, the receiver on loopback, real Prefect flows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from psycopg.rows import dict_row

from mailsync.flows.sync_all import sync_all
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.notify.receiver import create_app
from mailsync.notify.serve import ReceiverServer
from mailsync.notify.subscriptions import SubscriptionManager
from mailsync.runtime import Runtime
from mailsync.simulator import GraphSimulator
from mailsync.sync.jobs import default_business_id
from mailsync.sync.registry import Registration, add_mailbox

BUSINESS = default_business_id("contoso-test")
ADA = "ada@contoso.example"


def rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def store(url: str) -> dict[str, Any]:
    return rows(url, "SELECT * FROM stores WHERE mailbox = %s", ADA)[0]


def emails(url: str) -> set[str]:
    return {
        r["graph_id"] for r in rows(url, "SELECT graph_id FROM emails WHERE deleted_at IS NULL")
    }


def make_due(url: str) -> None:
    rows(url, "UPDATE stores SET next_due_at = now() - interval '1 s' RETURNING id")


def run_sync_all() -> dict[str, Any]:
    flow = sync_all.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    return flow(chunk_size=200, page_size=100)  # type: ignore[no-any-return]


@pytest.fixture()
def subscribed(runtime: Runtime, simulator: GraphSimulator) -> Iterator[ReceiverServer]:
    """Ada registered (every 15 min), subscribed, synced once; the receiver serving."""
    simulator.add_mailbox(ADA, 40, seed=2)
    add_mailbox(runtime.db, Registration.checked(BUSINESS, ADA, interval_minutes=15))
    with ReceiverServer(create_app(runtime.db)) as receiver:
        SubscriptionManager(runtime.db, runtime.graph(), BUSINESS, receiver.url).sync()
        assert [m["status"] for m in run_sync_all()["mailboxes"]] == ["completed"]
        yield receiver


def test_a_subscribed_mailbox_is_polled_hourly(
    subscribed: ReceiverServer, database_url: str
) -> None:
    due = store(database_url)["next_due_at"]
    assert due > datetime.now(UTC) + timedelta(minutes=59)  # not its 15 minutes
    rows(database_url, "DELETE FROM graph_subscriptions RETURNING id")
    make_due(database_url)
    run_sync_all()
    assert store(database_url)["next_due_at"] < datetime.now(UTC) + timedelta(minutes=16)


def test_announced_changes_are_not_missed(
    subscribed: ReceiverServer, simulator: GraphSimulator, database_url: str
) -> None:
    simulator.mailbox(ADA).add_messages(3)
    assert simulator.subscriptions.wait_idle()
    make_due(database_url)
    assert [m["status"] for m in run_sync_all()["mailboxes"]] == ["completed"]
    assert emails(database_url) == simulator.mailbox(ADA).ids()
    assert store(database_url)["missed_changes"] == 0


def test_receiver_down_the_poll_restores_postgres_and_counts_the_loss(
    subscribed: ReceiverServer, simulator: GraphSimulator, database_url: str
) -> None:
    subscribed.stop()  # the receiver is down while mail changes
    simulator.subscriptions.max_attempts = 2  # Graph gives up (after hours, really)
    simulator.subscriptions.retry_delay_s = 0.05
    mailbox = simulator.mailbox(ADA)
    mailbox.add_messages(5)
    mailbox.delete(sorted(mailbox.initial_ids)[:2])
    assert simulator.subscriptions.wait_idle()
    assert simulator.subscriptions.abandoned == 7
    assert rows(database_url, "SELECT * FROM notification_outbox") == []

    make_due(database_url)
    assert [m["status"] for m in run_sync_all()["mailboxes"]] == ["completed"]
    assert emails(database_url) == mailbox.ids()  # Postgres equals the mailbox again
    assert store(database_url)["missed_changes"] == 1  # and the silent loss is counted


def test_a_notification_run_beside_an_active_job_ends_at_once(
    subscribed: ReceiverServer, database_url: str
) -> None:
    ada = store(database_url)
    job = rows(
        database_url,
        "INSERT INTO sync_queue (business_id, store_id, sync_type, status, chunk_size,"
        " page_size, started_at) VALUES (%s, %s, 'incremental', 'running', 100, 100, now())"
        " RETURNING id",
        BUSINESS,
        ada["id"],
    )[0]["id"]
    result = sync_mailbox(mailbox=ADA, business_id=BUSINESS, if_idle=True)
    assert result["status"] == "skipped"
    (active,) = rows(database_url, "SELECT * FROM sync_queue WHERE status = 'running'")
    assert active["id"] == job and active["emails_processed"] == 0  # not resumed
