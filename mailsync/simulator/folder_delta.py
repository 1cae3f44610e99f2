"""``GET /v1.0/users/{u}/mailFolders/delta``: the folder tree, and later what changed in it.

Graph's folder delta lists every folder of the mailbox, flat (children included, each with
its ``parentFolderId``), page by page, and ends with a deltaLink; a round from that link
lists the folders added since as full items and the removed ones as
``{"id": …, "@removed": {"reason": "deleted"}}``. The simulator's tree changes only by
``add_folder`` and ``delete_folder`` (``Mailbox.folder_log``), so those are the changes it
reports; Graph may also report a folder whose counts changed, which a client must take as
an ordinary update. Hidden and search folders are listed (search folders with their
``@odata.type``: a client leaves them out). Pages hold ``Prefer: odata.maxpagesize`` folders
(default 10, Graph's folder page size); nextLinks page over the tree as it is when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from mailsync.simulator.delta import decode_token, encode_token
from mailsync.simulator.folders import Folder
from mailsync.simulator.odata import max_page_size
from mailsync.simulator.store import Mailbox
from mailsync.simulator.wire import Request, Response, bad_request, json_response

DEFAULT_FOLDER_PAGE_SIZE = 10
Render = Callable[[Mailbox, Folder], dict[str, Any]]


def serve_folder_delta(request: Request, mailbox: Mailbox, render: Render) -> Response:
    """One page of a folder delta round (``render(mailbox, folder)`` writes a folder)."""
    pairs = parse_qsl(request.query, keep_blank_values=True)
    tokens = [(k.lower(), v) for k, v in pairs if k.lower() in ("$skiptoken", "$deltatoken")]
    size = max_page_size(request.headers.get("prefer")) or DEFAULT_FOLDER_PAGE_SIZE
    if not tokens:
        if any(k.lower() != "$select" for k, _ in pairs):
            raise bad_request("Only $select is simulated on mailFolders/delta.")
        return _scratch_page(request, mailbox, render, 0, len(mailbox.folder_log), size)
    if len(pairs) != 1:
        raise bad_request("A nextLink or deltaLink is used exactly as given: no other options.")
    kind, raw = tokens[0]
    payload = decode_token(raw)
    if payload.get("u") != mailbox.user_id or payload.get("k") not in ("fs", "fd"):
        raise bad_request(f"The {kind} belongs to another mailbox or kind of link.")
    if kind == "$skiptoken" and payload["k"] == "fs":
        return _scratch_page(request, mailbox, render, int(payload["o"]), int(payload["s"]), size)
    if kind == "$deltatoken" and payload["k"] == "fd":
        return _changes(request, mailbox, render, int(payload["s"]))
    raise bad_request(f"The {kind} is not valid.")


def _body(request: Request, items: list[Any], link_key: str, token: dict[str, Any]) -> Response:
    link = f"{request.base_url}{request.path}?{_link_param(link_key)}={encode_token(token)}"
    return json_response(
        200,
        {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#Collection(mailFolder)",
            "value": items,
            link_key: link,
        },
    )


def _link_param(link_key: str) -> str:
    return "$skiptoken" if link_key == "@odata.nextLink" else "$deltatoken"


def _scratch_page(
    request: Request, mailbox: Mailbox, render: Render, offset: int, seq: int, size: int
) -> Response:
    folders = mailbox.all_folders()
    items = [render(mailbox, f) for f in folders[offset : offset + size]]
    common = {"u": mailbox.user_id, "s": seq}
    if offset + size < len(folders):
        return _body(request, items, "@odata.nextLink", {"k": "fs", **common, "o": offset + size})
    return _body(request, items, "@odata.deltaLink", {"k": "fd", **common})


def _changes(request: Request, mailbox: Mailbox, render: Render, since: int) -> Response:
    log = list(mailbox.folder_log)
    if since > len(log):
        raise bad_request("The $deltatoken is not valid.")
    items: list[Any] = []
    last: dict[str, bool] = {}
    for _, folder_id, removed in log[since:]:
        last[folder_id] = removed
    for folder_id, removed in last.items():
        folder = mailbox.find_folder(folder_id)
        if removed or folder is None:
            items.append({"id": folder_id, "@removed": {"reason": "deleted"}})
        else:
            items.append(render(mailbox, folder))
    token = {"k": "fd", "u": mailbox.user_id, "s": len(log)}
    return _body(request, items, "@odata.deltaLink", token)
