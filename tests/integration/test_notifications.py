"""Change notifications: the receiver (uvicorn on loopback), the simulator's subscriptions
and deliveries, the subscriptions' upkeep and the relay to a real Prefect server, against
a real Postgres. Deliveries are awaited on the simulator's idle event, never on time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from mailsync.notify.receiver import create_app
from mailsync.notify.relay import PrefectEmitter, Relay
from mailsync.notify.serve import ReceiverServer
from mailsync.notify.subscriptions import SubscriptionManager
from mailsync.runtime import Runtime
from mailsync.simulator import GraphSimulator
from mailsync.sync.jobs import default_business_id
from mailsync.sync.registry import Registration, add_mailbox, set_enabled

BUSINESS = default_business_id("contoso-test")  # the simulator fixture's tenant
ADA = "ada@contoso.example"
BOB = "bob@contoso.example"


def rows(url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture()
def receiver(runtime: Runtime) -> Iterator[ReceiverServer]:
    with ReceiverServer(create_app(runtime.db)) as server:
        yield server


@pytest.fixture()
def manager(runtime: Runtime, receiver: ReceiverServer) -> SubscriptionManager:
    return SubscriptionManager(runtime.db, runtime.graph(), BUSINESS, receiver.url)


@pytest.fixture()
def emitter(prefect_api_url: str) -> Iterator[PrefectEmitter]:
    emitter = PrefectEmitter()
    yield emitter
    emitter.close()


def register(runtime: Runtime, simulator: GraphSimulator, *mailboxes: str) -> None:
    for mailbox in mailboxes:
        simulator.add_mailbox(mailbox, 5)
        add_mailbox(runtime.db, Registration.checked(BUSINESS, mailbox))


def outbox(url: str) -> list[dict[str, Any]]:
    return rows(url, "SELECT * FROM notification_outbox ORDER BY id")


def test_handshake_echoes_the_decoded_token(receiver: ReceiverServer) -> None:
    for path in ("/notifications", "/lifecycle"):
        answer = httpx.post(
            receiver.url + path, params={"validationToken": "Validation: a b+c&d=é"}
        )
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        assert answer.text == "Validation: a b+c&d=é"


def test_subscribe_then_changes_reach_the_outbox(
    runtime: Runtime, simulator: GraphSimulator, manager: SubscriptionManager, database_url: str
) -> None:
    register(runtime, simulator, ADA, BOB)
    report = manager.sync()
    assert sorted(report.created) == [ADA, BOB], report
    assert simulator.subscriptions.validations == 4  # both URLs of both subscriptions
    stored = rows(database_url, "SELECT * FROM graph_subscriptions")
    assert {r["id"] for r in stored} == {s.id for s in simulator.subscriptions.all()}

    simulator.mailbox(ADA).add_messages(3)
    simulator.mailbox(ADA).delete(list(simulator.mailbox(ADA).ids())[:1])
    assert simulator.subscriptions.wait_idle()
    kinds = sorted(r["kind"] for r in outbox(database_url))
    assert kinds == ["created", "created", "created", "deleted"]
    ada = rows(database_url, "SELECT * FROM stores WHERE mailbox = %s", ADA)[0]
    assert ada["last_notified_at"] is not None
    assert {r["store_id"] for r in outbox(database_url)} == {ada["id"]}


def test_wrong_client_state_or_unknown_subscription_is_dropped(
    runtime: Runtime,
    simulator: GraphSimulator,
    manager: SubscriptionManager,
    receiver: ReceiverServer,
    database_url: str,
    emitter: PrefectEmitter,
) -> None:
    register(runtime, simulator, ADA)
    manager.sync()
    (subscription,) = simulator.subscriptions.all()
    forged = [
        {"subscriptionId": subscription.id, "clientState": "guess", "changeType": "created"},
        {"subscriptionId": "not-ours", "clientState": "x", "changeType": "created"},
        {"subscriptionId": subscription.id, "changeType": "created"},  # no clientState
    ]
    answer = httpx.post(receiver.url + "/notifications", json={"value": forged})
    assert answer.status_code == 202  # answered as any batch: a forger learns nothing
    assert outbox(database_url) == []
    drops = {
        r["reason"]: r["count"] for r in rows(database_url, "SELECT * FROM notification_drops")
    }
    assert drops == {"client_state": 2, "unknown_subscription": 1}
    relay = Relay(runtime.db, emitter)
    assert relay.run_once() == []  # nothing to sync


def test_bad_bodies_are_refused_and_lose_nothing(
    receiver: ReceiverServer, database_url: str
) -> None:
    assert httpx.post(receiver.url + "/notifications", content=b"{nope").status_code == 400
    assert httpx.post(receiver.url + "/notifications", json={"value": 3}).status_code == 400
    big = b'{"value": [' + b" " * 1_100_000 + b"]}"
    assert httpx.post(receiver.url + "/notifications", content=big).status_code == 413
    assert outbox(database_url) == []


def test_endpoint_failing_the_handshake_is_refused(
    runtime: Runtime, simulator: GraphSimulator, database_url: str
) -> None:
    register(runtime, simulator, ADA)
    with ReceiverServer(create_app(runtime.db)) as gone:
        url = gone.url  # a port nothing listens on once this block ends
    manager = SubscriptionManager(runtime.db, runtime.graph(), BUSINESS, url)
    report = manager.sync()
    assert ADA in report.failed and "validation" in report.failed[ADA].lower()
    assert simulator.subscriptions.all() == []
    assert rows(database_url, "SELECT * FROM graph_subscriptions") == []


def test_renewal_before_expiry_and_404_recreates(
    runtime: Runtime, simulator: GraphSimulator, manager: SubscriptionManager, database_url: str
) -> None:
    register(runtime, simulator, ADA, BOB)
    manager.sync()
    by_user = {s.resource.split("/")[1]: s for s in simulator.subscriptions.all()}
    soon = datetime.now(UTC) + timedelta(hours=2)
    for subscription in by_user.values():  # both under 24 h from expiry, here and in Graph
        simulator.subscriptions.set_expiry(subscription.id, soon)
    rows(database_url, "UPDATE graph_subscriptions SET expires_at = %s RETURNING id", soon)
    simulator.subscriptions.expire(by_user[BOB].id)  # Graph deleted it: PATCH answers 404

    report = manager.sync()
    assert report.renewed == [ADA] and report.recreated == [BOB], report
    stored = {r["id"]: r for r in rows(database_url, "SELECT * FROM graph_subscriptions")}
    assert by_user[ADA].id in stored and by_user[BOB].id not in stored
    assert all(r["expires_at"] > datetime.now(UTC) + timedelta(days=6) for r in stored.values())
    assert {s.id for s in simulator.subscriptions.all()} == set(stored)

    # Unchanged when nothing is due; a paused mailbox loses its subscription.
    set_enabled(runtime.db, BUSINESS, BOB, False)
    report = manager.sync()
    assert report.kept == [ADA] and report.deleted == [BOB], report
    assert len(simulator.subscriptions.all()) == 1


def test_orphan_subscriptions_are_deleted(
    runtime: Runtime, simulator: GraphSimulator, manager: SubscriptionManager, database_url: str
) -> None:
    register(runtime, simulator, ADA)
    manager.sync()
    rows(database_url, "DELETE FROM graph_subscriptions RETURNING id")  # lost our row of it
    report = manager.sync()
    assert len(report.orphans_deleted) == 1 and report.created == [ADA]
    assert len(simulator.subscriptions.all()) == 1


def test_relay_sends_one_event_per_mailbox_and_waits_for_an_active_job(
    runtime: Runtime,
    simulator: GraphSimulator,
    manager: SubscriptionManager,
    database_url: str,
    emitter: PrefectEmitter,
) -> None:
    register(runtime, simulator, ADA, BOB)
    manager.sync()
    simulator.subscriptions.duplicate_every = 3  # Graph's duplicates: absorbed as well
    simulator.mailbox(ADA).add_messages(100)
    simulator.mailbox(BOB).add_messages(2)
    assert simulator.subscriptions.wait_idle()
    assert len(outbox(database_url)) > 102

    relay = Relay(runtime.db, emitter, lambda business: manager)
    sent = relay.run_once()
    assert sorted(s.mailbox for s in sent) == [ADA, BOB]
    assert all(r["relayed_at"] is not None for r in outbox(database_url))
    assert relay.run_once() == []

    # A job of Ada's is running: her new notifications wait for it to end.
    ada = rows(database_url, "SELECT id FROM stores WHERE mailbox = %s", ADA)[0]["id"]
    job = rows(
        database_url,
        "INSERT INTO sync_queue (business_id, store_id, sync_type, status, chunk_size,"
        " page_size, started_at) VALUES (%s, %s, 'incremental', 'running', 100, 100, now())"
        " RETURNING id",
        BUSINESS,
        ada,
    )[0]["id"]
    simulator.mailbox(ADA).add_messages(1)
    assert simulator.subscriptions.wait_idle()
    assert relay.run_once() == []
    rows(
        database_url,
        "UPDATE sync_queue SET status = 'completed', completed_at = now()"
        " WHERE id = %s RETURNING id",
        job,
    )
    (after,) = relay.run_once()
    assert after.mailbox == ADA and after.notifications == 1


def test_lifecycle_events_recreate_and_sync(
    runtime: Runtime,
    simulator: GraphSimulator,
    manager: SubscriptionManager,
    database_url: str,
    emitter: PrefectEmitter,
) -> None:
    register(runtime, simulator, ADA)
    manager.sync()
    (first,) = simulator.subscriptions.all()
    simulator.subscriptions.lifecycle(first.id, "missed")
    assert simulator.subscriptions.wait_idle()
    relay = Relay(runtime.db, emitter, lambda business: manager)
    (missed,) = relay.run_once()
    assert missed.mailbox == ADA

    simulator.subscriptions.lifecycle(first.id, "subscriptionRemoved")
    assert simulator.subscriptions.wait_idle()
    (removed,) = relay.run_once()
    assert removed.mailbox == ADA
    (second,) = simulator.subscriptions.all()
    assert second.id != first.id
    stored = rows(database_url, "SELECT id FROM graph_subscriptions")
    assert [r["id"] for r in stored] == [second.id]
    kinds = [r["kind"] for r in outbox(database_url)]
    assert kinds == ["missed", "subscriptionRemoved"]


def test_an_event_that_started_no_sync_is_sent_again(
    runtime: Runtime,
    simulator: GraphSimulator,
    manager: SubscriptionManager,
    database_url: str,
    emitter: PrefectEmitter,
) -> None:
    register(runtime, simulator, ADA)
    manager.sync()
    simulator.mailbox(ADA).add_messages(1)
    assert simulator.subscriptions.wait_idle()
    relay = Relay(runtime.db, emitter, resend_after_s=0)  # no deployment here: no job opens
    ids = [s.event_id for _ in range(3) for s in relay.run_once()]
    assert len(ids) == len(set(ids)) == 4  # the event and 3 resends, each its own id
    assert relay.run_once() == []  # then it gives up (logged): the poll is the safety net

    # Once a job of the mailbox has opened after the event, nothing is sent again.
    simulator.mailbox(ADA).add_messages(1)
    assert simulator.subscriptions.wait_idle()
    relay.resend_after_s = 3600
    assert len(relay.run_once()) == 1
    ada = rows(database_url, "SELECT id FROM stores WHERE mailbox = %s", ADA)[0]["id"]
    rows(
        database_url,
        "INSERT INTO sync_queue (business_id, store_id, sync_type, status, chunk_size,"
        " page_size, started_at, completed_at) VALUES (%s, %s, 'incremental', 'completed',"
        " 100, 100, now(), now()) RETURNING id",
        BUSINESS,
        ada,
    )
    relay.resend_after_s = 0
    assert relay.run_once() == []
