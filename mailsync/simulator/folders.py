"""A mailbox's folder tree: opaque ids, well-known names, hidden folders, search folders.

What Graph shows of it (research notes, graph-delta-and-fanout.md §2): ``/mailFolders`` lists
the children of ``msgfolderroot`` only, ``childFolders`` one level below a folder; hidden
folders are left out unless asked for; well-known names (``inbox``, ``sentitems``, …) work
anywhere an id does. A search folder (``#microsoft.graph.mailSearchFolder``) holds no mail of
its own: it shows messages that live in its source folders. Folder ids never change.

Not thread-safe on its own: the owning ``Mailbox`` serializes access.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailsync.simulator.generator import ROLE_DRAFT, ROLE_SENT, folder_id_for

ROOT = "msgfolderroot"
WELL_KNOWN_NAMES = {
    ROOT: "Top of Information Store",
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "archive": "Archive",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
    "junkemail": "Junk Email",
}
ROLES = {"sentitems": ROLE_SENT, "drafts": ROLE_DRAFT}
SEARCH_FOLDER_TYPE = "#microsoft.graph.mailSearchFolder"


@dataclass(frozen=True)
class SearchSpec:
    """A search folder's definition: sources are well-known names or paths ("Inbox/Projects")."""

    sources: tuple[str, ...] = ("inbox",)
    unread_only: bool = True
    include_nested: bool = True

    @classmethod
    def from_json(cls, raw: Any) -> SearchSpec:
        if not isinstance(raw, dict):
            raise ValueError("a search folder spec is an object")
        sources = raw.get("sources", ["inbox"])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ValueError("search 'sources' must be a list of folder names or paths")
        return cls(
            tuple(sources),
            bool(raw.get("unreadOnly", True)),
            bool(raw.get("includeNestedFolders", True)),
        )


@dataclass(frozen=True)
class FolderSpec:
    """A folder to create: ``weight`` is its share of the generated messages."""

    name: str
    well_known: str | None = None
    weight: float = 0.0
    hidden: bool = False
    children: tuple[FolderSpec, ...] = ()
    search: SearchSpec | None = None

    @classmethod
    def from_json(cls, raw: Any) -> FolderSpec:
        """``{"name", "wellKnownName", "weight", "hidden", "children": [...], "search": {...}}``"""
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ValueError("a folder spec is an object with a 'name'")
        well_known = raw.get("wellKnownName")
        if well_known is not None and well_known not in WELL_KNOWN_NAMES:
            raise ValueError(f"unknown well-known folder name {well_known!r}")
        children = raw.get("children", [])
        if not isinstance(children, list):
            raise ValueError("folder 'children' must be a list")
        search = raw.get("search")
        return cls(
            name=raw["name"],
            well_known=well_known,
            weight=float(raw.get("weight", 0.0)),
            hidden=bool(raw.get("hidden", False)),
            children=tuple(cls.from_json(child) for child in children),
            search=None if search is None else SearchSpec.from_json(search),
        )


# Inbox with subfolders (Projects/Falcon two deep), the usual well-known folders, one hidden
# folder with mail in it, and one search folder (Inbox's unread mail, subfolders included).
DEFAULT_TREE: tuple[FolderSpec, ...] = (
    FolderSpec(
        "Inbox",
        "inbox",
        40,
        children=(
            FolderSpec("Projects", weight=6, children=(FolderSpec("Falcon", weight=4),)),
            FolderSpec("Receipts", weight=4),
            FolderSpec("Newsletters", weight=6),
        ),
    ),
    FolderSpec("Sent Items", "sentitems", 15),
    FolderSpec("Archive", "archive", 12),
    FolderSpec("Deleted Items", "deleteditems", 4),
    FolderSpec("Drafts", "drafts", 1),
    FolderSpec("Junk Email", "junkemail", 2),
    FolderSpec("Legal Hold", weight=2, hidden=True),
    FolderSpec("Unread Mail", search=SearchSpec(("inbox",))),
)


@dataclass(frozen=True)
class SearchCriteria:
    source_ids: tuple[str, ...]
    unread_only: bool
    include_nested: bool

    @property
    def filter_query(self) -> str:
        return "isRead eq false" if self.unread_only else ""


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str
    path: str  # display names from the top, "Inbox/Projects"
    well_known: str | None = None
    hidden: bool = False
    search: SearchCriteria | None = None
    children: list[str] = field(default_factory=list)  # ids, in creation order

    @property
    def is_search(self) -> bool:
        return self.search is not None


