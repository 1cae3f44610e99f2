"""``GET /v1.0/users/{u}/mailFolders/{folder}/messages/delta``: incremental sync per folder.

A round is a sequence of pages linked by ``@odata.nextLink`` (``$skiptoken``); its last page
carries ``@odata.deltaLink`` (``$deltatoken``), where the next round starts. The first round
(no token) returns every message in the folder; a round from a deltaLink returns what changed
in the folder since that link's round was taken, collapsed per message to its latest state:

- a full item for each message added to, changed in or moved into the folder;
- ``{"id": …, "@removed": {"reason": "deleted"}}`` for each message that was in the folder
  and no longer is. Graph does not tell a deletion from a move out (research notes §1:
  peers see the moved message's id come back in its new folder's delta), and neither does
  the simulator: a move is ``@removed`` here and a full item, same id, there.
- a message added and deleted between two rounds is not mentioned at all (Graph may say
  either nothing or ``@removed``; nothing is the stricter choice for a client that treats
  ``@removed`` of an unknown id as an error).

Consistency: a round's content is fixed when its first page is served (a snapshot of the
folder, or of the change log, at sequence number S) and its deltaLink carries S, so a change
made while a client pages through the round is either in it or in the next round. A full
item is rendered as the message is when its page is served; one that has left the folder
since S is skipped (the next round reports it removed), so pages may be short or empty.

Options (``$select``, ``$expand=attachments``) go on the first request only and are
carried in the tokens; a nextLink or deltaLink is replayed exactly as given, and any other
query option with it is a 400. The page size comes from ``Prefer: odata.maxpagesize=N``
(on any request of the round; else the first request's, else 10). ``$top``, ``$filter``,
``$orderby``, ``$skip``, ``$count``, ``$search`` and ``changeType`` are refused with 400:
Graph's semantics for them on delta are unconfirmed (Corso: ``$top`` limits the whole
round, not the page), and a client must not rely on them. Delta on a search folder is
refused too (400): search folders are views; sync their source folders.

Faults (``mailsync.simulator.faults``): 403 ``ErrorQuotaExceeded`` (delta only), 410
``SyncStateNotFound`` (or another chosen code) for tokens minted before an expiry, a
malformed page, mutations after the Nth delta page.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

from mailsync.simulator.faults import Faults
from mailsync.simulator.folders import Folder
from mailsync.simulator.mutations import apply
from mailsync.simulator.odata import (
    DEFAULT_DELTA_PAGE_SIZE,
    Shape,
    max_page_size,
    parse_options,
    parse_shape,
)
from mailsync.simulator.stats import Stats
from mailsync.simulator.store import Mailbox
from mailsync.simulator.wire import GraphFailure, Request, Response, bad_request

MAX_ROUNDS_KEPT = 256  # per mailbox; an evicted round's nextLinks answer 410, as Graph's do
_TOKEN_KEYS = ("$skiptoken", "$deltatoken")
_REFUSED = ("$top", "$filter", "$orderby", "$skip", "$count", "$search")
_REMOVED = b'"@removed":{"reason":"deleted"}}'
_RECEIVED = re.compile(rb'"receivedDateTime":"[^"]*",')  # a rendered message's time field


@dataclass
class Round:
    folder_id: str
    seq: int  # the change log's sequence number when the round's content was fixed
    entries: list[tuple[str, bool]]  # (message id, removed)
    shape: Shape
    page_size: int


@dataclass
class _MailboxState:
    generation: int = 0  # bumped by every expiry: tokens of older generations are dead
    rounds: OrderedDict[int, Round] = field(default_factory=OrderedDict)
    next_round: int = 1


def encode_token(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode("ascii")


def decode_token(raw: str) -> dict[str, Any]:
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        raise bad_request("The $skiptoken or $deltatoken is not valid.") from None
    if not isinstance(payload, dict):
        raise bad_request("The $skiptoken or $deltatoken is not valid.")
    return payload


class DeltaApi:
    def __init__(self, faults: Faults, stats: Stats) -> None:
        self._faults = faults
        self._stats = stats
        self._states: dict[str, _MailboxState] = {}  # by user id
        self._lock = threading.Lock()

    def expire(self, user_id: str | None = None) -> None:
        """Kill every delta and skip token (of one mailbox, or of all)."""
        with self._lock:
            for key, state in self._states.items():
                if user_id is None or key == user_id:
                    state.generation += 1
                    state.rounds.clear()

    def serve(self, request: Request, mailbox: Mailbox, folder: Folder) -> Response:
        if self._faults.delta_quota_exceeded:
            raise GraphFailure(
                403,
                "ErrorQuotaExceeded",
                "The mailbox has exceeded its quota for synchronization state.",
            )
        if folder.is_search:
            raise bad_request("Delta is not simulated on search folders: sync their sources.")
        pairs = parse_qsl(request.query, keep_blank_values=True)
        asked_size = max_page_size(request.headers.get("prefer"))
        tokens = [(k.lower(), v) for k, v in pairs if k.lower() in _TOKEN_KEYS]
        if tokens:
            if len(pairs) != 1:
                raise bad_request(
                    "A nextLink or deltaLink is used exactly as given: no other query options."
                )
            kind, raw = tokens[0]
            round_id, offset = self._resume(mailbox, folder, kind, decode_token(raw), asked_size)
        else:
            round_id, offset = self._start(mailbox, folder, pairs, asked_size)
        if self._faults.delta_rendezvous > 1:
            self._faults.rendezvous(mailbox.user_id)
        self._faults.hold_point()
        if self._faults.latency_ms > 0:
            time.sleep(self._faults.latency_ms / 1000)
        return self._page(request, mailbox, folder, round_id, offset, asked_size)

    # -- rounds

    def _state(self, mailbox: Mailbox) -> _MailboxState:
        with self._lock:
            return self._states.setdefault(mailbox.user_id, _MailboxState())

    def _start(
        self,
        mailbox: Mailbox,
        folder: Folder,
        pairs: list[tuple[str, str]],
        page_size: int | None,
    ) -> tuple[int, int]:
        """A first round: every message in the folder."""
        for key, _ in pairs:
            if key.lower() in _REFUSED or key.lower() == "changetype":
                raise bad_request(f"Query option '{key}' is not supported on delta (simulated).")
        shape = parse_shape(parse_options(pairs, {"$select", "$expand"}))
        seq, entries = mailbox.delta_snapshot(folder, None)
        size = page_size or DEFAULT_DELTA_PAGE_SIZE
        return self._new_round(mailbox, Round(folder.id, seq, entries, shape, size)), 0

    def _resume(
        self,
        mailbox: Mailbox,
        folder: Folder,
        kind: str,
        payload: dict[str, Any],
        page_size: int | None,
    ) -> tuple[int, int]:
        """A nextLink (the round goes on) or a deltaLink (a new round from its point)."""
        wanted = "s" if kind == "$skiptoken" else "d"
        if (payload.get("k"), payload.get("u"), payload.get("f")) != (
            wanted,
            mailbox.user_id,
            folder.id,
        ):
            raise bad_request(f"The {kind} belongs to another mailbox, folder or kind of link.")
        state = self._state(mailbox)
        with self._lock:
            if payload.get("g") != state.generation:
                raise self._expired(payload, state)
            if kind == "$skiptoken":
                round_id = int(payload["r"])
                if round_id not in state.rounds:
                    raise self._expired(payload, state)
                state.rounds.move_to_end(round_id)
                return round_id, int(payload["o"])
        try:
            seq, entries = mailbox.delta_snapshot(folder, int(payload["s"]))
        except ValueError:  # a sequence number this mailbox never reached: forged
            raise bad_request("The $deltatoken is not valid.") from None
        select, expand, attachment_fields = payload["shape"]
        shape: Shape = (
            None if select is None else tuple(select),
            bool(expand),
            None if attachment_fields is None else tuple(attachment_fields),
        )
        size = page_size or int(payload["ps"])
        return self._new_round(mailbox, Round(folder.id, seq, entries, shape, size)), 0

    def _new_round(self, mailbox: Mailbox, round_: Round) -> int:
        state = self._state(mailbox)
        with self._lock:
            round_id = state.next_round
            state.next_round += 1
            state.rounds[round_id] = round_
            while len(state.rounds) > MAX_ROUNDS_KEPT:
                state.rounds.popitem(last=False)
            return round_id

    def _expired(self, payload: dict[str, Any], state: _MailboxState) -> GraphFailure:
        return GraphFailure(
            410,
            self._faults.delta_expired_code,
            f"The sync state generation is not found; generation={payload.get('g')};"
            f"[highest={state.generation}]",
        )

    # -- pages

    def _page(
        self,
        request: Request,
        mailbox: Mailbox,
        folder: Folder,
        round_id: int,
        offset: int,
        asked_size: int | None,
    ) -> Response:
        state = self._state(mailbox)
        with self._lock:
            found = state.rounds.get(round_id)
            generation = state.generation
        if found is None:  # evicted or expired since the request came in
            raise self._expired({"g": generation - 1}, state)
        round_ = found
        size = asked_size or round_.page_size
        entries = round_.entries[offset : offset + size]
        context = f"{request.base_url}/v1.0/$metadata#Collection(message)"
        parts = [b'{"@odata.context":', json.dumps(context).encode(), b',"value":[']
        items = removed = 0
        for message_id, is_removed in entries:
            if is_removed:
                parts += [b'{"id":', json.dumps(message_id).encode(), b",", _REMOVED, b","]
                removed += 1
                continue
            message = mailbox.get(message_id)
            if message is None or message.parentFolderId != folder.id:
                continue  # left the folder after the snapshot: the next round says so
            mailbox.renderings.append(parts, message, round_.shape)
            parts.append(b",")
            items += 1
        if parts[-1] == b",":
            parts.pop()
        parts.append(b"]")
        link = self._link(request, mailbox, folder, round_id, round_, offset + size, generation)
        parts += [link, b"}"]
        body = b"".join(parts)
        events = self._faults.count_delta_page()
        if events.untimed_message:  # valid JSON; its first message cannot be stored
            body = _RECEIVED.sub(b"", body, count=1)
        if events.malformed:
            body = body[: len(body) // 2]  # a 200 whose JSON stops mid-item
        self._stats.record_delta_page(items, removed)
        if events.expire_delta_tokens:
            self.expire()
        for mutation in events.mutations:
            apply(mailbox, mutation)
        headers = {"Preference-Applied": f"odata.maxpagesize={size}"} if asked_size else {}
        return Response(200, body, headers)

    def _link(
        self,
        request: Request,
        mailbox: Mailbox,
        folder: Folder,
        round_id: int,
        round_: Round,
        next_offset: int,
        generation: int,
    ) -> bytes:
        common = {"u": mailbox.user_id, "f": folder.id, "g": generation}
        base = f"{request.base_url}{request.path}"
        if next_offset < len(round_.entries):
            token = encode_token({"k": "s", **common, "r": round_id, "o": next_offset})
            link = f"{base}?$skiptoken={token}"
            return b',"@odata.nextLink":' + json.dumps(link).encode()
        select, expand, attachment_fields = round_.shape
        shape = [select, expand, attachment_fields]
        token = encode_token(
            {"k": "d", **common, "s": round_.seq, "shape": shape, "ps": round_.page_size}
        )
        return b',"@odata.deltaLink":' + json.dumps(f"{base}?$deltatoken={token}").encode()
