"""A mailbox's change log: every change to a message, numbered, with where it was and is.

Delta rounds are computed from it. A round's deltaLink carries the sequence number at which
the round's snapshot was taken; the next round replays the log after that number, so a
change made while a client pages through a round is never lost: it was either in the round's
snapshot or comes after its sequence number.

Not thread-safe on its own: the owning ``Mailbox`` serializes access.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    message_id: str
    before: str | None  # the folder it was in before the change; None: it did not exist
    after: str | None  # the folder it is in after; None: deleted


@dataclass(frozen=True)
class FolderDelta:
    """What changed in one folder between two sequence numbers, collapsed per message."""

    present: list[str]  # added to, changed in or moved into the folder: send in full
    removed: list[str]  # in the folder at the start, not at the end: deleted or moved out


class ChangeLog:
    def __init__(self) -> None:
        self._changes: list[Change] = []  # _changes[i].seq == i + 1
        # Called with each change as it is recorded, under the mailbox's lock (the
        # simulated change notifications): a listener must only queue, never block.
        self.listeners: list[Callable[[Change], None]] = []

    @property
    def seq(self) -> int:
        """The number of the latest change (0 before any)."""
        return len(self._changes)

    def record(self, message_id: str, before: str | None, after: str | None) -> int:
        change = Change(len(self._changes) + 1, message_id, before, after)
        self._changes.append(change)
        for listener in self.listeners:
            listener(change)
        return change.seq

    def since(self, seq: int, until: int | None = None) -> list[Change]:
        """Changes numbered ``seq < n <= until`` (default: up to the latest)."""
        return self._changes[seq : self.seq if until is None else until]

    def folder_delta(self, folder_id: str, since: int, until: int) -> FolderDelta:
        """Each message touched in ``(since, until]``, judged by where it was at ``since``
        and where it is at ``until``: a message added and deleted in between is not
        mentioned at all (it never was in the folder at either end)."""
        first_before: dict[str, str | None] = {}
        last: dict[str, Change] = {}
        for change in self.since(since, until):
            first_before.setdefault(change.message_id, change.before)
            last.pop(change.message_id, None)  # re-insert: ordered by latest change
            last[change.message_id] = change
        present: list[str] = []
        removed: list[str] = []
        for message_id, change in last.items():
            if change.after == folder_id:
                present.append(message_id)
            elif first_before[message_id] == folder_id:
                removed.append(message_id)
        return FolderDelta(present, removed)
