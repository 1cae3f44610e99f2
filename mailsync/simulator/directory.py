"""The tenant's directory: ``GET /v1.0/users``, as tenant discovery meets it.

Every simulated mailbox is a user with a mailbox (``mail`` = its UPN, enabled, a member).
Beside them, ``Directory`` holds what a real tenant also has (research notes §4):

- ``mark_shared(upn)``: a mailbox that is a shared mailbox, so its account is disabled
  (a filter on ``accountEnabled`` or on licences would hide it);
- ``add_user(upn, mail=…)``: a user without an Exchange Online mailbox; with ``mail`` set
  the listing shows it, and its mailbox answers 404 ``MailboxNotEnabledForRESTAPI``; with
  ``mail=None`` the ``mail ne null`` filter leaves it out;
- ``forbidden = True``: the app lacks ``User.Read.All``, so listing users is a 403.

The listing behaves as Graph's does where a client can get it wrong: ``$filter=mail ne
null`` is an advanced query, refused (400) without both ``ConsistencyLevel: eventual`` and
``$count=true``; pages hold ``$top`` users (default 100, at most 999) and continue through
an ``@odata.nextLink`` with an opaque ``$skiptoken``; without ``$select`` only the default
properties come back (``accountEnabled`` and ``userType`` are not among them).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from mailsync.simulator.generator import user_id_for
from mailsync.simulator.store import Mailbox
from mailsync.simulator.wire import GraphFailure, Request, Response, bad_request, json_response

DEFAULT_TOP = 100
MAX_TOP = 999
DEFAULT_PROPERTIES = ("id", "displayName", "mail", "userPrincipalName")
PROPERTIES = {name.lower(): name for name in (*DEFAULT_PROPERTIES, "accountEnabled", "userType")}
_OPTIONS = {"$filter", "$count", "$select", "$top", "$skiptoken"}
_FILTERS = {"mail ne null": True, "mail eq null": False}  # the filter → keeps users with mail?


@dataclass(frozen=True)
class DirectoryUser:
    upn: str
    user_id: str
    mail: str | None
    display_name: str
    account_enabled: bool = True
    user_type: str = "Member"
    has_mailbox: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "displayName": self.display_name,
            "mail": self.mail,
            "userPrincipalName": self.upn,
            "accountEnabled": self.account_enabled,
            "userType": self.user_type,
        }


def _display_name(upn: str) -> str:
    return upn.split("@", 1)[0].replace(".", " ").title()


class Directory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._without_mailbox: dict[str, DirectoryUser] = {}  # by lower-cased UPN and by id
        self._shared: set[str] = set()  # lower-cased UPNs of shared mailboxes
        self.forbidden = False

    def add_user(
        self,
        upn: str,
        *,
        mail: str | None = "",
        user_type: str = "Member",
        account_enabled: bool = True,
    ) -> DirectoryUser:
        """A user without a mailbox (``mail`` defaults to the UPN; None: no mail address)."""
        user = DirectoryUser(
            upn=upn,
            user_id=user_id_for(upn),
            mail=upn if mail == "" else mail,
            display_name=_display_name(upn),
            account_enabled=account_enabled,
            user_type=user_type,
            has_mailbox=False,
        )
        with self._lock:
            self._without_mailbox[upn.lower()] = self._without_mailbox[user.user_id] = user
        return user

    def mark_shared(self, upn: str) -> None:
        """The simulated mailbox ``upn`` is a shared mailbox: its account is disabled."""
        with self._lock:
            self._shared.add(upn.lower())

    def users(self, mailboxes: Iterable[Mailbox]) -> list[DirectoryUser]:
        """Everyone in the directory, in a stable order (by id)."""
        with self._lock:
            shared = set(self._shared)
            others = {id(u): u for u in self._without_mailbox.values()}.values()
        with_mailbox = [
            DirectoryUser(
                upn=m.user,
                user_id=m.user_id,
                mail=m.user,
                display_name=_display_name(m.user),
                account_enabled=m.user.lower() not in shared,
            )
            for m in mailboxes
        ]
        return sorted([*with_mailbox, *others], key=lambda u: u.user_id)

    def without_mailbox(self, user: str) -> GraphFailure:
        """What the mail API answers for ``user``, who has no simulated mailbox."""
        with self._lock:
            known = self._without_mailbox.get(user.lower())
        if known is not None:
            return GraphFailure(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        return GraphFailure(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")

    def route(self, request: Request, mailboxes: Iterable[Mailbox]) -> Response:
        """``GET /v1.0/users``."""
        if self.forbidden:
            raise GraphFailure(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        options = _options(request.query)
        keep_with_mail = self._filter(request, options)
        users = [
            u
            for u in self.users(mailboxes)
            if keep_with_mail is None or (u.mail is not None) == keep_with_mail
        ]
        top = _top(options.get("$top"))
        offset = _offset(options.get("$skiptoken"))
        page = users[offset : offset + top]
        select = _select(options.get("$select"))
        body: dict[str, Any] = {"@odata.context": f"{request.base_url}/v1.0/$metadata#users"}
        if options.get("$count", "").lower() == "true":
            body["@odata.count"] = len(users)
        body["value"] = [{k: v for k, v in u.as_json().items() if k in select} for u in page]
        if offset + top < len(users):
            rest = {k: v for k, v in options.items() if k != "$skiptoken"}
            rest["$skiptoken"] = _token(offset + top)
            body["@odata.nextLink"] = f"{request.base_url}/v1.0/users?{urlencode(rest)}"
        return json_response(200, body)

    @staticmethod
    def _filter(request: Request, options: dict[str, str]) -> bool | None:
        raw = options.get("$filter")
        if raw is None:
            return None
        clause = " ".join(raw.split()).lower()
        if clause not in _FILTERS:
            raise bad_request(f"Unsupported filter: {raw}", "Request_UnsupportedQuery")
        advanced = request.headers.get("consistencylevel", "").lower() == "eventual"
        if clause.startswith("mail ne") and not (
            advanced and options.get("$count", "").lower() == "true"
        ):
            raise bad_request(
                "Unsupported or invalid query filter clause specified for property 'mail' of "
                "resource 'User'.",
                "Request_UnsupportedQuery",
            )
        return _FILTERS[clause]


def _options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        name = key.lower()
        if name not in _OPTIONS or name in options:
            raise bad_request(f"Query option '{key}' is not supported here or repeated.")
        options[name] = value
    return options


def _top(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TOP
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_TOP:
        raise bad_request(
            f"Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive.",
            "Request_BadRequest",
        )
    return int(raw)


def _select(raw: str | None) -> set[str]:
    if raw is None:
        return set(DEFAULT_PROPERTIES)
    names = {part.strip().lower() for part in raw.split(",") if part.strip()}
    unknown = names - PROPERTIES.keys()
    if unknown:
        raise bad_request(
            f"Could not find a property named '{sorted(unknown)[0]}' on type "
            "'microsoft.graph.user'.",
            "Request_BadRequest",
        )
    return {PROPERTIES[name] for name in names}


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise bad_request("Invalid $skiptoken.", "Request_BadRequest") from None
    if not isinstance(offset, int) or offset < 0:
        raise bad_request("Invalid $skiptoken.", "Request_BadRequest")
    return offset
