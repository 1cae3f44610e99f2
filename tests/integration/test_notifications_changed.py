"""sync-changed: one flow run syncs every mailbox with a change notification newer than its
newest job, in threads, and the ones that change while it runs. Real Postgres, the simulator
over HTTP (its notifications delivered to the receiver on loopback), real Prefect flows. A
change during a sync lands while the simulator holds that sync's page (hold_after_pages),
never at a guessed moment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from mailsync.flows.sync_changed import sync_changed
from mailsync.flows.sync_mailbox import sync_mailbox
from mailsync.notify.receiver import create_app
from mailsync.notify.serve import ReceiverServer
from mailsync.notify.subscriptions import SubscriptionManager
from mailsync.runtime import Runtime
from mailsync.simulator import GraphSimulator
from mailsync.sync.jobs import default_business_id
from mailsync.sync.registry import Registration, add_mailbox
from mailsync.tasks.sync_changed import cancel_queued_runs, changed_mailboxes

BUSINESS = str(default_business_id("contoso-test"))  # the simulator fixture's tenant
ADA, BOB, CAROL = "ada@contoso.example", "bob@contoso.example", "carol@contoso.example"


def rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def jobs(url: str, mailbox: str) -> list[dict[str, Any]]:
    return rows(
        url,
        "SELECT q.* FROM sync_queue q JOIN stores s ON s.id = q.store_id"
        " WHERE s.mailbox = %s ORDER BY q.created_at",
        mailbox,
    )


def emails(url: str, mailbox: str) -> set[str]:
    found = rows(
        url,
        "SELECT e.graph_id FROM emails e JOIN stores s ON s.id = e.store_id"
        " WHERE s.mailbox = %s AND e.deleted_at IS NULL",
        mailbox,
    )
    return {r["graph_id"] for r in found}


def run_sync_changed() -> dict[str, Any]:
    # No debounce: every change is ready at once (the debounce has its own test below).
    return sync_changed(debounce_s=0, chunk_size=200, page_size=100)  # type: ignore[no-any-return]


@pytest.fixture()
def subscribed(runtime: Runtime, simulator: GraphSimulator) -> Iterator[SubscriptionManager]:
    """Ada, Bob and Carol registered, synced once and subscribed; the receiver serving."""
    for seed, mailbox in enumerate((ADA, BOB, CAROL)):
        simulator.add_mailbox(mailbox, 20, seed=seed)
        add_mailbox(runtime.db, Registration.checked(BUSINESS, mailbox))
        sync_mailbox(mailbox=mailbox, business_id=BUSINESS, chunk_size=200, page_size=100)
    with ReceiverServer(create_app(runtime.db)) as receiver:
        manager = SubscriptionManager(runtime.db, runtime.graph(), BUSINESS, receiver.url)
        assert len(manager.sync().created) == 3
        yield manager


def test_one_run_syncs_each_changed_mailbox_once(
    subscribed: SubscriptionManager, simulator: GraphSimulator, database_url: str
) -> None:
    simulator.subscriptions.duplicate_every = 3  # Graph's duplicates change nothing
    simulator.mailbox(ADA).add_messages(100)  # a burst: 100 notifications
    simulator.mailbox(BOB).add_messages(2)
    assert simulator.subscriptions.wait_idle()
    assert len(rows(database_url, "SELECT id FROM notification_outbox")) > 102

    result = run_sync_changed()
    assert sorted(m["mailbox"] for m in result["mailboxes"]) == [ADA, BOB]  # not Carol
    assert result["counts"] == {"completed": 2}, result
    assert [len(jobs(database_url, m)) for m in (ADA, BOB, CAROL)] == [2, 2, 1]
    for mailbox in (ADA, BOB):
        assert emails(database_url, mailbox) == simulator.mailbox(mailbox).ids()

    assert run_sync_changed()["mailboxes"] == []  # their notifications are older than a job
    assert [len(jobs(database_url, m)) for m in (ADA, BOB, CAROL)] == [2, 2, 1]


def subscription_of(url: str, mailbox: str) -> str:
    found = rows(
        url,
        "SELECT g.id FROM graph_subscriptions g JOIN stores s ON s.id = g.store_id"
        " WHERE s.mailbox = %s",
        mailbox,
    )
    return str(found[0]["id"])


def test_missed_and_removed_lead_to_a_sync_reauthorization_alone_does_not(
    subscribed: SubscriptionManager, simulator: GraphSimulator, database_url: str
) -> None:
    lifecycle = simulator.subscriptions.lifecycle
    lifecycle(subscription_of(database_url, ADA), "missed")
    lifecycle(subscription_of(database_url, BOB), "subscriptionRemoved")
    lifecycle(subscription_of(database_url, CAROL), "reauthorizationRequired")
    assert simulator.subscriptions.wait_idle()
    assert len(rows(database_url, "SELECT id FROM notification_outbox")) == 3

    result = run_sync_changed()
    assert sorted(m["mailbox"] for m in result["mailboxes"]) == [ADA, BOB]
    assert [len(jobs(database_url, m)) for m in (ADA, BOB, CAROL)] == [2, 2, 1]


def test_a_change_waits_for_its_debounce(
    subscribed: SubscriptionManager, simulator: GraphSimulator
) -> None:
    simulator.mailbox(ADA).add_messages(1)
    assert simulator.subscriptions.wait_idle()
    [young] = changed_mailboxes(BUSINESS, 10, debounce_s=3600)
    assert young.mailbox == ADA and young.ready is False  # the rest of a burst may come
    [ready] = changed_mailboxes(BUSINESS, 10, debounce_s=0)
    assert ready.mailbox == ADA and ready.ready is True


def test_a_change_during_a_sync_gets_exactly_one_more_never_two_at_once(
    subscribed: SubscriptionManager, simulator: GraphSimulator, database_url: str
) -> None:
    ada = simulator.mailbox(ADA)
    ada.add_messages(1)
    assert simulator.subscriptions.wait_idle()
    simulator.faults.hold_after_pages = 0  # Ada's sync waits at its first page
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_sync_changed)
        try:
            assert simulator.faults.wait_held(60)
            ada.add_messages(3)  # announced while her job is active
            assert simulator.subscriptions.wait_idle()
            # Another run meanwhile leaves Ada alone: her job is active.
            assert run_sync_changed()["mailboxes"] == []
            assert len([j for j in jobs(database_url, ADA) if j["status"] == "running"]) == 1
        finally:
            simulator.faults.hold_after_pages = None  # released; nothing is held again
        result = first.result(timeout=120)

    # The run saw the change once the first job had ended, and synced Ada once more.
    assert [m["mailbox"] for m in result["mailboxes"]] == [ADA, ADA], result
    assert result["counts"] == {"completed": 2}, result
    _, during, after = jobs(database_url, ADA)  # the first sync, then these two
    assert during["completed_at"] <= after["created_at"]  # one after the other
    assert emails(database_url, ADA) == ada.ids()
    assert run_sync_changed()["mailboxes"] == []


def test_queued_runs_made_redundant_are_cancelled(prefect_api_url: str) -> None:
    """A queued run created before a question that found nothing is cancelled; one created
    after it is left to run (its changes may be newer than the question)."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client

    deployment = sync_changed.to_deployment(name=f"cancel-test-{uuid.uuid4().hex[:8]}")
    deployment_id = deployment.apply()
    try:
        with get_client(sync_client=True) as client:
            earlier = [client.create_flow_run_from_deployment(deployment_id) for _ in range(2)]
            asked = datetime.now(UTC)
            later = client.create_flow_run_from_deployment(deployment_id)
            assert cancel_queued_runs(deployment_id, earlier[0].id, asked) == 1  # not its own
            states = {run.id: client.read_flow_run(run.id).state_name for run in (*earlier, later)}
        assert states == {
            earlier[0].id: "Scheduled",
            earlier[1].id: "Cancelled",
            later.id: "Scheduled",
        }
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
