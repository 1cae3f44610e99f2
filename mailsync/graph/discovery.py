"""Tenant discovery: the tenant's mailboxes, found through Graph (research notes §4).

1. List the users that have a mail address: ``GET /users?$filter=mail ne null`` with
   ``$count=true`` and ``ConsistencyLevel: eventual`` (``ne`` is an advanced query: Graph
   refuses it without both), following ``@odata.nextLink``. No filter on licences or on
   ``accountEnabled``: shared mailboxes usually have neither a licence nor an enabled
   account, and would vanish.
2. Probe each: ``GET /users/{id}/mailFolders/inbox``. A 404 (``MailboxNotEnabledForREST
   API``: no Exchange Online mailbox, or on-premises; ``ResourceNotFound``,
   ``ErrorItemNotFound``, ``ErrorInvalidUser``) means no mailbox to sync; a 403 means the
   app may not read it (an application access policy, or no ``Mail.Read``).

Listing users needs the application permission ``User.Read.All`` besides ``Mail.Read``; a
403 on the listing says so. Probes run a few at a time: each is one request to its own
mailbox, within that mailbox's limits (mailsync.graph.limits).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from mailsync.errors import NotFoundError, PermissionDeniedError
from mailsync.graph.client import GraphClient

USER_FIELDS = "id,userPrincipalName,mail,displayName,accountEnabled,userType"
PAGE_SIZE = 999  # users per page: Graph's maximum
PROBE_THREADS = 8
ADVANCED_QUERY_HEADERS = {"ConsistencyLevel": "eventual"}
NEEDS_USER_READ_ALL = (
    "listing the tenant's users needs the Microsoft Graph application permission "
    "User.Read.All (with admin consent), besides Mail.Read: add it to the app registration "
    "(API permissions), grant admin consent, and run discover again"
)


@dataclass(frozen=True)
class DirectoryUser:
    user_id: str
    upn: str
    mail: str | None
    display_name: str | None
    account_enabled: bool | None
    user_type: str | None

    @classmethod
    def of(cls, raw: dict[str, Any]) -> DirectoryUser:
        return cls(
            user_id=str(raw["id"]),
            upn=str(raw.get("userPrincipalName") or raw["id"]),
            mail=raw.get("mail"),
            display_name=raw.get("displayName"),
            account_enabled=raw.get("accountEnabled"),
            user_type=raw.get("userType"),
        )


@dataclass(frozen=True)
class Discovered:
    user: DirectoryUser
    has_mailbox: bool
    reason: str | None  # why not, when it has none

    def as_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.user.upn,
            **asdict(self.user),
            "has_mailbox": self.has_mailbox,
            "reason": self.reason,
        }


def list_users(graph: GraphClient, page_size: int = PAGE_SIZE) -> Iterator[DirectoryUser]:
    """Every user of the tenant with a mail address, page by page."""
    url: str | None = f"{graph.base_url}/v1.0/users"
    params: dict[str, str] | None = {
        "$filter": "mail ne null",
        "$count": "true",
        "$select": USER_FIELDS,
        "$top": str(page_size),
    }
    while url is not None:
        try:
            body = graph.get_json(url, params, headers=ADVANCED_QUERY_HEADERS)
        except PermissionDeniedError as exc:
            raise PermissionDeniedError(
                f"{NEEDS_USER_READ_ALL} (Graph answered: {exc})", status=exc.status, code=exc.code
            ) from None
        for raw in body.get("value") or []:
            if isinstance(raw, dict) and raw.get("id"):
                yield DirectoryUser.of(raw)
        url = graph.link(body)
        params = None  # a nextLink carries every option


def probe(graph: GraphClient, user: DirectoryUser) -> Discovered:
    """Whether the user has a mailbox mailsync can read."""
    try:
        graph.get_json(graph.folder_url(user.user_id, "inbox"), {"$select": "id"})
    except NotFoundError as exc:
        return Discovered(user, False, f"no mailbox ({exc.code or 404})")
    except PermissionDeniedError as exc:
        return Discovered(user, False, f"no access ({exc.code or 403})")
    return Discovered(user, True, None)


def discover(
    graph: GraphClient, *, page_size: int = PAGE_SIZE, threads: int = PROBE_THREADS
) -> list[Discovered]:
    """Every user with a mail address, each probed for a mailbox, by UPN."""
    users = sorted(list_users(graph, page_size), key=lambda u: u.upn.lower())
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda user: probe(graph, user), users))
