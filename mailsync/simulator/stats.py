"""Request statistics, so tests can assert what a sync cost: requests by status and by kind.

Kinds (``request_kind``): ``user``, ``folders`` (a folder list: mailFolders or
childFolders), ``folder`` (one folder), ``messages`` (a message listing), ``count`` (a
listing with ``$count=true``), ``message`` (one message), ``delta`` (a delta page
request), ``folder_delta`` (``mailFolders/delta``), ``batch`` (a ``$batch`` envelope),
``other``. Every /v1.0 request counts under its kind whatever its status (a 429
costs a request too); ``message_pages`` and ``delta_pages`` count pages actually served.
Admin requests under /_sim are not counted at all. A ``$batch`` is one request (kind
``batch``); its items are counted apart, by kind, in ``batch_items`` (a throttled item in
``throttled`` too), as Graph counts them against the mailbox.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qsl


def request_kind(segments: list[str], query: str) -> str:
    """The kind of a Graph request, from the path segments after ``/v1.0/users/{user}``."""
    lowered = [s.lower() for s in segments]
    if not lowered:
        return "user"
    if lowered == ["mailfolders", "delta"]:
        return "folder_delta"
    if lowered[-1] == "delta":
        return "delta"
    if lowered[-1] in ("mailfolders", "childfolders"):
        return "folders"
    if lowered[-1] == "messages":
        options = {k.lower(): v.lower() for k, v in parse_qsl(query)}
        return "count" if options.get("$count") == "true" else "messages"
    if len(lowered) >= 2 and lowered[-2] == "messages":
        return "message"
    if len(lowered) >= 2 and lowered[-2] in ("mailfolders", "childfolders"):
        return "folder"
    return "other"


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_status: dict[int, int] = {}
            self.by_kind: dict[str, int] = {}
            self.token_requests = 0
            self.data_requests = 0  # every /v1.0 request
            self.message_pages = 0  # message-list responses actually served (incl. malformed)
            self.messages_served = 0
            self.delta_pages = 0  # delta pages actually served (incl. malformed)
            self.delta_items = 0  # full items in them
            self.delta_removed = 0  # @removed entries in them
            self.throttled = 0  # 429s of either kind
            self.batch_items: dict[str, int] = {}  # $batch items by kind

    def record(
        self, status: int, *, token: bool = False, data: bool = False, kind: str | None = None
    ) -> None:
        with self._lock:
            self.total += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if kind is not None:
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            self.token_requests += token
            self.data_requests += data
            self.throttled += status == 429

    def record_batch_item(self, status: int, kind: str) -> None:
        with self._lock:
            self.batch_items[kind] = self.batch_items.get(kind, 0) + 1
            self.throttled += status == 429

    def record_page(self, messages: int) -> None:
        with self._lock:
            self.message_pages += 1
            self.messages_served += messages

    def record_delta_page(self, items: int, removed: int) -> None:
        with self._lock:
            self.delta_pages += 1
            self.delta_items += items
            self.delta_removed += removed

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "by_kind": dict(sorted(self.by_kind.items())),
                "token_requests": self.token_requests,
                "data_requests": self.data_requests,
                "message_pages": self.message_pages,
                "messages_served": self.messages_served,
                "delta_pages": self.delta_pages,
                "delta_items": self.delta_items,
                "delta_removed": self.delta_removed,
                "throttled": self.throttled,
                "batch_items": dict(sorted(self.batch_items.items())),
            }
