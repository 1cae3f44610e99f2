"""Attachments with real, deterministic bytes: ``…/messages/{id}/attachments`` (metadata) and
``…/attachments/{id}/$value`` (the content, streamed), with their faults.

Everything derives from the attachment's id (and, for an attachment added by a test, from
what the test asked for), so a test computes the exact bytes, and their SHA-256, from
``content_of`` without asking the server. Content is generated 1 MiB at a time as it is
sent: a 100 MB attachment is never held in memory.

Of the generated attachments (mailsync.simulator.generator), by a hash of the id: about 1 in
10 is an item attachment (its ``$value`` a small MIME message), 1 in 20 a reference
attachment (metadata only: ``$value`` answers 405, as Graph does), and 1 in 5 of the rest
carries one of ``SHARED_CONTENTS`` contents (a logo on many messages: deduplication).
Graph's ``size`` (generated) is not the byte count, as on Graph (docs-contrib#4601).

Faults (``AttachmentFaults``, in-process): an attachment that answers 404 forever, one that
answers 503 a given number of times then serves, and ``expand_ignores_select``: a
``$expand=attachments(...)`` on delta that ignores its nested ``$select`` and carries every
attachment's base64 content (docs-contrib#8431). ``expand_requests`` counts requests that
asked for ``$expand`` at all.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from mailsync.simulator.generator import Message
from mailsync.simulator.wire import GraphFailure, Request, Response, item_not_found, json_response

CHUNK = 1 << 20
_NESTED_SELECT = re.compile(r"\(\s*\$select\s*=[^)]*\)", re.IGNORECASE)
SHARED_CONTENTS = 4
ODATA_TYPES = {
    "file": "#microsoft.graph.fileAttachment",
    "item": "#microsoft.graph.itemAttachment",
    "reference": "#microsoft.graph.referenceAttachment",
}


@dataclass(frozen=True)
class Content:
    """What an attachment's ``$value`` is: its kind, the key its bytes derive from, its
    length in bytes (0 for a reference)."""

    kind: str
    key: str
    length: int


def content_of(attachment: dict[str, Any]) -> Content:
    """The attachment's content: as a test asked (``_kind``, ``_key``, ``_length``), else
    derived from its id."""
    if "_kind" in attachment:
        return Content(attachment["_kind"], attachment["_key"], int(attachment["_length"]))
    digest = hashlib.sha256(str(attachment["id"]).encode()).digest()
    roll = digest[0] / 256
    if roll < 0.05:
        return Content("reference", "", 0)
    if roll < 0.15:
        return Content("item", str(attachment["id"]), 0)  # length: the MIME's own
    if digest[1] < 256 // 5:
        shared = digest[2] % SHARED_CONTENTS
        return Content("file", f"shared-{shared}", 2_000 + 3_000 * shared)
    # 256 B to 256 KB, log-uniform: mostly small, a few large.
    length = int(256 * 2 ** (10 * int.from_bytes(digest[3:5], "big") / 65536))
    return Content("file", str(attachment["id"]), length)


def _item_mime(key: str) -> bytes:
    """An item attachment's ``$value``: a small message, as MIME."""
    token = hashlib.sha256(key.encode()).hexdigest()
    return (
        f"MIME-Version: 1.0\r\nMessage-ID: <{token[:24]}@contoso.example>\r\n"
        f"Subject: Forwarded item {token[:8]}\r\nFrom: Ada <ada@contoso.example>\r\n"
        f'Content-Type: text/plain; charset="utf-8"\r\n\r\nThe attached item {token}.\r\n'
    ).encode()


def content_chunks(content: Content) -> Iterator[bytes]:
    """The content's bytes, at most ``CHUNK`` at a time, generated as they are read."""
    if content.kind == "item":
        yield _item_mime(content.key)
        return
    for index, start in enumerate(range(0, content.length, CHUNK)):
        size = min(CHUNK, content.length - start)
        yield random.Random(f"{content.key}:{index}").randbytes(size)


def content_length(content: Content) -> int:
    return len(_item_mime(content.key)) if content.kind == "item" else content.length


def content_sha256(content: Content) -> str:
    """What a sync must store for it (lower-case hex)."""
    digest = hashlib.sha256()
    for chunk in content_chunks(content):
        digest.update(chunk)
    return digest.hexdigest()


def content_id(attachment: dict[str, Any]) -> str | None:
    return f"{str(attachment['id'])[-12:]}@contoso.example" if attachment.get("isInline") else None


