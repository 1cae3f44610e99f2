"""A message's attachments on Graph: their metadata, then each one's bytes, streamed.

Never from a delta page (``$expand`` there has carried every attachment's base64 content,
docs-contrib#8431) and never as ``contentBytes`` (base64 in JSON: a third larger, and whole
in memory). Research notes: /work/shared/research/attachments-and-batching.md §1.

- the list asks for metadata only (``$select``); every item still carries its
  ``@odata.type``, which says what the content is;
- a ``fileAttachment``'s ``$value`` is its raw bytes, an ``itemAttachment``'s is its MIME
  (a message as .eml, an event as .ics, a contact as .vcf);
- a ``referenceAttachment`` is a link to a cloud file: Graph answers 405 to its ``$value``,
  so it is metadata only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from mailsync.errors import BadDataError
from mailsync.graph.client import GraphClient

LIST_SELECT = "id,name,contentType,size,isInline,lastModifiedDateTime,contentId"
KINDS = {
    "#microsoft.graph.fileAttachment": "file",
    "#microsoft.graph.itemAttachment": "item",
    "#microsoft.graph.referenceAttachment": "reference",
}
T = TypeVar("T")


@dataclass(frozen=True)
class ListedAttachment:
    """One attachment as the list names it (``graph_size`` is Graph's ``size``, which is
    not the byte count: docs-contrib#4601)."""

    graph_attachment_id: str
    kind: str  # file, item, reference
    name: str | None
    content_type: str | None
    graph_size: int | None
    is_inline: bool
    content_id: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "graph_attachment_id": self.graph_attachment_id,
            "kind": self.kind,
            "name": self.name,
            "content_type": self.content_type,
            "graph_size": self.graph_size,
            "is_inline": self.is_inline,
            "content_id": self.content_id,
        }


def message_url(graph: GraphClient, mailbox: str, message_id: str) -> str:
    # Ids may hold '+', '/' and '=': unencoded they answer ErrorInvalidIdMalformed.
    return f"{graph.user_url(mailbox)}/messages/{quote(message_id, safe='')}"


def parse_attachment(raw: Any) -> ListedAttachment:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
        raise BadDataError("an attachment in Graph's list has no id")
    kind = KINDS.get(str(raw.get("@odata.type")))
    if kind is None:
        raise BadDataError(f"attachment {raw['id'][:20]}: unknown @odata.type")
    size = raw.get("size")
    return ListedAttachment(
        graph_attachment_id=raw["id"],
        kind=kind,
        name=raw.get("name") if isinstance(raw.get("name"), str) else None,
        content_type=raw.get("contentType") if isinstance(raw.get("contentType"), str) else None,
        graph_size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        is_inline=raw.get("isInline") is True,
        content_id=raw.get("contentId") if isinstance(raw.get("contentId"), str) else None,
    )


def list_attachments(graph: GraphClient, mailbox: str, message_id: str) -> list[ListedAttachment]:
    """Every attachment of the message, metadata only, following nextLinks."""
    url: str | None = f"{message_url(graph, mailbox, message_id)}/attachments"
    params: dict[str, str] | None = {"$select": LIST_SELECT}
    found: list[ListedAttachment] = []
    while url is not None:
        body = graph.get_json(url, params)
        value = body.get("value")
        if not isinstance(value, list):
            raise BadDataError("Graph's attachment list has no 'value' list")
        found.extend(parse_attachment(raw) for raw in value)
        url, params = graph.link(body), None
    return found


def download(
    graph: GraphClient,
    mailbox: str,
    message_id: str,
    attachment_id: str,
    consume: Callable[[Iterator[bytes]], T],
) -> T:
    """The attachment's ``$value``, streamed into ``consume`` (see GraphClient.download)."""
    url = (
        f"{message_url(graph, mailbox, message_id)}/attachments/"
        f"{quote(attachment_id, safe='')}/$value"
    )
    return graph.download(url, consume)
