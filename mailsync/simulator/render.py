"""Messages as Graph JSON bytes, rendered once per (message version, shape) and cached.

Speed matters (the sync must be measurable, not the simulator): each message is rendered
once per select/expand shape, with its html body left out and spliced back in from the
corpus's pre-escaped paragraph blob, so a 1000-message page is a list join.

A cached rendering is keyed by message id and valid for one ``changeKey``: the store never
changes a ``Message`` in place, it replaces it with a copy carrying a new changeKey, so a
rendering of an old version is never served as the new one.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from mailsync.simulator.attachments import ODATA_TYPES, content_of
from mailsync.simulator.attachments import attachment_json as full_attachment_json
from mailsync.simulator.generator import ATTACHMENT_FIELDS, Message
from mailsync.simulator.odata import Shape
from mailsync.simulator.wire import ENCODER

BODY_MARK = "\u2063mailsync-body\u2063"  # never occurs in generated data
_BODY_MARK_BYTES = ENCODER.encode(BODY_MARK).encode("utf-8")

# (json before the body content, json after) or (json, None) when the body is not selected
Rendered = tuple[bytes, bytes | None]


def render_message(message: Message, shape: Shape) -> Rendered:
    select, expand, attachment_fields = shape
    obj: dict[str, Any] = {"@odata.etag": f'W/"{message.changeKey}"'}
    obj.update(message.to_graph(select, body_content=BODY_MARK))
    if expand:
        obj["attachments"] = [attachment_json(a, attachment_fields) for a in message.attachments]
    has_body = "body" in obj
    # orjson writes the bytes ENCODER would (compact, raw UTF-8), in a third of the time:
    # the first page of a large mailbox is rendered while a sync waits for it.
    data = orjson.dumps(obj)
    if not has_body:
        return data, None
    head, tail = data.split(_BODY_MARK_BYTES)
    return head + b'"', b'"' + tail


def attachment_json(attachment: dict[str, Any], wanted: tuple[str, ...] | None) -> dict[str, Any]:
    # Graph types every attachment, and without a nested $select sends each file's whole
    # content as contentBytes (base64): what makes $expand on delta pages dangerous.
    out: dict[str, Any] = {"@odata.type": ODATA_TYPES[content_of(attachment).kind]}
    for name in ATTACHMENT_FIELDS:
        if wanted is None or name == "id" or name in wanted:
            out[name] = attachment[name]
    if wanted is None:
        full = full_attachment_json(attachment, with_content=True)
        if "contentBytes" in full:
            out["contentBytes"] = full["contentBytes"]
    return out


class RenderCache:
    """Renderings of one mailbox's messages, per shape."""

    def __init__(self) -> None:
        self._by_shape: dict[Shape, dict[str, tuple[str, Rendered]]] = {}
        self._lock = threading.Lock()

    def rendered(self, message: Message, shape: Shape) -> Rendered:
        cache = self._by_shape.get(shape)
        if cache is None:
            with self._lock:
                cache = self._by_shape.setdefault(shape, {})
        hit = cache.get(message.id)
        if hit is not None and hit[0] == message.changeKey:
            return hit[1]
        # Two threads may render the same version: harmless, the same bytes.
        rendered = render_message(message, shape)
        cache[message.id] = (message.changeKey, rendered)
        return rendered

    def json(self, message: Message, shape: Shape) -> bytes:
        head, tail = self.rendered(message, shape)
        return head if tail is None else head + message.body_json_fragment() + tail

    def append(self, parts: list[bytes], message: Message, shape: Shape) -> None:
        """Append the message's JSON to ``parts`` without joining it first."""
        head, tail = self.rendered(message, shape)
        parts.append(head)
        if tail is not None:
            parts.append(message.body_json_fragment())
            parts.append(tail)

    def forget(self, message_id: str) -> None:
        """Drop a removed message's renderings (memory only: stale ones are never served)."""
        for cache in list(self._by_shape.values()):
            cache.pop(message_id, None)
