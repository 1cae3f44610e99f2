"""The simulated mailboxes: one user's messages, kept sorted, and the mutations tests apply.

Thread-safe: the HTTP server answers requests on many threads while a test mutates.
"""

from __future__ import annotations

import bisect
import random
import threading
from datetime import UTC, datetime
from typing import Any

from mailsync.simulator.faults import Faults
from mailsync.simulator.generator import (
    DEFAULT_START,
    WELL_KNOWN_FOLDERS,
    Message,
    folder_id_for,
    generate_messages,
    new_message,
    user_id_for,
)
from mailsync.simulator.render import RenderCache


class Mailbox:
    """One user's folder of messages, kept sorted by (receivedDateTime, id); thread-safe."""

    def __init__(
        self,
        user: str,
        count: int,
        *,
        seed: int = 0,
        folder: str = "inbox",
        start: datetime = DEFAULT_START,
    ) -> None:
        self.user = user
        self.user_id = user_id_for(user)
        self.seed = seed
        self.folder = folder.lower()
        self.folder_id = folder_id_for(user, folder)
        self.display_name = WELL_KNOWN_FOLDERS.get(self.folder, folder)
        self._lock = threading.RLock()
        self._messages = generate_messages(
            count, seed=seed, start=start, mailbox=user, folder_id=self.folder_id
        )
        self._ts = [m.received_ts for m in self._messages]  # parallel list, for bisect
        # New mail arrives after anything ever received, even if the newest was deleted since:
        # a client whose cursor passed a deleted message must still see what comes later.
        self._newest_ts = self._ts[-1] if self._ts else int(start.timestamp())
        self._by_id = {m.id: m for m in self._messages}
        self._unread = sum(not m.isRead for m in self._messages)
        self.initial_ids: frozenset[str] = frozenset(self._by_id)
        self.added_ids: set[str] = set()
        self.deleted_ids: set[str] = set()
        self._next_index = count
        self._rng = random.Random(f"{user}\x00{seed}\x00mutations")  # deterministic mutations
        self.renderings = RenderCache()
        self._mutation_epoch = 0
        self._pages_since_mutation = 0

    # -- reading

    def __len__(self) -> int:
        return len(self._messages)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._by_id)

    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def get(self, message_id: str) -> Message | None:
        return self._by_id.get(message_id)

    @property
    def unread_count(self) -> int:
        return self._unread

    def window(self, low_ts: int | None, high_ts: int | None) -> tuple[int, int]:
        """Index range [lo, hi) of messages with low_ts <= receivedDateTime <= high_ts."""
        lo = 0 if low_ts is None else bisect.bisect_left(self._ts, low_ts)
        hi = len(self._ts) if high_ts is None else bisect.bisect_right(self._ts, high_ts)
        return lo, max(lo, hi)

    def page(
        self, low_ts: int | None, high_ts: int | None, *, skip: int, top: int, desc: bool
    ) -> tuple[list[Message], int]:
        """The page at offset ``skip`` of the filtered, ordered set, and the set's size."""
        with self._lock:
            lo, hi = self.window(low_ts, high_ts)
            if desc:
                end = hi - skip
                chunk = self._messages[max(lo, end - top) : end] if end > lo else []
                chunk.reverse()
            else:
                chunk = self._messages[lo + skip : min(hi, lo + skip + top)]
            return chunk, hi - lo

    # -- mutating

    def add_messages(self, count: int) -> list[Message]:
        """``count`` new messages, each received a few seconds after the newest one."""
        with self._lock:
            added = []
            newest = self._newest_ts
            for _ in range(count):
                newest += 1 + int(self._rng.random() * 5)
                self._newest_ts = newest
                received = datetime.fromtimestamp(newest, UTC)
                message = new_message(
                    self.user,
                    self._next_index,
                    received,
                    self._rng,
                    seed=self.seed,
                    folder_id=self.folder_id,
                )
                self._next_index += 1
                self._messages.append(message)  # strictly newest: the order stays sorted
                self._ts.append(newest)
                self._by_id[message.id] = message
                self._unread += not message.isRead
                self.added_ids.add(message.id)
                added.append(message)
            return added

    def delete_messages(self, count: int) -> list[str]:
        """Delete ``count`` messages spread over the whole range: one per equal stratum.

        Spreading matters: deletions before a pager's offset are what shift later messages
        into pages it has already fetched.
        """
        with self._lock:
            total = len(self._messages)
            count = min(count, total)
            picks = [
                k * total // count + int(self._rng.random() * (total // count))
                for k in range(count)
            ]
            return self.delete([self._messages[i].id for i in picks])

    def delete(self, ids: list[str]) -> list[str]:
        with self._lock:
            doomed = {i for i in ids if i in self._by_id}
            if doomed:
                keep = [m for m in self._messages if m.id not in doomed]
                self._messages = keep
                self._ts = [m.received_ts for m in keep]
                for message_id in doomed:
                    self._unread -= not self._by_id.pop(message_id).isRead
                    self.renderings.forget(message_id)
                self.deleted_ids |= doomed
            return sorted(doomed)

    def mutate(self, add: int, delete: int) -> None:
        with self._lock:
            if delete:
                self.delete_messages(delete)
            if add:
                self.add_messages(add)

    def count_page(self, faults: Faults) -> None:
        """Count one served page; every ``mutate_every_pages`` pages, mutate."""
        every = faults.mutate_every_pages
        if every <= 0:
            return
        with self._lock:
            epoch = faults.mutation_epoch
            if epoch != self._mutation_epoch:  # the fault was (re)set: count from zero
                self._mutation_epoch = epoch
                self._pages_since_mutation = 0
            self._pages_since_mutation += 1
            if self._pages_since_mutation >= every:
                self._pages_since_mutation = 0
                self.mutate(faults.add_per_mutation, faults.delete_per_mutation)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                "user": self.user,
                "id": self.user_id,
                "folder": self.folder,
                "folder_id": self.folder_id,
                "seed": self.seed,
                "count": len(self._messages),
                "initial_count": len(self.initial_ids),
                "added": len(self.added_ids),
                "deleted": len(self.deleted_ids),
            }
