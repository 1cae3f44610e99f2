"""The relay: outbox rows become Prefect events, one per mailbox and burst.

Why a relay and not a Prefect call in the receiver: the receiver must answer within 3 s
whatever Prefect is doing, and an event lost between the receiver's insert and a failed
send would be a change nobody syncs. Here a row is marked relayed only after Prefect
accepted its event (``POST /api/events`` answered 2xx); a crash in between sends the same
event again, with the same id, which Prefect's triggers ignore (they skip ids seen in the
last ~30 min). The id is ``uuid5(store, first pending outbox id)``: stable until the rows
are marked.

Per mailbox, per pass:

- a job of the mailbox is active: wait. A sync started now would resume that job; the
  changes that came after it started need one more sync, after it: the rows stay pending
  and are sent once the job has ended (the next pass after it).
- ``subscriptionRemoved``: re-create the subscription first, then send (the sync catches up
  on the gap); ``reauthorizationRequired`` alone: reauthorize, nothing to sync;
  ``missed`` and changes: send.

The deployment trigger in prefect.yaml (``for_each`` business, ``within`` =
``schedule_after`` = the debounce) turns the events of many mailboxes into one run of
sync-changed, which reads which mailboxes changed from the outbox itself
(flows/sync_changed.py): an event says "look", not what to sync.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from mailsync.errors import MailsyncError
from mailsync.store.db import Database, Row

log = logging.getLogger("mailsync.notify.relay")

EVENT = "mailsync.mailbox.changed"
EVENT_NAMESPACE = uuid.UUID("5b0f3c1e-6a43-4f0e-9a53-2f6d7d5e0c24")  # mailsync's, fixed
POLL_S = 1.0  # a pass at least this often: jobs end without telling the relay
KEEP_DAYS = 7  # relayed outbox rows are deleted after this long
PRUNE_EVERY_S = 3600.0
# An event that started no job within this long is sent again (a new id), at most
# MAX_RESENDS times: a run Prefect failed to submit (seen: a 503 from a loaded server) would
# otherwise leave the changes to the hourly poll. Longer than a slow run's start (over a
# minute was seen on a loaded machine), so a resend rarely doubles a sync; a doubled one
# finds the job active (if_idle) or nothing new.
RESEND_AFTER_S = 300.0
MAX_RESENDS = 3


def resource_id(store_id: str) -> str:
    return f"mailsync.mailbox.{store_id}"


def event_id(store_id: str, first_outbox_id: int) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{store_id}:{first_outbox_id}"))


class Emitter(Protocol):
    def emit(self, events: list[dict[str, Any]]) -> None: ...


class PrefectEmitter:
    """Events to Prefect's API (``POST /api/events``), synchronously: an error raises, so the
    rows stay pending. (``prefect.events.emit_event`` queues and only logs a failure.)"""

    def __init__(self, api_url: str | None = None, timeout_s: float = 10.0) -> None:
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        url = api_url or settings.api.url
        if not url:
            raise MailsyncError("PREFECT_API_URL is not set: the relay sends events there")
        headers = {}
        if settings.api.key is not None:
            headers["Authorization"] = f"Bearer {settings.api.key.get_secret_value()}"
        auth: httpx.BasicAuth | None = None
        if settings.api.auth_string is not None:
            user, _, password = settings.api.auth_string.get_secret_value().partition(":")
            auth = httpx.BasicAuth(user, password)
        self.http = httpx.Client(
            base_url=url.rstrip("/") + "/", headers=headers, auth=auth, timeout=timeout_s
        )

    def emit(self, events: list[dict[str, Any]]) -> None:
        try:
            answer = self.http.post("events", json=events)
        except httpx.HTTPError as exc:
            raise MailsyncError(f"Prefect unreachable: {type(exc).__name__}: {exc}") from None
        if answer.status_code >= 300:
            raise MailsyncError(f"Prefect refused events: {answer.status_code} {answer.text}")

    def close(self) -> None:
        self.http.close()


class Lifecycle(Protocol):
    """What the relay needs of the subscriptions (``SubscriptionManager``)."""

    def recreate_for_store(self, store_id: str) -> Row | None: ...

    def reauthorize(self, subscription_id: str) -> None: ...


@dataclass
class Sent:
    business_id: str
    store_id: str
    mailbox: str
    event_id: str
    notifications: int


@dataclass
class _Awaiting:
    """An event sent for a mailbox, until a job of it opens."""

    sent: Sent
    event: dict[str, Any]
    first_sent_at: datetime
    sent_at: datetime = field(init=False)
    resends: int = 0

    def __post_init__(self) -> None:
        self.sent_at = self.first_sent_at


def mailbox_event(business_id: str, row: Row) -> dict[str, Any]:
    store_id = str(row["store_id"])
    return {
        "id": event_id(store_id, int(row["first_id"])),
        "occurred": datetime.now(UTC).isoformat(),
        "event": EVENT,
        "resource": {
            "prefect.resource.id": resource_id(store_id),
            "prefect.resource.name": row["mailbox"],
            "mailsync.mailbox": row["mailbox"],
            "mailsync.folder": row["folder"] or "all",  # the registered folder, or every one
            "mailsync.business": business_id,
        },
        "payload": {
            "notifications": int(row["notifications"]),
            "kinds": sorted(row["kinds"]),
            "first_received_at": row["first_received_at"].isoformat(),
        },
    }


class Relay:
    def __init__(
        self,
        db: Database,
        emitter: Emitter,
        lifecycle: Callable[[str], Lifecycle] | None = None,
        resend_after_s: float = RESEND_AFTER_S,
    ) -> None:
        self.db = db
        self.resend_after_s = resend_after_s
        self._awaiting: dict[str, _Awaiting] = {}  # store -> its last event, until a job opens
        self.emitter = emitter
        self.lifecycle = lifecycle  # a business's subscriptions (Graph calls); None: no Graph
        self.wake = threading.Event()
        self.sent: list[Sent] = []  # what this relay sent, for the bench and the tests
        self._pruned_at: dict[str, float] = {}  # business -> monotonic time of its last prune

    def run_once(self) -> list[Sent]:
        """One pass over every business with pending notifications."""
        sent: list[Sent] = []
        for row in self.db.all("notification_pending_businesses"):
            sent.extend(self.relay_business(str(row["business_id"])))
        sent.extend(self._resend_lost())
        return sent

    def relay_business(self, business_id: str) -> list[Sent]:
        self._prune(business_id)
        sent = []
        for row in self.db.all("pending_notifications", business_id, business_id=business_id):
            if row["busy"]:
                continue  # after the active job ends
            if self._handle_lifecycle(business_id, row):
                event = mailbox_event(business_id, row)
                self.emitter.emit([event])
                item = Sent(
                    business_id,
                    str(row["store_id"]),
                    row["mailbox"],
                    event["id"],
                    int(row["notifications"]),
                )
                sent.append(item)
                self._awaiting[item.store_id] = _Awaiting(item, event, datetime.now(UTC))
            self.db.one(
                "mark_relayed",
                business_id,
                business_id=business_id,
                store_id=row["store_id"],
                last_id=row["last_id"],
            )
        self.sent.extend(sent)
        return sent

    def _resend_lost(self) -> list[Sent]:
        """Events older than resend_after_s whose mailbox opened no job since: sent again."""
        resent = []
        now = datetime.now(UTC)
        for store_id, awaiting in list(self._awaiting.items()):
            if (now - awaiting.sent_at).total_seconds() < self.resend_after_s:
                continue
            business_id = awaiting.sent.business_id
            row = self.db.one(
                "store_job_since",
                business_id,
                business_id=business_id,
                store_id=store_id,
                since=awaiting.first_sent_at,
            )
            if (row and row["started"]) or awaiting.resends >= MAX_RESENDS:
                if not (row and row["started"]):
                    log.error(
                        "no sync of %s started after %s events",
                        awaiting.sent.mailbox,
                        awaiting.resends + 1,
                    )
                del self._awaiting[store_id]
                continue
            awaiting.resends += 1
            event = {
                **awaiting.event,
                "id": str(
                    uuid.uuid5(EVENT_NAMESPACE, f"{awaiting.event['id']}:resend:{awaiting.resends}")
                ),
            }
            self.emitter.emit([event])
            awaiting.sent_at = now
            log.warning("no sync of %s started: event sent again", awaiting.sent.mailbox)
            resent.append(
                Sent(
                    business_id,
                    store_id,
                    awaiting.sent.mailbox,
                    event["id"],
                    awaiting.sent.notifications,
                )
            )
        self.sent.extend(resent)
        return resent

    def _prune(self, business_id: str) -> None:
        """Relayed rows past KEEP_DAYS, at most once an hour per business."""
        now = time.monotonic()
        last = self._pruned_at.get(business_id)
        if last is None or now - last >= PRUNE_EVERY_S:
            self.db.one(
                "prune_relayed_notifications",
                business_id,
                business_id=business_id,
                keep_days=KEEP_DAYS,
            )
            self._pruned_at[business_id] = now

    def _handle_lifecycle(self, business_id: str, row: Row) -> bool:
        """Lifecycle work before the event; whether the mailbox needs a sync."""
        kinds = set(row["kinds"])
        store_id = str(row["store_id"])
        if kinds & {"subscriptionRemoved", "reauthorizationRequired"} and self.lifecycle is None:
            log.warning("lifecycle event for %s, but the relay has no Graph access", row["mailbox"])
        elif self.lifecycle is not None:
            manager = self.lifecycle(business_id)
            if "subscriptionRemoved" in kinds:
                manager.recreate_for_store(store_id)
            elif "reauthorizationRequired" in kinds:
                current = self.db.one(
                    "subscription_of_store",
                    business_id,
                    business_id=business_id,
                    store_id=store_id,
                )
                if current is not None:
                    manager.reauthorize(current["id"])
        return bool(kinds - {"reauthorizationRequired"})

    def run_forever(self, stop: threading.Event, poll_s: float = POLL_S) -> None:
        """Passes until ``stop``: at once when ``wake`` is set (the receiver wrote rows),
        else every ``poll_s``. A failed pass (Prefect or Postgres down) is logged and
        retried: its rows are still pending."""
        while not stop.is_set():
            self.wake.clear()
            try:
                self.run_once()
            except MailsyncError as exc:
                log.error("relay pass failed (the rows stay pending): %s", exc)
            self.wake.wait(poll_s)