def attachment_json(attachment: dict[str, Any], with_content: bool = False) -> dict[str, Any]:
    """An attachment as the list sends it (``with_content``: and its contentBytes, which
    only the expand fault sends)."""
    content = content_of(attachment)
    out: dict[str, Any] = {
        "@odata.type": ODATA_TYPES[content.kind],
        "id": attachment["id"],
        "lastModifiedDateTime": "2024-01-01T00:00:00Z",
        "name": attachment["name"],
        "contentType": None if content.kind == "item" else attachment["contentType"],
        "size": attachment["size"],
        "isInline": attachment["isInline"],
        "contentId": content_id(attachment),
    }
    if with_content and content.kind == "file":
        out["contentBytes"] = base64.b64encode(b"".join(content_chunks(content))).decode()
    return out


@dataclass
class AttachmentFaults:
    not_found: set[str] = field(default_factory=set)  # attachment ids: 404 forever
    unavailable: dict[str, int] = field(default_factory=dict)  # id: 503s left before serving
    expand_ignores_select: bool = False
    # Every $value request after the Nth waits until release_held() (a kill lands there).
    hold_values_after: int | None = None
    hold_timeout_s: float = 120.0
    # Counters, not switches:
    expand_requests: int = 0
    value_requests: dict[str, int] = field(default_factory=dict)  # $value asked, by id
    list_requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _hold: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _values_seen: int = field(default=0, repr=False)
    _held_now: int = field(default=0, repr=False)

    def hold_point(self) -> None:
        """Where a $value request waits while ``hold_values_after`` holds it."""
        with self._hold:
            if self.hold_values_after is None:
                return
            self._values_seen += 1
            if self._values_seen <= self.hold_values_after:
                return
            self._held_now += 1
            self._hold.notify_all()
            try:
                self._hold.wait_for(lambda: self.hold_values_after is None, self.hold_timeout_s)
            finally:
                self._held_now -= 1

    def wait_held(self, timeout_s: float) -> bool:
        """True once a $value request is held."""
        with self._hold:
            return self._hold.wait_for(lambda: self._held_now > 0, timeout_s)

    def release_held(self) -> None:
        """Answer every held request, and hold no more."""
        with self._hold:
            self.hold_values_after = None
            self._hold.notify_all()

    def observe(self, request: Request) -> None:
        """Count a Graph request that asks for ``$expand``, whatever it is for; with
        ``expand_ignores_select``, a delta request's nested ``$select`` is dropped, so its
        page carries every attachment whole (contentBytes: Graph's default)."""
        pairs = parse_qsl(request.query, keep_blank_values=True)
        if not any(k.lower() == "$expand" for k, _ in pairs):
            return
        with self._lock:
            self.expand_requests += 1
        if self.expand_ignores_select and request.path.lower().endswith("/delta"):
            kept = [
                (k, _NESTED_SELECT.sub("", v) if k.lower() == "$expand" else v) for k, v in pairs
            ]
            request.query = urlencode(kept)

    def on_value(self, attachment_id: str) -> None:
        with self._lock:
            self.value_requests[attachment_id] = self.value_requests.get(attachment_id, 0) + 1
            if attachment_id in self.not_found:
                raise item_not_found()
            left = self.unavailable.get(attachment_id, 0)
            if left > 0:
                self.unavailable[attachment_id] = left - 1
                raise GraphFailure(503, "ServiceUnavailable", "The service is unavailable.")


def _find(message: Message, attachment_id: str) -> dict[str, Any]:
    for attachment in message.attachments:
        if attachment["id"] == attachment_id:
            return attachment
    raise item_not_found()


def route(
    faults: AttachmentFaults, message: Message, rest: list[str], request: Request
) -> Response:
    """``rest``: the path after ``…/messages/{id}/attachments``."""
    if not rest:
        with faults._lock:
            faults.list_requests += 1
        value = [attachment_json(a) for a in message.attachments]
        return json_response(200, {"value": value})
    attachment = _find(message, rest[0])
    if len(rest) == 1:
        return json_response(200, attachment_json(attachment))
    if len(rest) != 2 or rest[1].lower() != "$value":
        raise GraphFailure(400, "BadRequest", f"Resource not found for '{'/'.join(rest)}'.")
    faults.on_value(rest[0])
    faults.hold_point()
    content = content_of(attachment)
    if content.kind == "reference":
        raise GraphFailure(405, "ErrorInvalidRequest", "$value is not supported here.")
    kind = "message/rfc822" if content.kind == "item" else str(attachment["contentType"])
    return Response(
        200,
        b"",
        {"Content-Type": kind},
        stream=content_chunks(content),
        length=content_length(content),
    )
