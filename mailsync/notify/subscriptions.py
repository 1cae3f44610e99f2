"""One Graph subscription per registered, enabled mailbox: created, renewed, re-created,
deleted and reconciled (``mailsync subscriptions sync``, the ``subscriptions/hourly``
deployment).

What peers got wrong decides the rules (research/change-notifications.md §2):

- Renew (PATCH) when under ``RENEW_WITHIN`` (24 h) remain, run hourly: a missed hour or
  two still leaves a day. Alga PSA's subscriptions lapsed silently because nothing renewed.
- A renewal answered 404 means Graph deleted it (expired, removed): re-create it at once
  and sync the mailbox, since changes in the gap were never announced (Twenty waited for
  the next cron, Mail-Otter retried forever).
- A mailbox removed or paused loses its subscription; ``GET /subscriptions`` (the app's own,
  all tenants' users) is compared with what we store, and those pointing at our receiver
  that we do not know are deleted (a crash between Graph's 201 and our insert leaves one).
- The clientState is random per subscription and kept hashed (``mailsync.notify.secrets``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from mailsync.errors import ConfigError, GraphError, NotFoundError
from mailsync.graph.client import GraphClient
from mailsync.notify import secrets
from mailsync.notify.receiver import LIFECYCLE_PATH, NOTIFICATIONS_PATH
from mailsync.store.db import Database, Row

log = logging.getLogger("mailsync.notify.subscriptions")

LIFETIME = timedelta(minutes=10_080 - 60)  # Graph's most for messages, less an hour's slack
RENEW_WITHIN = timedelta(hours=24)
CHANGE_TYPE = "created,updated,deleted"


def public_url_from_env() -> str | None:
    """MAILSYNC_NOTIFICATION_URL: the receiver's public base URL, as Graph must reach it."""
    return os.environ.get("MAILSYNC_NOTIFICATION_URL") or None


def receiver_urls(public_url: str | None) -> tuple[str, str]:
    """The notificationUrl and lifecycleNotificationUrl for the receiver's public base URL
    (MAILSYNC_NOTIFICATION_URL). Graph delivers over HTTPS only; plain http is accepted for
    a loopback host (the simulator and tests)."""
    if not public_url:
        raise ConfigError(
            "set MAILSYNC_NOTIFICATION_URL to the public HTTPS URL of `mailsync notifications "
            "serve` (behind your reverse proxy; see docs/notifications.md)"
        )
    parts = urlsplit(public_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"MAILSYNC_NOTIFICATION_URL {public_url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ConfigError(
            f"MAILSYNC_NOTIFICATION_URL {public_url!r}: Graph delivers to https URLs only "
            "(plain http is accepted for a loopback host, for the simulator)"
        )
    if parts.query or parts.fragment:
        raise ConfigError("MAILSYNC_NOTIFICATION_URL must not carry a query or a fragment")
    base = public_url.rstrip("/")
    return base + NOTIFICATIONS_PATH, base + LIFECYCLE_PATH


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class SyncReport:
    """What one ``subscriptions sync`` did, per action: the mailboxes."""

    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)  # renewal said 404: these need a sync
    deleted: list[str] = field(default_factory=list)
    orphans_deleted: list[str] = field(default_factory=list)  # subscription ids
    kept: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "renewed": self.renewed,
            "recreated": self.recreated,
            "deleted": self.deleted,
            "orphans_deleted": self.orphans_deleted,
            "kept": self.kept,
            "failed": self.failed,
        }


