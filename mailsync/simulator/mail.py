"""Graph's mail resources under ``/v1.0/users/{user}``: the user, folders, messages.

Routes (``{folder}`` is an id or a well-known name; ``childFolders/{id}`` may repeat):

- ``GET /users/{u}``: the user
- ``GET /users/{u}/mailFolders``: the children of msgfolderroot, paged
- ``GET /users/{u}/mailFolders/{folder}[/childFolders/{id}]*``: one folder
- ``GET …/{folder}/childFolders``: a folder's children, paged
- ``GET /users/{u}/messages`` (every real folder), ``GET …/{folder}/messages``: listings
- ``GET /users/{u}/messages/{id}``, ``GET …/{folder}/messages/{id}``: one message
- ``GET …/{folder}/messages/delta``: see ``mailsync.simulator.delta``
- ``GET /users/{u}/mailFolders/delta``: see ``mailsync.simulator.folder_delta``

Folder lists page like message lists (``$top`` default 10, ``$skip`` nextLinks) and leave
hidden folders out unless ``includeHiddenFolders=true``. Message listings behave as Graph's
do, awkward parts included: ``$skip`` nextLinks are evaluated at request time (so deletions
make a naive nextLink walker skip messages).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qsl, quote

from mailsync.simulator import attachments
from mailsync.simulator.attachments import AttachmentFaults
from mailsync.simulator.delta import DeltaApi
from mailsync.simulator.faults import Faults
from mailsync.simulator.folder_delta import serve_folder_delta
from mailsync.simulator.folders import SEARCH_FOLDER_TYPE, Folder
from mailsync.simulator.generator import Message
from mailsync.simulator.identity import TokenStore
from mailsync.simulator.odata import (
    Query,
    next_link,
    parse_count,
    parse_options,
    parse_query,
    skip_option,
    split_fields,
    top_option,
)
from mailsync.simulator.stats import Stats
from mailsync.simulator.store import Mailbox
from mailsync.simulator.wire import (
    Request,
    Response,
    item_not_found,
    json_response,
    segment_not_found,
)

FOLDER_FIELDS = (
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "isHidden",
)
_FOLDER_FIELD_NAMES = {name.lower(): name for name in FOLDER_FIELDS}
_FOLDER_LIST_OPTIONS = {"$top", "$skip", "$select", "$count"}


class MailApi:
    def __init__(
        self,
        faults: Faults,
        stats: Stats,
        tokens: TokenStore,
        delta: DeltaApi,
        attachment_faults: AttachmentFaults,
    ) -> None:
        self._attachment_faults = attachment_faults
        self._faults = faults
        self._stats = stats
        self._tokens = tokens
        self._delta = delta

    def route(self, request: Request, mailbox: Mailbox, segments: list[str]) -> Response:
        """``segments`` are the path after ``/v1.0/users/{user}``."""
        lowered = [s.lower() for s in segments]
        if not lowered:
            return json_response(200, self._user_json(request, mailbox))
        if lowered[0] == "messages":
            return self._messages_resource(request, mailbox, None, segments[1:])
        if lowered == ["mailfolders"]:
            return self._folder_list(request, mailbox, mailbox.tree.root, "mailFolders")
        if lowered == ["mailfolders", "delta"]:
            return serve_folder_delta(request, mailbox, folder_json)
        if lowered[0] == "mailfolders":
            folder, rest = self._folder_path(mailbox, segments[1:])
            where = "/".join(segments[: len(segments) - len(rest)])
            if not rest:
                return self._folder(request, mailbox, folder, where)
            if [s.lower() for s in rest] == ["childfolders"]:
                return self._folder_list(request, mailbox, folder, f"{where}/childFolders")
            if rest[0].lower() == "messages":
                return self._messages_resource(request, mailbox, folder, rest[1:])
        raise segment_not_found(segments)

    def _user_json(self, request: Request, mailbox: Mailbox) -> dict[str, Any]:
        return {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users/$entity",
            "id": mailbox.user_id,
            "userPrincipalName": mailbox.user,
            "mail": mailbox.user,
            "displayName": mailbox.user.split("@", 1)[0].replace(".", " ").title(),
        }

    # -- folders

    @staticmethod
    def _folder_path(mailbox: Mailbox, segments: list[str]) -> tuple[Folder, list[str]]:
        """Resolve ``{folder}(/childFolders/{id})*``; the folder and the rest of the path."""
        folder = mailbox.find_folder(segments[0])
        rest = segments[1:]
        while folder is not None and len(rest) >= 2 and rest[0].lower() == "childfolders":
            child = mailbox.find_folder(rest[1])
            folder = child if child is not None and child.parent_id == folder.id else None
            rest = rest[2:]
        if folder is None:
            raise item_not_found()
        return folder, rest

    def _folder(self, request: Request, mailbox: Mailbox, folder: Folder, where: str) -> Response:
        options = parse_options(parse_qsl(request.query, keep_blank_values=True), {"$select"})
        select = _folder_select(options)
        obj = {"@odata.context": self._context(request, mailbox, f"{where}/$entity")}
        obj.update(folder_json(mailbox, folder, select))
        return json_response(200, obj)

    def _folder_list(
        self, request: Request, mailbox: Mailbox, parent: Folder, where: str
    ) -> Response:
        pairs = parse_qsl(request.query, keep_blank_values=True)
        options = parse_options(pairs, _FOLDER_LIST_OPTIONS)
        top, skip, select = top_option(options), skip_option(options), _folder_select(options)
        hidden = any(k.lower() == "includehiddenfolders" and v.lower() == "true" for k, v in pairs)
        children = mailbox.child_folders(parent, include_hidden=hidden)
        body: dict[str, Any] = {"@odata.context": self._context(request, mailbox, where)}
        if parse_count(options):
            body["@odata.count"] = len(children)
        body["value"] = [folder_json(mailbox, f, select) for f in children[skip : skip + top]]
        if skip + top < len(children):
            body["@odata.nextLink"] = next_link(request, pairs, skip + top)
        return json_response(200, body)

    @staticmethod
    def _context(request: Request, mailbox: Mailbox, where: str) -> str:
        return f"{request.base_url}/v1.0/$metadata#users('{quote(mailbox.user)}')/{where}"

    # -- messages

    def _messages_resource(
        self, request: Request, mailbox: Mailbox, folder: Folder | None, rest: list[str]
    ) -> Response:
        if len(rest) >= 2 and rest[1].lower() == "attachments":
            message = mailbox.get(rest[0])
            if message is None or (folder is not None and not mailbox.shows(folder, message)):
                raise item_not_found()
            return attachments.route(self._attachment_faults, message, rest[2:], request)
        if len(rest) > 1:
            raise segment_not_found(rest)
        if rest and folder is not None and rest[0].lower() == "delta":
            response = self._delta.serve(request, mailbox, folder)
            if self._faults.mutation_due(mailbox.user_id):  # the page is out as it was
                mailbox.mutate(
                    self._faults.add_per_mutation, self._faults.delete_per_mutation, folder.id
                )
            response.body = self._counted(request, response.body)
            return response
        if rest:
            return self._single_message(request, mailbox, folder, rest[0])
        return self._message_page(request, mailbox, folder)

    def _single_message(
        self, request: Request, mailbox: Mailbox, folder: Folder | None, message_id: str
    ) -> Response:
        message = mailbox.get(message_id)
        if message is None or (folder is not None and not mailbox.shows(folder, message)):
            raise item_not_found()
        query = parse_query(request.query)
        return Response(200, mailbox.renderings.json(message, query.shape))

    def _message_page(self, request: Request, mailbox: Mailbox, folder: Folder | None) -> Response:
        query = parse_query(request.query)
        self._faults.hold_point()
        if self._faults.latency_ms > 0:
            time.sleep(self._faults.latency_ms / 1000)
        page, total = mailbox.page(
            query.low_ts,
            query.high_ts,
            skip=query.skip,
            top=query.top,
            desc=query.desc,
            folder=folder,
        )
        if self._faults.mutation_due(mailbox.user_id):  # after the cut: this page is as was
            real = folder.id if folder is not None and not folder.is_search else None
            mailbox.mutate(self._faults.add_per_mutation, self._faults.delete_per_mutation, real)
        body = self._counted(request, self._page_body(request, mailbox, folder, query, page, total))
        self._stats.record_page(len(page))
        return Response(200, body)

    def _counted(self, request: Request, body: bytes) -> bytes:
        """A page of messages (listed or delta) counted for the page faults: the body to
        send (cut in half when it is the malformed one)."""
        pairs = tuple(sorted(parse_qsl(request.query, keep_blank_values=True)))
        events = self._faults.count_message_page((request.path.lower(), pairs))
        if events.expire_tokens:
            self._tokens.expire_all()
        return body[: len(body) // 2] if events.malformed else body  # JSON stops mid-message

    def _page_body(
        self,
        request: Request,
        mailbox: Mailbox,
        folder: Folder | None,
        query: Query,
        page: list[Message],
        total: int,
    ) -> bytes:
        where = f"mailFolders('{folder.id}')/messages" if folder else "messages"
        selected = f"({','.join(query.select)})" if query.select else ""
        context = self._context(request, mailbox, where + selected)
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


def _folder_select(options: dict[str, str]) -> tuple[str, ...] | None:
    """$select on folders: case-insensitive names, unknown ones ignored (``id`` always)."""
    if "$select" not in options:
        return None
    names = (_FOLDER_FIELD_NAMES.get(name.lower()) for name in split_fields(options["$select"]))
    return tuple(name for name in names if name)


def folder_json(
    mailbox: Mailbox, folder: Folder, select: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """A mailFolder (or mailSearchFolder) as Graph writes it."""
    total, unread = mailbox.counts(folder)
    full: dict[str, Any] = {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": len(folder.children),  # hidden children included
        "unreadItemCount": unread,
        "totalItemCount": total,
        "isHidden": folder.hidden,
    }
    if select is not None:
        wanted = {"id", *select}
        full = {name: value for name, value in full.items() if name in wanted}
    if folder.search is None:
        return full
    search = {
        "isSupported": True,
        "includeNestedFolders": folder.search.include_nested,
        "sourceFolderIds": list(folder.search.source_ids),
        "filterQuery": folder.search.filter_query,
    }
    return {"@odata.type": SEARCH_FOLDER_TYPE, **full, **({} if select else search)}
