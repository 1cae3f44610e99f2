"""Change notifications' pure parts: clientState hashing, judging a batch, the public URL
rules, the relay's event ids, the bench's percentile."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsync.bench.notifications import percentile
from mailsync.errors import ConfigError
from mailsync.notify import secrets
from mailsync.notify.receiver import BadBatch, judge, parse_batch
from mailsync.notify.relay import event_id, resource_id
from mailsync.notify.subscriptions import receiver_urls

STATE = secrets.new_client_state()
KNOWN = {
    "sub-1": {
        "id": "sub-1",
        "business_id": "b",
        "store_id": "s",
        "client_state_sha256": secrets.digest(STATE),
    }
}


def test_client_state_is_random_short_and_matched_by_its_digest() -> None:
    assert secrets.new_client_state() != secrets.new_client_state()
    assert len(STATE) <= 128  # Graph's limit
    assert secrets.matches(STATE, secrets.digest(STATE))
    assert not secrets.matches(STATE + "x", secrets.digest(STATE))
    assert not secrets.matches(None, secrets.digest(STATE))
    assert not secrets.matches(42, secrets.digest(STATE))


def test_judge_keeps_ours_and_counts_the_rest() -> None:
    items = [
        {
            "subscriptionId": "sub-1",
            "clientState": STATE,
            "changeType": "created",
            "resource": "Users/u/Messages/m",
        },
        {"subscriptionId": "sub-1", "clientState": "wrong", "changeType": "created"},
        {"subscriptionId": "sub-2", "clientState": STATE, "changeType": "created"},
        {"subscriptionId": "sub-1", "clientState": STATE, "changeType": "exploded"},
        {"subscriptionId": "sub-1", "clientState": STATE, "lifecycleEvent": "missed"},
    ]
    outcome = judge(items, KNOWN, "changeType")
    assert [(a.store_id, a.kind, a.resource) for a in outcome.accepted] == [
        ("s", "created", "Users/u/Messages/m")
    ]
    assert dict(outcome.drops) == {"client_state": 1, "unknown_subscription": 1, "malformed": 2}
    lifecycle = judge(items[-1:], KNOWN, "lifecycleEvent")
    assert [a.kind for a in lifecycle.accepted] == ["missed"]


@pytest.mark.parametrize("body", [b"", b"[]", b'{"value": {}}', b'{"value": [1]}', b"\xff"])
def test_a_body_that_is_not_a_batch_is_refused(body: bytes) -> None:
    with pytest.raises(BadBatch):
        parse_batch(body)


def test_public_url_is_https_except_on_loopback() -> None:
    assert receiver_urls("https://hooks.example.com/mailsync/") == (
        "https://hooks.example.com/mailsync/notifications",
        "https://hooks.example.com/mailsync/lifecycle",
    )
    assert receiver_urls("http://127.0.0.1:8787")[0] == "http://127.0.0.1:8787/notifications"
    assert receiver_urls("http://localhost:1")[1] == "http://localhost:1/lifecycle"
    for bad in ("http://hooks.example.com", "ftp://x", "https://x/?a=1", "", None):
        with pytest.raises(ConfigError):
            receiver_urls(bad)


def test_event_ids_are_deterministic_per_store_and_first_row() -> None:
    assert event_id("s1", 7) == event_id("s1", 7)
    assert len({event_id("s1", 7), event_id("s1", 8), event_id("s2", 7)}) == 3
    assert resource_id("s1") == "mailsync.mailbox.s1"


def test_percentile_is_a_measured_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([3.0], 0.95) == 3.0


def test_the_notifications_bench_says_at_once_that_prefect_yaml_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It deploys from prefect.yaml: asked elsewhere, it says so before starting any server.
    from mailsync.bench.notifications import NotificationsConfig, run_bench_notifications

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="run it from the checkout's root"):
        run_bench_notifications(NotificationsConfig(mailboxes=1, changes=1), sync_mailbox=None)  # type: ignore[arg-type]