class SubscriptionManager:
    """Graph's subscriptions of one business, and their rows (as that tenant)."""

    def __init__(
        self, db: Database, graph: GraphClient, business_id: str, public_url: str | None
    ) -> None:
        self.db = db
        self.graph = graph
        self.business_id = business_id
        self.notification_url, self.lifecycle_url = receiver_urls(public_url)

    # -- Graph requests

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.graph.base_url}/v1.0/{path}"
        self.graph.api_calls += 1
        try:
            answer = self.graph.http.request(
                method, url, json=body, headers={"Prefer": 'IdType="ImmutableId"'}
            )
        except httpx.HTTPError as exc:
            raise GraphError(f"Graph unreachable: {type(exc).__name__}: {exc}") from None
        if answer.status_code == 404:
            raise NotFoundError(f"Graph answered 404 for {method} {path}", status=404)
        if answer.status_code >= 400:
            raise GraphError(
                f"Graph answered {answer.status_code} for {method} {path}: {answer.text[:300]}",
                status=answer.status_code,
            )
        return answer.json() if answer.content else None

    # -- one mailbox

    def create(self, store_id: str, mailbox: str) -> Row:
        """A new subscription for the mailbox, replacing its stored one."""
        client_state = secrets.new_client_state()
        expires = datetime.now(UTC) + LIFETIME
        resource = f"users/{quote(mailbox, safe='@')}/messages"
        created = self._request(
            "POST",
            "subscriptions",
            {
                "changeType": CHANGE_TYPE,
                "notificationUrl": self.notification_url,
                "lifecycleNotificationUrl": self.lifecycle_url,
                "resource": resource,
                "expirationDateTime": expires.isoformat().replace("+00:00", "Z"),
                "clientState": client_state,
            },
        )
        with self.db.transaction(self.business_id) as session:
            session.execute(
                "forget_store_subscription",
                id=created["id"],
                business_id=self.business_id,
                store_id=store_id,
            )
            row = session.one(
                "save_subscription",
                id=created["id"],
                business_id=self.business_id,
                store_id=store_id,
                resource=resource,
                client_state_sha256=secrets.digest(client_state),
                notification_url=self.notification_url,
                expires_at=_graph_time(created["expirationDateTime"]),
            )
        assert row is not None
        return row

    def renew(self, subscription_id: str) -> Row | None:
        """The renewed row; None when Graph no longer has the subscription (404)."""
        expires = datetime.now(UTC) + LIFETIME
        try:
            renewed = self._request(
                "PATCH",
                f"subscriptions/{subscription_id}",
                {"expirationDateTime": expires.isoformat().replace("+00:00", "Z")},
            )
        except NotFoundError:
            self.db.one(
                "delete_subscription",
                self.business_id,
                id=subscription_id,
                business_id=self.business_id,
            )
            return None
        return self.db.one(
            "renew_subscription",
            self.business_id,
            id=subscription_id,
            business_id=self.business_id,
            expires_at=_graph_time(renewed["expirationDateTime"]),
        )

    def delete(self, subscription_id: str) -> None:
        try:
            self._request("DELETE", f"subscriptions/{subscription_id}")
        except NotFoundError:
            pass  # gone already: what we wanted
        self.db.one(
            "delete_subscription",
            self.business_id,
            id=subscription_id,
            business_id=self.business_id,
        )

    def recreate_for_store(self, store_id: str) -> Row | None:
        """After ``subscriptionRemoved``: a new subscription for the store, if it still
        wants one (registered, enabled)."""
        for row in self.db.all("subscription_plan", self.business_id, business_id=self.business_id):
            if str(row["store_id"]) == store_id and row["wanted"]:
                return self.create(store_id, row["mailbox"])
        return None

    def reauthorize(self, subscription_id: str) -> None:
        try:
            self._request("POST", f"subscriptions/{subscription_id}/reauthorize")
        except NotFoundError:
            self.db.one(
                "delete_subscription",
                self.business_id,
                id=subscription_id,
                business_id=self.business_id,
            )

    # -- every mailbox

    def sync(self, now: datetime | None = None) -> SyncReport:
        """Bring Graph and the table in line with the registry (see the module's rules)."""
        now = now or datetime.now(UTC)
        report = SyncReport()
        for row in self.db.all("subscription_plan", self.business_id, business_id=self.business_id):
            mailbox, store_id = row["mailbox"], str(row["store_id"])
            try:
                self._sync_one(row, store_id, mailbox, now, report)
            except GraphError as exc:
                report.failed[mailbox] = str(exc)
                log.warning("subscription of %s: %s", mailbox, exc)
        try:
            self._delete_orphans(report)
        except GraphError as exc:
            report.failed["GET /subscriptions"] = str(exc)
        return report

    def _sync_one(
        self, row: Row, store_id: str, mailbox: str, now: datetime, report: SyncReport
    ) -> None:
        subscription_id = row["subscription_id"]
        if not row["wanted"]:
            self.delete(subscription_id)
            report.deleted.append(mailbox)
        elif subscription_id is None:
            self.create(store_id, mailbox)
            report.created.append(mailbox)
        elif row["notification_url"] != self.notification_url:  # the receiver moved
            self.delete(subscription_id)
            self._recreate(store_id, mailbox, report)
        elif row["expires_at"] - now < RENEW_WITHIN:
            if self.renew(subscription_id) is None:
                self._recreate(store_id, mailbox, report)
            else:
                report.renewed.append(mailbox)
        else:
            report.kept.append(mailbox)

    def _recreate(self, store_id: str, mailbox: str, report: SyncReport) -> None:
        """A new subscription at once, and a sync of the mailbox through the relay: what
        changed while it had none was never announced."""
        row = self.create(store_id, mailbox)
        self.db.one(
            "record_missed_for_store",
            self.business_id,
            business_id=self.business_id,
            store_id=store_id,
            subscription_id=row["id"],
        )
        report.recreated.append(mailbox)

    def _delete_orphans(self, report: SyncReport) -> None:
        """Subscriptions Graph has for our receiver that no row of ours names."""
        listed = self._request("GET", "subscriptions") or {}
        candidates = [
            str(item["id"])
            for item in listed.get("value", [])
            if item.get("notificationUrl") == self.notification_url
        ]
        # Any business's row counts: GET /subscriptions lists the app's subscriptions for
        # every tenant's users, and another business's are not ours to delete.
        known = {r["id"] for r in self.db.all("notification_subscriptions", ids=candidates)}
        for item in [{"id": c} for c in candidates]:
            if item["id"] not in known:
                try:
                    self._request("DELETE", f"subscriptions/{item['id']}")
                except NotFoundError:
                    continue
                report.orphans_deleted.append(item["id"])


def _graph_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
