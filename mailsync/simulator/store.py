"""The simulated mailboxes: a folder tree, each message in exactly one folder, and a change
log of everything that happens to them.

Thread-safe: the HTTP server answers requests on many threads while a test mutates. Every
mutation is deterministic for a given seed and sequence of calls, and recorded in the log
(``mailsync.simulator.changelog``), from which delta rounds are computed. Messages are never
changed in place: a change publishes a copy with a new ``changeKey`` and
``lastModifiedDateTime`` (a logical clock: one second per change, after the newest mail).
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from mailsync.simulator import corpus
from mailsync.simulator.changelog import ChangeLog
from mailsync.simulator.folders import ROLES, ROOT, Folder, FolderSpec, FolderTree
from mailsync.simulator.generator import (
    DEFAULT_START,
    Message,
    change_key,
    file_into,
    generate_messages,
    iso,
    new_message,
    spread_over_folders,
    user_id_for,
)
from mailsync.simulator.render import RenderCache
from mailsync.simulator.sorted_messages import SortedMessages

IMPORTANCE_VALUES = ("low", "normal", "high")


class Mailbox:
    """One user's mailbox. Without ``folders`` it is a single folder named ``folder`` (the
    simulator's original shape); with ``folders`` (e.g. ``DEFAULT_TREE``) a tree, the
    messages spread over its real folders by weight."""

    def __init__(
        self,
        user: str,
        count: int,
        *,
        seed: int = 0,
        folder: str = "inbox",
        start: datetime = DEFAULT_START,
        folders: Sequence[FolderSpec] | None = None,
    ) -> None:
        self.user = user
        self.user_id = user_id_for(user)
        self.seed = seed
        self._lock = threading.RLock()
        if folders is None:
            self.tree = FolderTree.single(user, folder)
            default = self.tree.folder_below_root()
            generated = generate_messages(
                count, seed=seed, start=start, mailbox=user, folder_id=default.id
            )
        else:
            self.tree, targets = FolderTree.from_specs(user, folders)
            default = self.tree.resolve(folder) or self.tree.folder_below_root()
            generated = generate_messages(count, seed=seed, start=start, mailbox=user)
            spread_over_folders(generated, targets, mailbox=user, seed=seed)
        self.default_folder_name = folder.lower()  # where new mail arrives by default
        self.folder_id = default.id
        self.display_name = default.display_name
        self._all = SortedMessages(generated)
        self._folders = {f.id: SortedMessages() for f in self.tree.real_folders()}
        for message in self._all:
            self._folders[message.parentFolderId].insert(message)
        self._by_id = {m.id: m for m in generated}
        # New mail arrives after anything ever received, even if the newest was deleted since:
        # a client whose cursor passed a deleted message must still see what comes later.
        self._newest_ts = generated[-1].received_ts if generated else int(start.timestamp())
        self._clock = self._newest_ts  # lastModifiedDateTime of the latest change
        self.initial_ids: frozenset[str] = frozenset(self._by_id)
        self.added_ids: set[str] = set()
        self.deleted_ids: set[str] = set()
        self._next_index = count
        self._rng = random.Random(f"{user}\x00{seed}\x00mutations")  # deterministic mutations
        self.renderings = RenderCache()
        self.log = ChangeLog()
        self._search_views: dict[str, tuple[int, SortedMessages]] = {}
        # The folder tree's own change log (mailFolders/delta): (seq, folder id, removed).
        # The tree as generated is seq 0; each folder added or removed later is one entry.
        self.folder_log: list[tuple[int, str, bool]] = []

    # -- reading

    def __len__(self) -> int:
        return len(self._all)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._by_id)

    def messages(self) -> list[Message]:
        """Every message of every real folder, sorted by (receivedDateTime, id)."""
        with self._lock:
            return self._all.as_list()

    def get(self, message_id: str) -> Message | None:
        return self._by_id.get(message_id)

    @property
    def unread_count(self) -> int:
        return self._all.unread

    def find_folder(self, name_or_id: str) -> Folder | None:
        """A folder by id or well-known name, None if there is none."""
        with self._lock:
            return self.tree.resolve(name_or_id)

    def folder(self, name_or_id: str) -> Folder:
        """A folder by id or well-known name; KeyError if there is none."""
        found = self.find_folder(name_or_id)
        if found is None:
            raise KeyError(name_or_id)
        return found

    def folder_messages(self, folder: Folder | str) -> list[Message]:
        """A folder's messages sorted by (receivedDateTime, id); a search folder's view."""
        with self._lock:
            return self._contents(self._as_folder(folder)).as_list()

    def folder_ids(self, folder: Folder | str) -> set[str]:
        return {m.id for m in self.folder_messages(folder)}

    def all_folders(self) -> list[Folder]:
        """Every folder below the root, parents first."""
        with self._lock:
            return list(self.tree.walk())[1:]

    def child_folders(self, parent: Folder, *, include_hidden: bool) -> list[Folder]:
        with self._lock:
            return self.tree.children(parent.id, include_hidden=include_hidden)

    def shows(self, folder: Folder, message: Message) -> bool:
        """Does ``folder`` list ``message`` (as its own mail, or as a search folder's view)?"""
        with self._lock:
            if folder.search is None:
                return message.parentFolderId == folder.id
            wanted = not (folder.search.unread_only and message.isRead)
            return wanted and message.parentFolderId in self.tree.search_sources(folder)

    def counts(self, folder: Folder) -> tuple[int, int]:
        """(totalItemCount, unreadItemCount) of a folder."""
        with self._lock:
            contents = self._contents(folder)
            return len(contents), contents.unread

    def page(
        self,
        low_ts: int | None,
        high_ts: int | None,
        *,
        skip: int,
        top: int,
        desc: bool,
        folder: Folder | None = None,
    ) -> tuple[list[Message], int]:
        """A page of a folder's listing (default: all real folders) and the set's size."""
        with self._lock:
            contents = self._all if folder is None else self._contents(folder)
            return contents.page(low_ts, high_ts, skip=skip, top=top, desc=desc)

    def _as_folder(self, folder: Folder | str) -> Folder:
        return self.folder(folder) if isinstance(folder, str) else folder

    def _contents(self, folder: Folder) -> SortedMessages:
        if not folder.is_search:
            return self._folders[folder.id]
        cached = self._search_views.get(folder.id)
        if cached is None or cached[0] != self.log.seq:
            assert folder.search is not None
            sources = self.tree.search_sources(folder)
            unread_only = folder.search.unread_only
            view = SortedMessages(
                m
                for source in sources
                for m in self._folders[source]
                if not (unread_only and m.isRead)
            )
            cached = self._search_views[folder.id] = (self.log.seq, view)
        return cached[1]

    # -- delta

    def delta_snapshot(
        self, folder: Folder, since: int | None
    ) -> tuple[int, list[tuple[str, bool]]]:
        """A delta round's content at this instant: the log's sequence number and the
        entries ``(message id, removed)``. From scratch (``since`` None), every message in
        the folder, newest first; else what changed in it after ``since``."""
        with self._lock:
            seq = self.log.seq
            if since is None:
                contents = self._folders[folder.id]
                return seq, [(m.id, False) for m in reversed(contents.as_list())]
            if since > seq:
                raise ValueError(f"sequence {since} is in the future (latest: {seq})")
            delta = self.log.folder_delta(folder.id, since, seq)
            return seq, [(i, True) for i in delta.removed] + [(i, False) for i in delta.present]

    # -- publishing changes (every one is logged)

    def _tick(self) -> tuple[int, str]:
        """The next change's sequence number and lastModifiedDateTime."""
        self._clock = max(self._clock, self._newest_ts) + 1
        return self.log.seq + 1, iso(self._clock)

    def _insert(self, message: Message) -> None:
        self._all.insert(message)
        self._folders[message.parentFolderId].insert(message)
        self._by_id[message.id] = message
        self.log.record(message.id, None, message.parentFolderId)

    def _drop(self, message: Message) -> None:
        self._all.remove([message])
        self._folders[message.parentFolderId].remove([message])
        del self._by_id[message.id]
        self.renderings.forget(message.id)
        self.deleted_ids.add(message.id)
        self.log.record(message.id, message.parentFolderId, None)

    def _update(self, old: Message, **changes: Any) -> Message:
        """Publish a new version of ``old`` (possibly in another folder)."""
        seq, now = self._tick()
        new = dataclasses.replace(
            old, **changes, changeKey=change_key(old.id, seq), lastModifiedDateTime=now
        )
        self._all.replace(new)
        if new.parentFolderId != old.parentFolderId:
            self._folders[old.parentFolderId].remove([old])
            self._folders[new.parentFolderId].insert(new)
        else:
            self._folders[new.parentFolderId].replace(new)
        self._by_id[new.id] = new
        self.log.record(new.id, old.parentFolderId, new.parentFolderId)
        return new

    def _real_folder(self, name_or_id: str | None) -> Folder:
        folder = self.folder(self.folder_id if name_or_id is None else name_or_id)
        if folder.is_search:
            raise ValueError(f"{folder.display_name!r} is a search folder: it holds no mail")
        return folder

    def _existing(self, ids: Iterable[str]) -> list[Message]:
        return [self._by_id[i] for i in dict.fromkeys(ids) if i in self._by_id]

    # -- mutating: messages

    def pick(
        self,
        count: int,
        folder: str | None = None,
        where: Callable[[Message], bool] | None = None,
    ) -> list[str]:
        """``count`` message ids spread over a folder's range (default: every real folder),
        one per equal stratum, deterministically. Spreading matters: deletions before a
        pager's offset are what shift later messages into pages it has already fetched."""
        with self._lock:
            pool = self._all if folder is None else self._contents(self.folder(folder))
            candidates = [m for m in pool if where is None or where(m)]
            total = len(candidates)
            count = min(count, total)
            picks = [
                k * total // count + int(self._rng.random() * (total // count))
                for k in range(count)
            ]
            return [candidates[i].id for i in picks]

    def add_messages(self, count: int, folder: str | None = None) -> list[Message]:
        """``count`` new messages in ``folder`` (default: the mailbox's default folder), each
        received a few seconds after the newest one."""
        with self._lock:
            target = self._real_folder(folder)
            added = []
            for _ in range(count):
                self._newest_ts += 1 + int(self._rng.random() * 5)
                received = datetime.fromtimestamp(self._newest_ts, UTC)
                message = new_message(
                    self.user, self._next_index, received, self._rng, seed=self.seed
                )
                file_into(message, target.id, ROLES.get(target.well_known or ""), self.user)
                self._next_index += 1
                self._insert(message)
                self.added_ids.add(message.id)
                added.append(message)
            return added

    def delete_messages(self, count: int, folder: str | None = None) -> list[str]:
        """Delete ``count`` messages spread over a folder (default: the whole mailbox)."""
        with self._lock:
            return self.delete(self.pick(count, folder))

    def delete(self, ids: Iterable[str]) -> list[str]:
        """Hard-delete these messages (unknown ids are ignored); the ids deleted, sorted."""
        with self._lock:
            doomed = self._existing(ids)
            for message in doomed:
                self._drop(message)
            return sorted(m.id for m in doomed)

    def move_messages(self, count: int, source: str, destination: str) -> list[str]:
        with self._lock:
            return self.move(self.pick(count, source), destination)

    def move(self, ids: Iterable[str], destination: str) -> list[str]:
        """Move messages into ``destination``; each keeps its (immutable) id."""
        with self._lock:
            target = self._real_folder(destination)
            moving = [m for m in self._existing(ids) if m.parentFolderId != target.id]
            for message in moving:  # a moved message stays what it was (draft or not)
                self._update(message, parentFolderId=target.id)
            return [m.id for m in moving]

    def mark_read(self, count: int, folder: str | None = None, *, read: bool = True) -> list[str]:
        """Mark ``count`` messages that are not yet so as read (or unread)."""
        with self._lock:
            return self.set_read(self.pick(count, folder, lambda m: m.isRead != read), read)

    def set_read(self, ids: Iterable[str], read: bool = True) -> list[str]:
        return self._set(ids, "isRead", read)

    def set_importance(self, ids: Iterable[str], importance: str) -> list[str]:
        if importance not in IMPORTANCE_VALUES:
            raise ValueError(f"importance must be one of {IMPORTANCE_VALUES}")
        return self._set(ids, "importance", importance)

    def set_categories(self, ids: Iterable[str], categories: Sequence[str]) -> list[str]:
        return self._set(ids, "categories", tuple(categories))

    def attach(
        self,
        message_id: str,
        attachments: Sequence[dict[str, Any]],
        *,
        has_attachments: bool | None = None,
        body_extra: str | None = None,
        replace: bool = False,
    ) -> Message:
        """Add attachments to a message (as a new version of it): each a dict with the
        Graph fields (id, name, contentType, size, isInline) and its content as
        mailsync.simulator.attachments.content_of reads it (_kind, _key, _length); ``replace``:
        instead of the message's own."""
        with self._lock:
            old = self._by_id[message_id]
            kept = [] if replace else old.attachments
            changes: dict[str, Any] = {"attachments": [*kept, *map(dict, attachments)]}
            changes["hasAttachments"] = (
                old.hasAttachments if has_attachments is None else has_attachments
            )
            if body_extra is not None:
                changes["body_extra"] = body_extra
            return self._update(old, **changes)

    def _set(self, ids: Iterable[str], name: str, value: Any) -> list[str]:
        """Set one property; the ids of the messages it really changed."""
        with self._lock:
            changing = [m for m in self._existing(ids) if getattr(m, name) != value]
            for message in changing:
                self._update(message, **{name: value})
            return [m.id for m in changing]

    def edit_drafts(self, ids: Iterable[str], subject: str | None = None) -> list[str]:
        """Change drafts' subject and body, as a user writing them does. Graph only lets
        drafts change so; editing a sent or received message is refused (ValueError)."""
        with self._lock:
            drafts = self._existing(ids)
            if not all(m.isDraft for m in drafts):
                raise ValueError("only drafts can have their subject and body edited")
            for message in drafts:
                first, count = message.body_span
                span = ((first + 1) % corpus.POOL_SIZE, count)
                self._update(
                    message,
                    subject=subject if subject is not None else f"{message.subject} (edited)",
                    body_span=span,
                    bodyPreview=corpus.PARA_TEXT[span[0]][:100],
                )
            return [m.id for m in drafts]

    def mutate(self, add: int, delete: int, folder: str | None = None) -> None:
        """Delete ``delete`` messages from ``folder`` (default: anywhere), then add ``add``
        to it (default: the default folder)."""
        with self._lock:
            if delete:
                self.delete_messages(delete, folder)
            if add:
                self.add_messages(add, folder)

    # -- mutating: folders

    def add_folder(self, name: str, parent: str = ROOT, *, hidden: bool = False) -> Folder:
        with self._lock:
            folder = self.tree.add(name, self.folder(parent).id, hidden=hidden)
            self._folders[folder.id] = SortedMessages()
            self.folder_log.append((len(self.folder_log) + 1, folder.id, False))
            return folder

    def delete_folder(self, folder: str) -> list[str]:
        """Delete a folder, its subfolders and all their messages; the message ids deleted."""
        with self._lock:
            target = self.folder(folder)
            if target.well_known is not None:
                raise ValueError(f"{target.display_name!r} is a well-known folder: not deletable")
            real = [f for f in self.tree.walk(target.id) if not f.is_search]
            deleted = self.delete(m.id for f in real for m in self._folders[f.id])
            for gone in self.tree.remove(target.id):
                self._folders.pop(gone.id, None)
                self._search_views.pop(gone.id, None)
                self.folder_log.append((len(self.folder_log) + 1, gone.id, True))
            return deleted

    # -- describing

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "user": self.user,
                "id": self.user_id,
                "folder": self.default_folder_name,
                "folder_id": self.folder_id,
                "seed": self.seed,
                "count": len(self._all),
                "initial_count": len(self.initial_ids),
                "added": len(self.added_ids),
                "deleted": len(self.deleted_ids),
                "folders": sum(1 for _ in self.tree.walk()) - 1,
                "seq": self.log.seq,
            }
