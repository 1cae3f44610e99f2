"""Which messages of a page are marked for an attachment listing (mailsync.sync.ingest)."""

from __future__ import annotations

from typing import Any

from mailsync.graph.messages import EmailRecord, parse_message
from mailsync.sync.ingest import may_have_attachments


def message(graph_id: str, *, has: bool = False, body: str = "", kind: str = "html") -> EmailRecord:
    raw: dict[str, Any] = {
        "id": graph_id,
        "receivedDateTime": "2026-12-07T06:00:00Z",
        "hasAttachments": has,
        "body": {"contentType": kind, "content": body},
    }
    return parse_message(raw)


def test_attachments_flagged_or_an_html_body_naming_a_cid_part_in_any_case() -> None:
    page = [
        message("flagged", has=True),
        message("inline", body='<img src="cid:image001.png@01DA">'),
        message("upper", body='<IMG SRC="CID:logo">'),
        message("mixed", body='<p>Grüße 👋</p><img src="Cid:x">'),  # not ASCII, mixed case
        message("dotted", body='<img src="cİd:x">'),  # İ lowercases to i + a combining dot
        message("plain", body="<p>no parts here</p>"),
        message("text", body="see cid:x", kind="text"),  # only html bodies reference parts
        message("empty", body=""),
        message("flagged", has=True),  # twice in a page: listed once
    ]
    assert may_have_attachments(page) == ["flagged", "inline", "upper", "mixed"]
