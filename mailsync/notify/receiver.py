"""The ASGI app Graph POSTs change notifications to (``mailsync notifications serve``).

Graph's rules shape it (docs/notifications.md, research/change-notifications.md §1.5-1.6):

- ``?validationToken=X``: answer 200 ``text/plain`` with X decoded, within 10 s, or the
  subscription is refused. Nothing else is checked: Graph sends no body then.
- A batch: answer 2xx within 3 s. An endpoint slower than 2.9 s on 10% of 100 deliveries is
  delayed for every subscription, at 15% its notifications are dropped. So the request does
  one lookup and one insert per tenant in Postgres and nothing else: no Graph call, no
  Prefect call (the relay does those). 5xx only when the batch could not be written: Graph
  then retries it for up to 4 hours.
- Items of an unknown subscription, or with a clientState that does not match, are dropped
  and counted (``notification_drops``), never synced; the batch is still answered 202, as
  Microsoft advises, so a forger learns nothing and a stale subscription of ours is not
  retried for hours.

Changes go to ``/notifications``, lifecycle events to ``/lifecycle`` (the subscription's
``lifecycleNotificationUrl``): each route accepts only its own kind of item.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mailsync.errors import MailsyncError
from mailsync.notify.secrets import matches
from mailsync.store.db import Database

log = logging.getLogger("mailsync.notify.receiver")

MAX_BODY_BYTES = 1_000_000  # Graph batches are small (a few KB per item); this is plenty
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("missed", "subscriptionRemoved", "reauthorizationRequired")
NOTIFICATIONS_PATH = "/notifications"
LIFECYCLE_PATH = "/lifecycle"


class BadBatch(ValueError):
    """A body that is not a notification batch (answered 400)."""


@dataclass(frozen=True)
class Accepted:
    business_id: str
    store_id: str
    subscription_id: str
    kind: str
    resource: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "store_id": self.store_id,
            "subscription_id": self.subscription_id,
            "kind": self.kind,
            "resource": self.resource,
        }


@dataclass
class Outcome:
    accepted: list[Accepted]
    drops: dict[str, int]


def parse_batch(body: bytes) -> list[dict[str, Any]]:
    """The items of a ``{"value": [...]}`` body; BadBatch otherwise."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadBatch(f"the body is not JSON: {exc}") from None
    items = document.get("value") if isinstance(document, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadBatch('the body must be {"value": [notification objects]}')
    return items


def judge(items: list[dict[str, Any]], known: dict[str, dict[str, Any]], field: str) -> Outcome:
    """Which items are ours and genuine. ``known``: stored subscriptions by id; ``field``:
    ``changeType`` (a change) or ``lifecycleEvent``."""
    allowed = CHANGE_TYPES if field == "changeType" else LIFECYCLE_EVENTS
    outcome = Outcome([], defaultdict(int))
    for item in items:
        subscription = known.get(str(item.get("subscriptionId")))
        kind = item.get(field)
        if subscription is None:
            outcome.drops["unknown_subscription"] += 1
        elif not matches(item.get("clientState"), subscription["client_state_sha256"]):
            outcome.drops["client_state"] += 1
        elif kind not in allowed:
            outcome.drops["malformed"] += 1
        else:
            resource = item.get("resource")
            outcome.accepted.append(
                Accepted(
                    business_id=str(subscription["business_id"]),
                    store_id=str(subscription["store_id"]),
                    subscription_id=str(subscription["id"]),
                    kind=str(kind),
                    resource=resource if isinstance(resource, str) else None,
                )
            )
    return outcome


class Recorder:
    """The receiver's database side: look the subscriptions up, write the outbox, count
    the drops. Called from a thread of Starlette's pool (psycopg here is synchronous)."""

    def __init__(self, db: Database, on_recorded: Callable[[], None] | None = None) -> None:
        self.db = db
        self.on_recorded = on_recorded  # wakes an in-process relay

    def record(self, items: list[dict[str, Any]], field: str) -> Outcome:
        ids = sorted({str(i.get("subscriptionId")) for i in items})
        known = {str(r["id"]): r for r in self.db.all("notification_subscriptions", ids=ids)}
        outcome = judge(items, known, field)
        by_business: dict[str, list[Accepted]] = defaultdict(list)
        for accepted in outcome.accepted:
            by_business[accepted.business_id].append(accepted)
        for business_id, accepted_items in by_business.items():
            self.db.one(
                "record_notifications",
                business_id,
                business_id=business_id,
                items=[a.as_json() for a in accepted_items],
            )
        for reason, count in outcome.drops.items():
            self.db.one("count_notification_drops", reason=reason, count=count)
            log.warning("dropped %s notification(s): %s", count, reason)
        if outcome.accepted and self.on_recorded is not None:
            self.on_recorded()
        return outcome


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is over ``limit`` bytes (read no further than that)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for part in request.stream():
        body.extend(part)
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(
    db: Database,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    on_recorded: Callable[[], None] | None = None,
) -> Starlette:
    """The receiver, writing through ``db`` (a worker pool: RLS applies)."""
    recorder = Recorder(db, on_recorded)
    lock = threading.Lock()
    counts = {"accepted": 0, "dropped": 0, "failed": 0}

    def endpoint(field: str) -> Callable[[Request], Any]:
        async def receive(request: Request) -> Response:
            token = request.query_params.get("validationToken")
            if token is not None:  # the handshake: the token as given, decoded, plain text
                return PlainTextResponse(token, status_code=200)
            body = await _read_body(request, max_body_bytes)
            if body is None:
                return PlainTextResponse("body too large", status_code=413)
            try:
                items = parse_batch(body)
                outcome = await run_in_threadpool(recorder.record, items, field)
            except BadBatch as exc:
                return PlainTextResponse(str(exc), status_code=400)
            except MailsyncError as exc:  # not written: Graph must send it again
                log.error("notifications not recorded: %s", exc)
                with lock:
                    counts["failed"] += 1
                return PlainTextResponse("not recorded, retry", status_code=503)
            with lock:
                counts["accepted"] += len(outcome.accepted)
                counts["dropped"] += sum(outcome.drops.values())
            return Response(status_code=202)

        return receive

    async def health(request: Request) -> Response:
        with lock:
            return PlainTextResponse(json.dumps(counts), media_type="application/json")

    app = Starlette(
        routes=[
            Route(NOTIFICATIONS_PATH, endpoint("changeType"), methods=["POST"]),
            Route(LIFECYCLE_PATH, endpoint("lifecycleEvent"), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    app.state.counts = counts
    return app
