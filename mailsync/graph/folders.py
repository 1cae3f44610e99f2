"""A mailbox's folders, as Graph lists them: the whole tree, or one folder by name.

Graph v1.0 lists only the top level under ``/mailFolders``; each folder's children are under
``/mailFolders/{id}/childFolders``, and both lists page (10 by default, so we ask for more).
``includeHiddenFolders=true`` because hidden folders hold real mail. Search folders
(``#microsoft.graph.mailSearchFolder``) are virtual views of other folders' mail: syncing
them would file a message under a folder it does not live in, so they are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from mailsync.errors import BadDataError, InvalidInputError, NotFoundError
from mailsync.graph.client import GraphClient

SEARCH_FOLDER_TYPE = "#microsoft.graph.mailSearchFolder"
WELL_KNOWN_NAMES = ("inbox", "sentitems", "archive", "deleteditems", "drafts", "junkemail")
FOLDER_FIELDS = "id,displayName,parentFolderId,childFolderCount,totalItemCount,isHidden"
LIST_PAGE_SIZE = 100


@dataclass(frozen=True)
class Folder:
    graph_id: str
    parent_graph_id: str | None
    display_name: str
    path: str  # display names from the top: "Inbox/Projects/2024"
    well_known_name: str | None
    is_hidden: bool
    total_item_count: int | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _folder(raw: Any, parent_path: str | None, well_known: str | None = None) -> Folder | None:
    """A folder from Graph's JSON; None for a search folder."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise BadDataError("Graph sent a folder without an id")
    if raw.get("@odata.type") == SEARCH_FOLDER_TYPE:
        return None
    shown = raw.get("displayName")
    name: str = shown if isinstance(shown, str) and shown else raw["id"]
    total = raw.get("totalItemCount")
    return Folder(
        graph_id=raw["id"],
        parent_graph_id=raw.get("parentFolderId"),
        display_name=name,
        path=f"{parent_path}/{name}" if parent_path else name,
        well_known_name=well_known,
        is_hidden=bool(raw.get("isHidden")),
        total_item_count=total if isinstance(total, int) else None,
    )


def _pages(graph: GraphClient, url: str) -> Iterator[dict[str, Any]]:
    """Every folder object of a folder list, following nextLink exactly as given."""
    params: dict[str, str] | None = {
        "includeHiddenFolders": "true",
        "$top": str(LIST_PAGE_SIZE),
        "$select": FOLDER_FIELDS,
    }
    link: str | None = url
    while link:
        body = graph.get_json(link, params)
        value = body.get("value")
        if not isinstance(value, list):
            raise BadDataError("Graph's folder list has no 'value' list")
        yield from value
        link = graph.link(body)
        params = None  # a nextLink carries its options


def list_folders(graph: GraphClient, mailbox: str) -> list[Folder]:
    """Every real folder of the mailbox, parents before children, search folders left out."""
    well_known = well_known_ids(graph, mailbox)
    found: list[Folder] = []
    pending: list[tuple[str, str | None]] = [(f"{graph.user_url(mailbox)}/mailFolders", None)]
    while pending:
        url, parent_path = pending.pop(0)
        for raw in _pages(graph, url):
            folder = _folder(raw, parent_path)
            if folder is None:
                continue
            named = well_known.get(folder.graph_id)
            if named:
                folder = Folder(**{**folder.as_json(), "well_known_name": named})
            found.append(folder)
            if isinstance(raw.get("childFolderCount"), int) and raw["childFolderCount"] > 0:
                child_url = f"{graph.folder_url(mailbox, folder.graph_id)}/childFolders"
                pending.append((child_url, folder.path))
    return found


def well_known_ids(graph: GraphClient, mailbox: str) -> dict[str, str]:
    """Inbox's id is 'inbox' only in a URL: the list shows real ids. Resolving the two most
    used names (one request each) labels them; the rest stay unnamed, which is harmless."""
    names: dict[str, str] = {}
    for name in ("inbox", "sentitems"):
        try:
            body = graph.get_json(graph.folder_url(mailbox, name), {"$select": "id"})
        except NotFoundError:
            continue
        if isinstance(body.get("id"), str):
            names[body["id"]] = name
    return names


def resolve_folder(graph: GraphClient, mailbox: str, name: str) -> Folder:
    """One folder by id or well-known name (inbox, sentitems, …), with a clear error for a
    folder the mailbox does not have."""
    try:
        raw = graph.get_json(graph.folder_url(mailbox, name), {"$select": FOLDER_FIELDS})
    except NotFoundError as exc:
        if exc.code not in ("ErrorItemNotFound", "ErrorInvalidIdMalformed"):
            raise  # the mailbox itself is unknown: say that, not "no such folder"
        raise InvalidInputError(
            f"mailbox {mailbox} has no folder {name!r} (use a folder id, 'all', or one of: "
            + ", ".join(WELL_KNOWN_NAMES)
            + ")"
        ) from None
    folder = _folder(raw, None, name if name.lower() in WELL_KNOWN_NAMES else None)
    if folder is None:
        raise InvalidInputError(f"{name!r} is a search folder (a view of other folders' mail)")
    return folder


@dataclass(frozen=True)
class FolderTreeDelta:
    """A round of ``mailFolders/delta``: the folders added or changed (every folder, for a
    round from scratch), the ids removed, and where the next round starts."""

    changed: list[dict[str, Any]]  # Graph's folder objects, search folders included
    removed: list[str]
    delta_link: str


def folder_tree_delta(graph: GraphClient, mailbox: str, link: str | None) -> FolderTreeDelta:
    """One round of the mailbox's folder delta, from ``link`` (None: the whole tree, flat:
    Graph lists children too, each with its parentFolderId). With a deltaLink and nothing
    changed, this is one request; the whole tree of a dozen folders is two pages."""
    url = link or f"{graph.user_url(mailbox)}/mailFolders/delta"
    params: dict[str, str] | None = None if link else {"$select": FOLDER_FIELDS}
    changed: list[dict[str, Any]] = []
    removed: list[str] = []
    while True:
        body = graph.get_json(url, params, max_page_size=LIST_PAGE_SIZE)
        value = body.get("value")
        if not isinstance(value, list):
            raise BadDataError("Graph's folder delta page has no 'value' list")
        for raw in value:
            if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
                raise BadDataError("Graph sent a folder without an id")
            if "@removed" in raw:
                removed.append(raw["id"])
            else:
                changed.append(raw)
        next_link, delta_link = graph.link(body), graph.link(body, "@odata.deltaLink")
        if delta_link is not None:
            return FolderTreeDelta(changed, removed, delta_link)
        if next_link is None:
            raise BadDataError("Graph's folder delta page has neither nextLink nor deltaLink")
        url, params = next_link, None


def tree_of(raws: dict[str, dict[str, Any]], well_known: dict[str, str]) -> list[Folder]:
    """The folders (Graph's objects by id) as a tree, parents before children, each with its
    path; search folders (and anything below one) left out. A folder whose parent is not
    among them is at the top (its parent is the mailbox's root, which Graph does not list)."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for raw in raws.values():
        parent = raw.get("parentFolderId")
        children.setdefault(parent if parent in raws else None, []).append(raw)
    found: list[Folder] = []
    pending: list[tuple[dict[str, Any], str | None]] = [(r, None) for r in children.get(None, [])]
    while pending:
        raw, parent_path = pending.pop(0)
        folder = _folder(raw, parent_path, well_known.get(raw["id"]))
        if folder is None:
            continue
        found.append(folder)
        pending.extend((child, folder.path) for child in children.get(raw["id"], []))
    return found
