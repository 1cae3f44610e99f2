"""Messages kept in (receivedDateTime, id) order, with Graph's listing window and paging.

One per folder and one for the whole mailbox. Not thread-safe on its own: the owning
``Mailbox`` serializes access.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from mailsync.simulator.generator import Message

_REBUILD_AT = 64  # removing more ids than this at once: rebuild instead of deleting in place


class SortedMessages:
    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._messages = sorted(messages, key=lambda m: (m.received_ts, m.id))
        self._ts = [m.received_ts for m in self._messages]  # parallel list, for bisect
        self.unread = sum(not m.isRead for m in self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._messages)

    def as_list(self) -> list[Message]:
        return list(self._messages)

    def window(self, low_ts: int | None, high_ts: int | None) -> tuple[int, int]:
        """Index range [lo, hi) of messages with low_ts <= receivedDateTime <= high_ts."""
        lo = 0 if low_ts is None else bisect.bisect_left(self._ts, low_ts)
        hi = len(self._ts) if high_ts is None else bisect.bisect_right(self._ts, high_ts)
        return lo, max(lo, hi)

    def page(
        self, low_ts: int | None, high_ts: int | None, *, skip: int, top: int, desc: bool
    ) -> tuple[list[Message], int]:
        """The page at offset ``skip`` of the filtered, ordered set, and the set's size."""
        lo, hi = self.window(low_ts, high_ts)
        if desc:
            end = hi - skip
            chunk = self._messages[max(lo, end - top) : end] if end > lo else []
            chunk.reverse()
        else:
            chunk = self._messages[lo + skip : min(hi, lo + skip + top)]
        return chunk, hi - lo

    def _index(self, message: Message) -> int:
        """Where ``message``'s sort key is (or would go)."""
        lo = bisect.bisect_left(self._ts, message.received_ts)
        hi = bisect.bisect_right(self._ts, message.received_ts, lo)
        while lo < hi and self._messages[lo].id < message.id:  # ties: ordered by id
            lo += 1
        return lo

    def insert(self, message: Message) -> None:
        at = self._index(message)
        self._messages.insert(at, message)
        self._ts.insert(at, message.received_ts)
        self.unread += not message.isRead

    def replace(self, message: Message) -> None:
        """Swap in a new version of a message already here (same sort key)."""
        at = self._index(message)
        old = self._messages[at]
        if old.id != message.id:
            raise KeyError(message.id)
        self._messages[at] = message
        self.unread += old.isRead - message.isRead

    def remove(self, messages: list[Message]) -> None:
        if len(messages) > _REBUILD_AT:
            doomed = {m.id for m in messages}
            keep = [m for m in self._messages if m.id not in doomed]
            if len(keep) != len(self._messages) - len(doomed):
                raise KeyError("some messages to remove are not here")
            self._messages = keep
            self._ts = [m.received_ts for m in keep]
        else:
            for message in messages:
                at = self._index(message)
                if at >= len(self._messages) or self._messages[at].id != message.id:
                    raise KeyError(message.id)
                del self._messages[at]
                del self._ts[at]
        self.unread -= sum(not m.isRead for m in messages)
