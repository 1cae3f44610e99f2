"""Graph's mail resources under ``/v1.0/users/{user}``: the user, its folder, messages.

Listings behave as Graph's do, awkward parts included: ``$skip`` nextLinks are evaluated at
request time (so deletions make a naive nextLink walker skip messages).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from mailsync.simulator.faults import Faults, Stats
from mailsync.simulator.generator import Message, folder_id_for
from mailsync.simulator.identity import TokenStore
from mailsync.simulator.odata import Query, next_link, parse_query
from mailsync.simulator.store import Mailbox
from mailsync.simulator.wire import (
    Request,
    Response,
    item_not_found,
    json_response,
    segment_not_found,
)


class MailApi:
    def __init__(self, faults: Faults, stats: Stats, tokens: TokenStore) -> None:
        self._faults = faults
        self._stats = stats
        self._tokens = tokens

    def route(self, request: Request, mailbox: Mailbox, segments: list[str]) -> Response:
        """``segments`` are the path after ``/v1.0/users/{user}``."""
        lowered = [s.lower() for s in segments]
        if not lowered:
            return json_response(200, self._user_json(request, mailbox))
        if lowered[0] == "messages":
            return self._messages_resource(request, mailbox, None, segments[1:])
        if lowered[0] == "mailfolders":
            if len(segments) == 1:
                return json_response(200, {"value": [self._folder_json(request, mailbox)]})
            folder = segments[1]
            if folder.lower() not in (mailbox.folder, mailbox.folder_id.lower()):
                raise item_not_found()
            if len(segments) == 2:
                return json_response(200, self._folder_json(request, mailbox))
            if lowered[2] == "messages":
                return self._messages_resource(request, mailbox, folder, segments[3:])
        raise segment_not_found(segments)

    def _user_json(self, request: Request, mailbox: Mailbox) -> dict[str, Any]:
        return {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users/$entity",
            "id": mailbox.user_id,
            "userPrincipalName": mailbox.user,
            "mail": mailbox.user,
            "displayName": mailbox.user.split("@", 1)[0].replace(".", " ").title(),
        }

    def _folder_json(self, request: Request, mailbox: Mailbox) -> dict[str, Any]:
        return {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users('{mailbox.user_id}')"
            "/mailFolders/$entity",
            "id": mailbox.folder_id,
            "displayName": mailbox.display_name,
            "parentFolderId": folder_id_for(mailbox.user, "msgfolderroot"),
            "childFolderCount": 0,
            "unreadItemCount": mailbox.unread_count,
            "totalItemCount": len(mailbox),
            "isHidden": False,
        }

    def _messages_resource(
        self, request: Request, mailbox: Mailbox, folder: str | None, rest: list[str]
    ) -> Response:
        if len(rest) > 1:
            raise segment_not_found(rest)
        if rest:
            return self._single_message(request, mailbox, rest[0])
        return self._message_page(request, mailbox, folder)

    def _single_message(self, request: Request, mailbox: Mailbox, message_id: str) -> Response:
        message = mailbox.get(message_id)
        if message is None:
            raise item_not_found()
        query = parse_query(request.query)
        return Response(200, mailbox.renderings.json(message, query.shape))

    def _message_page(self, request: Request, mailbox: Mailbox, folder: str | None) -> Response:
        query = parse_query(request.query)
        if self._faults.latency_ms > 0:
            time.sleep(self._faults.latency_ms / 1000)
        page, total = mailbox.page(
            query.low_ts, query.high_ts, skip=query.skip, top=query.top, desc=query.desc
        )
        mailbox.count_page(self._faults)  # may mutate: this page was cut before it
        body = self._page_body(request, mailbox, folder, query, page, total)
        events = self._faults.count_message_page((request.path.lower(), tuple(sorted(query.pairs))))
        if events.malformed:
            body = body[: len(body) // 2]  # a 200 whose JSON stops mid-message
        if events.expire_tokens:
            self._tokens.expire_all()
        self._stats.record_page(len(page))
        return Response(200, body)

    def _page_body(
        self,
        request: Request,
        mailbox: Mailbox,
        folder: str | None,
        query: Query,
        page: list[Message],
        total: int,
    ) -> bytes:
        where = f"mailFolders('{folder}')/messages" if folder else "messages"
        selected = f"({','.join(query.select)})" if query.select else ""
        context = (
            f"{request.base_url}/v1.0/$metadata#users('{quote(mailbox.user)}')/{where}{selected}"
        )
        parts = [b'{"@odata.context":', json.dumps(context).encode()]
        if query.count:
            parts += [b',"@odata.count":', str(total).encode()]
        parts.append(b',"value":[')
        shape = query.shape
        for i, message in enumerate(page):
            if i:
                parts.append(b",")
            mailbox.renderings.append(parts, message, shape)
        parts.append(b"]")
        if query.skip + len(page) < total:
            link = next_link(request, query.pairs, query.skip + len(page))
            parts += [b',"@odata.nextLink":', json.dumps(link).encode()]
        parts.append(b"}")
        return b"".join(parts)
