"""Mutations as data: what ``POST /_sim/mailboxes/{user}/mutations`` and the
``delta_mutations`` fault take, parsed strictly and applied to a ``Mailbox``.

JSON form, one object per mutation (``count`` messages are picked deterministically from
``folder`` when no ``ids`` are given; folders are ids or well-known names):

- ``{"op": "add", "count": 3, "folder": "inbox"}``
- ``{"op": "delete", "count": 2, "folder": "inbox"}`` or ``{"op": "delete", "ids": [...]}``
- ``{"op": "move", "count": 2, "folder": "inbox", "to": "archive"}``
- ``{"op": "read" | "unread", "count": 2, "folder": "inbox"}``
- ``{"op": "importance", "count": 1, "importance": "high"}``
- ``{"op": "categories", "count": 1, "categories": ["Red category"]}``
- ``{"op": "edit_draft", "count": 1, "subject": "v2"}`` (drafts only)
- ``{"op": "add_folder", "name": "Travel", "parent": "inbox", "hidden": false}``
- ``{"op": "delete_folder", "folder": "<id>"}``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from mailsync.simulator.corpus import CATEGORIES
from mailsync.simulator.folders import ROOT
from mailsync.simulator.generator import Message
from mailsync.simulator.store import IMPORTANCE_VALUES, Mailbox

_MESSAGE_OPS = ("delete", "move", "read", "unread", "importance", "categories", "edit_draft")
OPS = ("add", *_MESSAGE_OPS, "add_folder", "delete_folder")


@dataclass(frozen=True)
class Mutation:
    op: str
    count: int = 1
    ids: tuple[str, ...] = ()
    folder: str | None = None
    to: str | None = None
    importance: str = "high"
    categories: tuple[str, ...] = (CATEGORIES[0],)
    subject: str | None = None
    name: str | None = None
    parent: str = ROOT
    hidden: bool = False

    @classmethod
    def from_json(cls, raw: Any) -> Mutation:
        """ValueError naming what is wrong (the admin API passes untrusted JSON)."""
        if not isinstance(raw, dict):
            raise ValueError("a mutation is a JSON object with an 'op'")
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown mutation keys {sorted(unknown)}")
        op = raw.get("op")
        if op not in OPS:
            raise ValueError(f"mutation 'op' must be one of {OPS}, not {op!r}")
        count = raw.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("mutation 'count' must be an integer >= 0")
        ids = raw.get("ids", [])
        categories = raw.get("categories", [CATEGORIES[0]])
        for name, value in (("ids", ids), ("categories", categories)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"mutation {name!r} must be a list of strings")
        strings = {k: raw[k] for k in ("folder", "to", "subject", "name") if raw.get(k) is not None}
        if not all(isinstance(v, str) for v in strings.values()):
            raise ValueError("mutation 'folder', 'to', 'subject' and 'name' are strings")
        mutation = cls(
            op=op,
            count=count,
            ids=tuple(ids),
            categories=tuple(categories),
            importance=str(raw.get("importance", "high")),
            parent=str(raw.get("parent", ROOT)),
            hidden=bool(raw.get("hidden", False)),
            **strings,
        )
        mutation.check()
        return mutation

    def check(self) -> None:
        if self.op == "move" and self.to is None:
            raise ValueError("a 'move' needs 'to'")
        if self.op == "add_folder" and not self.name:
            raise ValueError("an 'add_folder' needs a 'name'")
        if self.op == "delete_folder" and self.folder is None:
            raise ValueError("a 'delete_folder' needs 'folder'")
        if self.op == "importance" and self.importance not in IMPORTANCE_VALUES:
            raise ValueError(f"'importance' must be one of {IMPORTANCE_VALUES}")

    def as_json(self) -> dict[str, Any]:
        """The JSON form, unset options left out (``from_json`` reads it back)."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is not None:
                out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out


def apply(mailbox: Mailbox, mutation: Mutation) -> dict[str, Any]:
    """Apply one mutation; what it did: ``{"op", "ids"}`` (messages affected) and, for a new
    folder, ``"folder"`` (its id)."""
    if mutation.op == "add":
        added = mailbox.add_messages(mutation.count, mutation.folder)
        return {"op": "add", "ids": [m.id for m in added]}
    if mutation.op == "add_folder":
        assert mutation.name is not None
        folder = mailbox.add_folder(mutation.name, mutation.parent, hidden=mutation.hidden)
        return {"op": "add_folder", "ids": [], "folder": folder.id}
    if mutation.op == "delete_folder":
        assert mutation.folder is not None
        return {"op": "delete_folder", "ids": mailbox.delete_folder(mutation.folder)}
    ids = list(mutation.ids) or _pick(mailbox, mutation)
    return {"op": mutation.op, "ids": _MESSAGE_ACTIONS[mutation.op](mailbox, ids, mutation)}


def _pick(mailbox: Mailbox, mutation: Mutation) -> list[str]:
    """Messages the mutation would really change."""
    wanted: dict[str, Callable[[Message], bool]] = {
        "read": lambda m: not m.isRead,
        "unread": lambda m: m.isRead,
        "importance": lambda m: m.importance != mutation.importance,
        "categories": lambda m: m.categories != mutation.categories,
        "edit_draft": lambda m: m.isDraft,
    }
    return mailbox.pick(mutation.count, mutation.folder, wanted.get(mutation.op))


def _move(mailbox: Mailbox, ids: list[str], mutation: Mutation) -> list[str]:
    assert mutation.to is not None
    return mailbox.move(ids, mutation.to)


_MESSAGE_ACTIONS: dict[str, Callable[[Mailbox, list[str], Mutation], list[str]]] = {
    "delete": lambda box, ids, _: box.delete(ids),
    "move": _move,
    "read": lambda box, ids, _: box.set_read(ids, True),
    "unread": lambda box, ids, _: box.set_read(ids, False),
    "importance": lambda box, ids, m: box.set_importance(ids, m.importance),
    "categories": lambda box, ids, m: box.set_categories(ids, m.categories),
    "edit_draft": lambda box, ids, m: box.edit_drafts(ids, m.subject),
}


def parse_mutations(raw: Any) -> list[Mutation]:
    """One mutation object or a list of them."""
    items = raw if isinstance(raw, list) else [raw]
    return [Mutation.from_json(item) for item in items]
