"""``/v1.0/subscriptions``: Graph change notifications for messages, simulated.

What Graph does, and so what this does (research/change-notifications.md §1.3-1.8):

- ``POST /subscriptions`` with ``resource: users/{id}/messages``, ``changeType``,
  ``notificationUrl``, ``lifecycleNotificationUrl``, ``clientState`` and an
  ``expirationDateTime`` no later than 10,080 minutes ahead. Before answering 201 it
  validates each URL: ``POST url?validationToken=…``, which must answer 200 ``text/plain``
  with the token, within 10 s; otherwise the subscription is refused (400).
- ``GET /subscriptions`` (without clientState), ``GET|PATCH|DELETE /subscriptions/{id}``,
  ``POST /subscriptions/{id}/reauthorize``. A subscription past its expiry is gone: 404.
- Every change of a subscribed mailbox's messages is POSTed to the notificationUrl from a
  background thread, a few at a time in one ``{"value": [...]}``. A delivery answered
  non-2xx, or not within ``reply_timeout_s`` (3 s), is retried, up to ``max_attempts``
  times, ``retry_delay_s`` apart. ``duplicate_every = N`` sends every Nth notification twice.
- ``lifecycle(id, event)`` (or ``POST /_sim/subscriptions/{id}/lifecycle``) sends
  ``missed``, ``subscriptionRemoved`` (the subscription is then gone) or
  ``reauthorizationRequired`` to the lifecycleNotificationUrl.

``wait_idle`` returns once nothing is queued or in flight: tests wait on that event, not on
time.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from mailsync.simulator.changelog import Change
from mailsync.simulator.wire import GraphFailure, Request, Response, bad_request, json_response

MAX_MINUTES = 10_080  # Outlook messages, basic notifications
MIN_MINUTES = 45  # an earlier expiry is raised to this
CHANGE_TYPES = ("created", "updated", "deleted")
LIFECYCLE_EVENTS = ("missed", "subscriptionRemoved", "reauthorizationRequired")
TENANT_ID = "00000000-0000-0000-0000-00000000c0de"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise bad_request("expirationDateTime is required.")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"expirationDateTime {value!r} is not a date and time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class Subscription:
    id: str
    resource: str
    user_id: str
    change_types: tuple[str, ...]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime

    def as_json(self, *, with_client_state: bool) -> dict[str, Any]:
        out = {
            "id": self.id,
            "resource": self.resource,
            "changeType": ",".join(self.change_types),
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _iso(self.expires),
            "applicationId": "mailsync-simulator",
        }
        if with_client_state:
            out["clientState"] = self.client_state
        return out


@dataclass(order=True)
class _Delivery:
    due: float
    order: int
    url: str = field(compare=False)
    items: list[dict[str, Any]] = field(compare=False)
    attempt: int = field(default=1, compare=False)


class Subscriptions:
    def __init__(self, find_user: Callable[[str], str | None]) -> None:
        self._find_user = find_user  # a user id for a UPN or id; None: no mailbox
        self._subscriptions: dict[str, Subscription] = {}
        self._lock = threading.Condition()
        self._queue: list[_Delivery] = []  # a heap by due time
        self._order = itertools.count()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._http = httpx.Client(timeout=10.0)
        # Switches, as faults are: set them at run time.
        self.duplicate_every = 0  # every Nth notification twice (0: never)
        self.max_attempts = 5
        self.retry_delay_s = 0.5
        self.reply_timeout_s = 3.0
        self.max_batch = 50
        # Counters
        self.notifications = 0  # items generated (duplicates included)
        self.deliveries = 0  # POSTs answered 2xx in time
        self.failed_attempts = 0  # POSTs answered otherwise (retried while attempts remain)
        self.abandoned = 0  # items given up after max_attempts
        self.validations = 0

    # -- lifecycle of the delivery thread

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stopping = False
                if self._http.is_closed:  # started again after a stop
                    self._http = httpx.Client(timeout=10.0)
                self._thread = threading.Thread(
                    target=self._deliver_forever, name="graph-notifications", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        self._http.close()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once nothing is queued or being delivered (False after ``timeout``)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._queue and not self._in_flight, timeout)

    # -- the API

    def route(self, request: Request, segments: list[str]) -> Response:
        """``segments``: the path after ``/v1.0/subscriptions``."""
        method = request.method
        if not segments:
            if method == "POST":
                return self._create(request)
            if method == "GET":
                live = self._live()
                return json_response(
                    200, {"value": [s.as_json(with_client_state=False) for s in live]}
                )
        elif len(segments) == 1:
            subscription = self._get(segments[0])
            if method == "GET":
                return json_response(200, subscription.as_json(with_client_state=False))
            if method == "PATCH":
                return self._renew(subscription, request)
            if method == "DELETE":
                with self._lock:
                    self._subscriptions.pop(subscription.id, None)
                return Response(204, b"")
        elif segments[1:] == ["reauthorize"] and method == "POST":
            self._get(segments[0])
            return Response(204, b"")
        raise GraphFailure(405, "Request_BadRequest", f"{method} is not simulated here.")

    def _create(self, request: Request) -> Response:
        body = self._json(request)
        resource = str(body.get("resource") or "")
        parts = [p for p in resource.split("/") if p]
        if len(parts) != 3 or parts[0].lower() != "users" or parts[2].lower() != "messages":
            raise bad_request(f"Unsupported resource {resource!r}: users/{{id}}/messages only.")
        user_id = self._find_user(parts[1])
        if user_id is None:
            raise GraphFailure(404, "ResourceNotFound", f"User {parts[1]!r} not found.")
        change_types = tuple(c.strip() for c in str(body.get("changeType") or "").split(","))
        if not change_types or any(c not in CHANGE_TYPES for c in change_types):
            raise bad_request(f"changeType must be among {CHANGE_TYPES}.")
        client_state = body.get("clientState")
        if client_state is not None and (
            not isinstance(client_state, str) or len(client_state) > 128
        ):
            raise bad_request("clientState must be a string of at most 128 characters.")
        url = body.get("notificationUrl")
        lifecycle = body.get("lifecycleNotificationUrl")
        if not isinstance(url, str) or not url:
            raise bad_request("notificationUrl is required.")
        if lifecycle is not None and not isinstance(lifecycle, str):
            raise bad_request("lifecycleNotificationUrl must be a URL.")
        expires = self._expiry(body.get("expirationDateTime"))
        for target in dict.fromkeys(u for u in (url, lifecycle) if u):
            self._validate(target)
        subscription = Subscription(
            id=str(uuid.uuid4()),
            resource=resource,
            user_id=user_id,
            change_types=change_types,
            notification_url=url,
            lifecycle_url=lifecycle,
            client_state=client_state,
            expires=expires,
        )
        with self._lock:
            self._subscriptions[subscription.id] = subscription
        return json_response(201, subscription.as_json(with_client_state=True))

    def _renew(self, subscription: Subscription, request: Request) -> Response:
        body = self._json(request)
        subscription.expires = self._expiry(body.get("expirationDateTime"))
        return json_response(200, subscription.as_json(with_client_state=False))

    @staticmethod
    def _json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise bad_request("The body is not JSON.") from None
        if not isinstance(body, dict):
            raise bad_request("The body must be a JSON object.")
        return body

    @staticmethod
    def _expiry(value: Any) -> datetime:
        expires = _parse_time(value)
        now = datetime.now(UTC)
        if expires > now + timedelta(minutes=MAX_MINUTES):
            raise bad_request(
                f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.",
                "ExtensionError",
            )
        return max(expires, now + timedelta(minutes=MIN_MINUTES))

    def _validate(self, url: str) -> None:
        """Graph's handshake; the subscription is refused unless it succeeds."""
        token = f"Validation: Testing client application reachability {uuid.uuid4()} +&="
        self.validations += 1
        try:
            answer = self._http.post(
                url,
                params={"validationToken": token},
                headers={"Content-Type": "text/plain"},
                timeout=10.0,
            )
        except httpx.HTTPError as exc:
            raise bad_request(
                f"Subscription validation request failed. Notification endpoint must respond "
                f"with 200 OK to validation request: {type(exc).__name__}",
                "ValidationError",
            ) from None
        text_plain = answer.headers.get("content-type", "").startswith("text/plain")
        if answer.status_code != 200 or not text_plain or answer.text != token:
            raise bad_request(
                "Subscription validation request failed. Notification endpoint must respond "
                f"with 200 OK to validation request (got {answer.status_code}).",
                "ValidationError",
            )

    def _get(self, subscription_id: str) -> Subscription:
        for subscription in self._live():
            if subscription.id == subscription_id:
                return subscription
        raise GraphFailure(404, "ResourceNotFound", "The object was not found.")

    def _live(self) -> list[Subscription]:
        """The subscriptions not expired; expired ones are deleted, as Graph does."""
        now = datetime.now(UTC)
        with self._lock:
            for expired in [s for s in self._subscriptions.values() if s.expires <= now]:
                del self._subscriptions[expired.id]
            return list(self._subscriptions.values())

    # -- test controls

    def all(self) -> list[Subscription]:
        return self._live()

    def describe(self) -> dict[str, Any]:
        """The live subscriptions and the counters (the admin API's view)."""
        return {
            "value": [s.as_json(with_client_state=False) for s in self._live()],
            "notifications": self.notifications,
            "deliveries": self.deliveries,
            "failed_attempts": self.failed_attempts,
            "abandoned": self.abandoned,
            "validations": self.validations,
            "duplicate_every": self.duplicate_every,
            "max_attempts": self.max_attempts,
            "retry_delay_s": self.retry_delay_s,
        }

    def configure(self, changes: dict[str, Any]) -> None:
        """Set delivery switches from JSON; ValueError on an unknown or bad one."""
        kinds: dict[str, type] = {
            "duplicate_every": int,
            "max_attempts": int,
            "retry_delay_s": float,
        }
        for name, value in changes.items():
            if name not in kinds:
                raise ValueError(f"unknown notification switch {name!r}; known: {sorted(kinds)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
            setattr(self, name, kinds[name](value))

    def expire(self, subscription_id: str) -> None:
        """Let the subscription run out now (as one nobody renewed)."""
        with self._lock:
            self._subscriptions[subscription_id].expires = datetime.now(UTC)

    def set_expiry(self, subscription_id: str, expires: datetime) -> None:
        with self._lock:
            self._subscriptions[subscription_id].expires = expires

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """Send a lifecycle event; ``subscriptionRemoved`` also removes the subscription."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"lifecycle event must be one of {LIFECYCLE_EVENTS}")
        subscription = self._get(subscription_id)
        if event == "subscriptionRemoved":
            with self._lock:
                self._subscriptions.pop(subscription_id, None)
        item = {
            "subscriptionId": subscription.id,
            "subscriptionExpirationDateTime": _iso(subscription.expires),
            "tenantId": TENANT_ID,
            "clientState": subscription.client_state,
            "lifecycleEvent": event,
        }
        self._enqueue(subscription.lifecycle_url or subscription.notification_url, [item])

    # -- notifications

    def changed(self, user_id: str, change: Change) -> None:
        """A ChangeLog listener: called under the mailbox's lock, so it only queues."""
        kind = (
            "created" if change.before is None else "deleted" if change.after is None else "updated"
        )
        with self._lock:
            targets = [
                s
                for s in self._subscriptions.values()
                if s.user_id == user_id and kind in s.change_types
            ]
        for subscription in targets:
            item = {
                "subscriptionId": subscription.id,
                "subscriptionExpirationDateTime": _iso(subscription.expires),
                "changeType": kind,
                "resource": f"Users/{user_id}/Messages/{change.message_id}",
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": f"Users/{user_id}/Messages/{change.message_id}",
                    "id": change.message_id,
                },
                "clientState": subscription.client_state,
                "tenantId": TENANT_ID,
            }
            self._enqueue(subscription.notification_url, [item])

    def _enqueue(self, url: str, items: list[dict[str, Any]]) -> None:
        with self._lock:
            for item in items:
                self.notifications += 1
                copies = (
                    2
                    if self.duplicate_every and self.notifications % self.duplicate_every == 0
                    else 1
                )
                for _ in range(copies):
                    heapq.heappush(
                        self._queue, _Delivery(time.monotonic(), next(self._order), url, [item])
                    )
            self._lock.notify_all()

    def _next_batch(self) -> _Delivery | None:
        """The next due delivery, merged with the other due ones for its URL; None: stop."""
        with self._lock:
            while True:
                if self._stopping:
                    return None
                if self._queue and self._queue[0].due <= time.monotonic():
                    first = heapq.heappop(self._queue)
                    rest = [
                        d
                        for d in self._queue
                        if d.url == first.url
                        and d.due <= time.monotonic()
                        and d.attempt == first.attempt
                    ]
                    rest = rest[: self.max_batch - 1]
                    for d in rest:
                        self._queue.remove(d)
                        first.items.extend(d.items)
                    heapq.heapify(self._queue)
                    self._in_flight += 1
                    return first
                wait = self._queue[0].due - time.monotonic() if self._queue else None
                self._lock.wait(wait)

    def _deliver_forever(self) -> None:
        while (delivery := self._next_batch()) is not None:
            ok = self._post(delivery)
            with self._lock:
                self._in_flight -= 1
                if ok:
                    self.deliveries += 1
                else:
                    self.failed_attempts += 1
                    if delivery.attempt < self.max_attempts:
                        delivery.attempt += 1
                        delivery.due = time.monotonic() + self.retry_delay_s
                        delivery.order = next(self._order)
                        heapq.heappush(self._queue, delivery)
                    else:
                        self.abandoned += len(delivery.items)
                self._lock.notify_all()

    def _post(self, delivery: _Delivery) -> bool:
        try:
            answer = self._http.post(
                delivery.url, json={"value": delivery.items}, timeout=self.reply_timeout_s
            )
        except httpx.HTTPError:
            return False
        return 200 <= answer.status_code < 300