class FolderTree:
    """Folders by id, under ``msgfolderroot``; well-known names and aliases resolve to ids."""

    def __init__(self, user: str) -> None:
        self.user = user
        self._folders: dict[str, Folder] = {}
        self._names: dict[str, str] = {}  # well-known name or alias (lower case) -> id
        self._added = 0
        root_id = folder_id_for(user, ROOT)
        # The root's parent is the mailbox's own root, which Graph does not serve either.
        self.root = Folder(root_id, WELL_KNOWN_NAMES[ROOT], folder_id_for(user, "root"), "")
        self.root.well_known = ROOT
        self._folders[root_id] = self.root
        self._names[ROOT] = root_id

    # -- building

    @classmethod
    def single(cls, user: str, name: str) -> FolderTree:
        """The tree of a one-folder mailbox: ``name`` (well-known or not) under the root,
        reachable by that name too (as the simulator's first, one-folder version did)."""
        tree = cls(user)
        key = name.lower()
        folder = Folder(
            folder_id_for(user, key),
            WELL_KNOWN_NAMES.get(key, name),
            tree.root.id,
            WELL_KNOWN_NAMES.get(key, name),
            well_known=key if key in WELL_KNOWN_NAMES else None,
        )
        tree._attach(folder)
        tree._names[key] = folder.id
        return tree

    @classmethod
    def from_specs(
        cls, user: str, specs: Sequence[FolderSpec]
    ) -> tuple[FolderTree, list[tuple[str, float, str | None]]]:
        """The tree, and ``(folder id, weight, role)`` for spreading messages over it."""
        tree = cls(user)
        targets: list[tuple[str, float, str | None]] = []
        searches: list[tuple[FolderSpec, Folder]] = []
        pending = [(spec, tree.root) for spec in specs]
        while pending:
            spec, parent = pending.pop(0)
            key = spec.well_known or f"path:{parent.path}/{spec.name}".lower()
            folder = tree.add(spec.name, parent.id, hidden=spec.hidden, key=key)
            if spec.well_known:
                folder.well_known = spec.well_known
                tree._names[spec.well_known] = folder.id
            if spec.search is not None:
                searches.append((spec, folder))
            elif spec.weight > 0:
                targets.append((folder.id, spec.weight, ROLES.get(spec.well_known or "")))
            pending.extend((child, folder) for child in spec.children)
        for spec, folder in searches:  # sources may be defined after the search folder
            assert spec.search is not None
            folder.search = tree._criteria(spec.search)
        return tree, targets

    def add(
        self, name: str, parent_id: str, *, hidden: bool = False, key: str | None = None
    ) -> Folder:
        """A new folder under ``parent_id``; ``key`` makes its id deterministic."""
        parent = self._folders.get(parent_id)
        if parent is None or parent.is_search:
            raise ValueError(f"no folder {parent_id!r} to create {name!r} in")
        if any(self._folders[c].display_name.lower() == name.lower() for c in parent.children):
            raise ValueError(f"{parent.path or 'the root'} already has a folder {name!r}")
        if key is None:
            self._added += 1
            key = f"added:{self._added}"
        path = f"{parent.path}/{name}" if parent.path else name
        folder = Folder(folder_id_for(self.user, key), name, parent.id, path, hidden=hidden)
        self._attach(folder)
        return folder

    def _attach(self, folder: Folder) -> None:
        self._folders[folder.id] = folder
        self._folders[folder.parent_id].children.append(folder.id)

    def _criteria(self, spec: SearchSpec) -> SearchCriteria:
        ids = []
        for source in spec.sources:
            folder = self.resolve(source) or self._by_path(source)
            if folder is None or folder.is_search:
                raise ValueError(f"search folder source {source!r} is not a real folder")
            ids.append(folder.id)
        return SearchCriteria(tuple(ids), spec.unread_only, spec.include_nested)

    def _by_path(self, path: str) -> Folder | None:
        wanted = path.strip("/").lower()
        return next((f for f in self._folders.values() if f.path.lower() == wanted), None)

    # -- reading

    def get(self, folder_id: str) -> Folder | None:
        return self._folders.get(folder_id)

    def resolve(self, name_or_id: str) -> Folder | None:
        """By id (exact, as Graph's ids are case-sensitive) or well-known name (any case)."""
        folder = self._folders.get(name_or_id)
        if folder is None:
            folder_id = self._names.get(name_or_id.lower())
            folder = self._folders.get(folder_id) if folder_id else None
        return folder

    def folder_below_root(self) -> Folder:
        """The first real folder under the root (a mailbox's default when it has no Inbox)."""
        for child_id in self.root.children:
            if not self._folders[child_id].is_search:
                return self._folders[child_id]
        raise ValueError("the mailbox has no real folder under its root")

    def children(self, folder_id: str, *, include_hidden: bool) -> list[Folder]:
        folders = (self._folders[c] for c in self._folders[folder_id].children)
        return [f for f in folders if include_hidden or not f.hidden]

    def walk(self, folder_id: str | None = None) -> Iterator[Folder]:
        """The folder (default: the root) and everything below it, parents first."""
        pending = [self._folders[folder_id or self.root.id]]
        while pending:
            folder = pending.pop(0)
            yield folder
            pending.extend(self._folders[c] for c in folder.children)

    def real_folders(self) -> list[Folder]:
        """Folders that hold messages (everything but search folders)."""
        return [f for f in self.walk() if not f.is_search]

    def search_sources(self, folder: Folder) -> set[str]:
        """Ids of the real folders whose mail a search folder shows (sources deleted since
        are dropped)."""
        criteria = folder.search
        if criteria is None:
            return set()
        found: set[str] = set()
        for source_id in criteria.source_ids:
            if source_id not in self._folders:
                continue
            if criteria.include_nested:
                found.update(f.id for f in self.walk(source_id) if not f.is_search)
            else:
                found.add(source_id)
        return found

    # -- removing

    def remove(self, folder_id: str) -> list[Folder]:
        """Remove a folder and everything below it; well-known folders cannot be deleted
        (Graph: ErrorDeleteDistinguishedFolder)."""
        folder = self._folders.get(folder_id)
        if folder is None:
            raise KeyError(folder_id)
        if folder.well_known is not None:
            raise ValueError(f"{folder.display_name!r} is a well-known folder: not deletable")
        removed = list(self.walk(folder_id))
        self._folders[folder.parent_id].children.remove(folder_id)
        for gone in removed:
            del self._folders[gone.id]
        self._names = {k: v for k, v in self._names.items() if v in self._folders}
        return removed
