"""Many GETs of one mailbox in one HTTP request: Graph's JSON ``$batch``.

What Graph promises (research notes ``attachments-and-batching.md`` §3, from Graph's
json-batching and throttling pages): at most 20 requests a batch, each with its own id and
a url relative to the batch's version; the envelope answers 200 and every item its own
status, headers and body, in any order (matched here by id); ``Prefer`` is per item (not
inherited from the envelope, not carried by links), so every item repeats it. Throttling
is per item: "requests in a batch are evaluated individually", a throttled item carries its
own ``Retry-After`` (possibly a decimal), and SDKs do not retry items: here the throttled
and 5xx items are sent again, in a new batch, after the longest Retry-After among them.

The limits. A batch is one HTTP request, but Outlook runs "up to four individual requests
from the batch at a time" against the mailbox and counts every item against its budget: so
the batch's lease (mailsync.graph.limits) holds ``min(items, 4)`` of the mailbox's 4
in-flight slots and takes one token per item. It is all of one mailbox's slots for a
batch of 4 or more, which is what Graph does with it, and nothing else of the mailbox is
sent meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from mailsync.errors import BadDataError, GraphError
from mailsync.graph.client import RETRY_STATUSES, GraphClient, whole_body

MAX_BATCH = 20  # Graph's limit of requests per batch
# An httpx request extension: the mailbox and item count a batch's lease is taken for
# (mailsync.graph.limits.LimitedTransport reads them; the batch's url names no mailbox).
BATCH_EXTENSION = "mailsync_batch"


@dataclass(frozen=True)
class BatchAnswer:
    """One item's answer: its status, and its JSON body (200) or the error it is."""

    status: int
    body: dict[str, Any] | None
    error: GraphError | None


def get_many(
    graph: GraphClient, mailbox: str, urls: dict[str, str], *, max_page_size: int | None = None
) -> dict[str, BatchAnswer]:
    """GET every link of ``urls`` (key → an absolute link of this Graph host), in batches of
    at most 20; each key's answer. Throttled and 5xx items are retried here, up to the
    client's ``max_retries`` times; what still fails is its answer's ``error``."""
    answers: dict[str, BatchAnswer] = {}
    keys = list(urls)
    for start in range(0, len(keys), MAX_BATCH):
        part = {key: urls[key] for key in keys[start : start + MAX_BATCH]}
        answers.update(_with_retries(graph, mailbox, part, max_page_size))
    return answers


def _with_retries(
    graph: GraphClient, mailbox: str, urls: dict[str, str], max_page_size: int | None
) -> dict[str, BatchAnswer]:
    answers: dict[str, BatchAnswer] = {}
    pending = dict(urls)
    for attempt in range(graph.max_retries + 1):
        got = _send(graph, mailbox, pending, max_page_size)
        answers.update(got)
        retry = {k: pending[k] for k, a in got.items() if a.status in RETRY_STATUSES}
        if not retry or attempt == graph.max_retries:
            break
        waits = [a.error.retry_after_s for k, a in got.items() if k in retry and a.error]
        longest = max((w for w in waits if w is not None), default=None)
        graph.sleep(graph.backoff(attempt, longest))
        pending = retry
    return answers


def _send(
    graph: GraphClient, mailbox: str, urls: dict[str, str], max_page_size: int | None
) -> dict[str, BatchAnswer]:
    prefer = 'IdType="ImmutableId"'
    if max_page_size is not None:
        prefer = f"odata.maxpagesize={max_page_size}, {prefer}"
    ids = {str(i): key for i, key in enumerate(urls, 1)}  # Graph's ids: short strings
    payload = {
        "requests": [
            {
                "id": i,
                "method": "GET",
                "url": graph.relative(urls[key]),
                "headers": {"Prefer": prefer},
            }
            for i, key in ids.items()
        ]
    }
    content = orjson.dumps(payload)
    extensions = {BATCH_EXTENSION: (mailbox, len(ids))}
    request = graph.http.build_request(
        "POST",
        f"{graph.base_url}/v1.0/$batch",
        content=content,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        extensions=extensions,
    )
    raw = graph.send(request, whole_body)
    envelope = graph.decode(raw)
    items = envelope.get("responses")
    if not isinstance(items, list):
        raise BadDataError("Graph's $batch answer has no 'responses' list")
    answers: dict[str, BatchAnswer] = {}
    for item in items:
        if not isinstance(item, dict) or item.get("id") not in ids:
            raise BadDataError("Graph's $batch answer has an item of no request of ours")
        answers[ids[item["id"]]] = _answer(graph, item)
    missing = set(ids.values()) - set(answers)
    if missing:
        raise BadDataError(f"Graph's $batch answer left out {len(missing)} of its requests")
    return answers


def _answer(graph: GraphClient, item: dict[str, Any]) -> BatchAnswer:
    status, body = item.get("status"), item.get("body")
    if not isinstance(status, int):
        raise BadDataError("a $batch item has no status")
    if status == 200:
        if not isinstance(body, dict):  # this item only: the others are good answers
            return BatchAnswer(status, None, BadDataError("a $batch item is not a JSON object"))
        return BatchAnswer(status, body, None)
    if status == 429:
        graph.throttled += 1
    headers = item.get("headers") if isinstance(item.get("headers"), dict) else {}
    response = httpx.Response(
        status, headers={str(k): str(v) for k, v in (headers or {}).items()}, json=body
    )
    retry_after = _retry_after(response)
    return BatchAnswer(status, None, graph.error(response, retry_after))


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return None if raw is None else max(0.0, float(raw))
    except ValueError:
        return None
