"""Flow: keep one Graph change-notification subscription per registered mailbox.

create the missing ones → renew those under 24 h from expiry (a 404: re-create, and the
mailbox synced through the relay) → delete those of removed or paused mailboxes → delete
Graph's subscriptions for our receiver that we do not know (mailsync.notify.subscriptions).
Deployed as ``subscriptions/hourly``; ``mailsync subscriptions sync`` runs the same here.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from mailsync import validate
from mailsync.notify.subscriptions import SubscriptionManager, public_url_from_env
from mailsync.runtime import get_runtime
from mailsync.sync.jobs import default_business_id


@flow(name="subscriptions", log_prints=False)
def sync_subscriptions(
    business_id: str | None = None, notification_url: str | None = None
) -> dict[str, Any]:
    """Bring the business's subscriptions in line with its registry (default business: the
    one of MAILSYNC_TENANT_ID; receiver: MAILSYNC_NOTIFICATION_URL). Returns what it did."""
    runtime = get_runtime()
    business = str(
        validate.business_id(business_id or default_business_id(runtime.settings.tenant_id))
    )
    manager = SubscriptionManager(
        runtime.db, runtime.graph(), business, notification_url or public_url_from_env()
    )
    report = manager.sync().as_json()
    get_run_logger().info("subscriptions: %s", {k: len(v) for k, v in report.items()})
    return {"business_id": business, **report}
