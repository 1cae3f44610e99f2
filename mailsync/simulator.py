"""A Microsoft Graph simulator: a real HTTP server on loopback speaking the mail API subset.

It serves the generated mailboxes of ``mailsync.mailbox`` the way Graph does, including the
awkward parts a sync client must survive: ``$skip`` paging evaluated at request time (so
deletions make a naive nextLink walker skip messages), 429s with Retry-After, 5xx, malformed
pages, expiring tokens, MailboxConcurrency limits, and a token endpoint msal can talk to.

Faults are switched at run time through ``GraphSimulator.faults`` (in process) or
``POST /_sim/faults`` (from another process, e.g. against ``mailsync simulator``).

Speed matters (the sync must be measurable, not the simulator): each message is rendered to
JSON once per select/expand shape, with its html body left out and spliced back in from the
mailbox module's pre-escaped paragraph blob, so a 1000-message page is a list join.
"""

from __future__ import annotations

import base64
import bisect
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlsplit

import orjson

from mailsync.mailbox import (
    ATTACHMENT_FIELDS,
    DEFAULT_START,
    GRAPH_FIELDS,
    WELL_KNOWN_FOLDERS,
    Message,
    folder_id_for,
    generate_messages,
    new_message,
    parse_iso,
    user_id_for,
)

DEFAULT_CLIENT_ID = "sim-client"
DEFAULT_CLIENT_SECRET = "sim-secret"
DEFAULT_AUTHORITY_HOST = "login.microsoftonline.com"
DEFAULT_TOP = 10
MAX_TOP = 1000
JSON_TYPE = "application/json"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # Graph sends raw UTF-8
_BODY_MARK = "\u2063mailsync-body\u2063"  # never occurs in generated data
_BODY_MARK_BYTES = _ENCODER.encode(_BODY_MARK).encode("utf-8")
_DATETIME_LITERAL = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})$", re.I
)
_CLAUSE = re.compile(r"^\s*(\w+)\s+(ge|gt|le|lt)\s+(\S+)\s*$", re.I)
_FIRST_PROPERTY = re.compile(r"^\s*\(*\s*(\w+)")
_ORDERBY = re.compile(r"^\s*(\w+)(?:\s+(asc|desc))?\s*$", re.I)
_EXPAND = re.compile(r"^\s*attachments\s*(?:\(\s*\$select\s*=\s*([^)]*)\))?\s*$", re.I)
_KNOWN_OPTIONS = {"$top", "$skip", "$select", "$expand", "$filter", "$orderby", "$count"}


# --- faults and stats -----------------------------------------------------------------------


@dataclass
class Faults:
    """Fault switches, all off by default; assign fields at run time (or POST /_sim/faults).

    Graph (/v1.0) requests meet them in this order, after the bearer token is checked and the
    user resolved: ``server_error_next``, ``throttle_next``, ``max_concurrent_per_mailbox``;
    then message-list requests only: ``latency_ms``, the page is cut, mutations are counted
    (per mailbox) and applied after the cut, ``malformed_page_at`` is counted. A "page
    request" is a message-list request that got that far; a ``$count=true&$top=1`` request is
    one. ``token_lifetime_s`` and ``token_error_next`` concern the token endpoint only.
    Reassigning ``malformed_page_at`` or ``mutate_every_pages`` restarts its count.
    """

    latency_ms: float = 0.0
    throttle_next: int = 0
    retry_after_s: float = 1.0
    server_error_next: int = 0
    server_error_status: int = 503
    malformed_page_at: int | None = None
    malformed_persistent: bool = False
    token_lifetime_s: int = 3600
    token_error_next: int = 0  # token endpoint answers 503 (the only token-endpoint fault)
    mutate_every_pages: int = 0
    add_per_mutation: int = 0
    delete_per_mutation: int = 0
    max_concurrent_per_mailbox: int = 4  # 0 = unlimited
    # Run-time state, not switches:
    mutation_epoch: int = field(default=0, init=False, repr=False, compare=False)
    _pages_seen: int = field(default=0, init=False, repr=False, compare=False)
    _malformed_keys: set[tuple[Any, ...]] = field(
        default_factory=set, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        # "Since the fault was set": (re)assigning a counted fault restarts its count.
        if name == "malformed_page_at":
            super().__setattr__("_pages_seen", 0)
            super().__setattr__("_malformed_keys", set())
        elif name == "mutate_every_pages":
            super().__setattr__("mutation_epoch", getattr(self, "mutation_epoch", 0) + 1)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def update(self, changes: dict[str, Any]) -> None:
        """Set several fields, type-checked (the admin endpoint takes untrusted JSON)."""
        coerced = {name: _coerce_fault(name, value) for name, value in changes.items()}
        for name, value in coerced.items():
            setattr(self, name, value)

    def reset(self) -> None:
        self.update(Faults().as_dict())

    def take_server_error(self) -> int | None:
        with self._lock:
            if self.server_error_next <= 0:
                return None
            self.server_error_next -= 1
            return self.server_error_status

    def take_throttle(self) -> bool:
        with self._lock:
            if self.throttle_next <= 0:
                return False
            self.throttle_next -= 1
            return True

    def take_token_error(self) -> bool:
        with self._lock:
            if self.token_error_next <= 0:
                return False
            self.token_error_next -= 1
            return True

    def page_is_malformed(self, page_key: tuple[Any, ...]) -> bool:
        """Count one message-page request; True if this one must be served broken."""
        with self._lock:
            if self.malformed_page_at is None:
                return False
            self._pages_seen += 1
            if self._pages_seen == self.malformed_page_at:
                self._malformed_keys.add(page_key)
                return True
            return self.malformed_persistent and page_key in self._malformed_keys


def _coerce_fault(name: str, value: Any) -> Any:
    defaults = Faults.__dataclass_fields__
    if name not in defaults or not defaults[name].init:
        raise ValueError(f"unknown fault {name!r}")
    default = defaults[name].default
    if name == "malformed_page_at" and value is None:
        return None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"fault {name!r} must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"fault {name!r} must be a number")
    if isinstance(default, float):
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"fault {name!r} must be an integer")
    return int(value)


class Stats:
    """Request counters (admin requests under /_sim are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_status: dict[int, int] = {}
            self.token_requests = 0
            self.data_requests = 0  # every /v1.0 request
            self.message_pages = 0  # message-list responses actually served (incl. malformed)
            self.messages_served = 0
            self.throttled = 0  # 429s of either kind

    def record(self, status: int, *, token: bool = False, data: bool = False) -> None:
        with self._lock:
            self.total += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.token_requests += token
            self.data_requests += data
            self.throttled += status == 429

    def record_page(self, messages: int) -> None:
        with self._lock:
            self.message_pages += 1
            self.messages_served += messages

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "token_requests": self.token_requests,
                "data_requests": self.data_requests,
                "message_pages": self.message_pages,
                "messages_served": self.messages_served,
                "throttled": self.throttled,
            }


# --- the mailbox ----------------------------------------------------------------------------

# (selected fields or None for all, expand attachments, attachment fields or None for all)
_Shape = tuple[tuple[str, ...] | None, bool, tuple[str, ...] | None]
_Rendered = tuple[bytes, bytes | None]  # (json before body content, json after) or (json, None)


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
        self._rendered: dict[_Shape, dict[str, _Rendered]] = {}
        self.in_flight = 0
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

    # -- rendering

    def rendered(self, message: Message, shape: _Shape) -> _Rendered:
        cache = self._rendered.get(shape)
        if cache is None:
            cache = self._rendered.setdefault(shape, {})
        hit = cache.get(message.id)
        if hit is None:  # two threads may render the same message: harmless, same bytes
            hit = cache[message.id] = _render(message, shape)
        return hit

    def render_json(self, message: Message, shape: _Shape) -> bytes:
        head, tail = self.rendered(message, shape)
        return head if tail is None else head + message.body_json_fragment() + tail

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


def _render(message: Message, shape: _Shape) -> _Rendered:
    select, expand, attachment_fields = shape
    obj: dict[str, Any] = {"@odata.etag": f'W/"{message.changeKey}"'}
    obj.update(message.to_graph(select, body_content=_BODY_MARK))
    if expand:
        obj["attachments"] = [_attachment_json(a, attachment_fields) for a in message.attachments]
    has_body = "body" in obj
    # orjson writes the bytes _ENCODER would (compact, raw UTF-8), in a third of the time:
    # the first page of a large mailbox is rendered while a sync waits for it.
    data = orjson.dumps(obj)
    if not has_body:
        return data, None
    head, tail = data.split(_BODY_MARK_BYTES)
    return head + b'"', b'"' + tail


def _attachment_json(attachment: dict[str, Any], wanted: tuple[str, ...] | None) -> dict[str, Any]:
    # Graph types every attachment; without $select it would also send contentBytes, which the
    # simulator omits (a sync that needs them fetches attachments separately).
    out: dict[str, Any] = {"@odata.type": "#microsoft.graph.fileAttachment"}
    for name in ATTACHMENT_FIELDS:
        if wanted is None or name == "id" or name in wanted:
            out[name] = attachment[name]
    return out


# --- requests and responses -----------------------------------------------------------------


@dataclass
class _Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    base_url: str  # scheme://host[:port] as the client addressed us


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _GraphFailure(Exception):
    """An error answer in Graph's shape: {"error": {"code", "message", "innerError"}}."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, _ENCODER.encode(obj).encode("utf-8"), dict(headers or {}))


def _graph_error_response(failure: _GraphFailure, request_id: str) -> _Response:
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id,
        "client-request-id": request_id,
    }
    obj = {"error": {"code": failure.code, "message": failure.message, "innerError": inner}}
    return _json_response(failure.status, obj, failure.headers)


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --- query options --------------------------------------------------------------------------


@dataclass
class _Query:
    top: int
    skip: int
    select: tuple[str, ...] | None
    expand: bool
    attachment_fields: tuple[str, ...] | None
    low_ts: int | None
    high_ts: int | None
    desc: bool
    count: bool
    pairs: list[tuple[str, str]]

    @property
    def shape(self) -> _Shape:
        return (self.select, self.expand, self.attachment_fields)


def _bad_request(message: str, code: str = "BadRequest") -> _GraphFailure:
    return _GraphFailure(400, code, message)


def _options(pairs: list[tuple[str, str]]) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in pairs:
        name = key.lower()
        if not name.startswith("$"):
            continue  # Graph ignores unknown non-$ parameters
        if name not in _KNOWN_OPTIONS:
            raise _bad_request(f"Query option '{key}' is not supported by the simulator.")
        if name in options:
            raise _bad_request(
                f"Query option '{key}' was specified more than once, "
                "but it must be specified at most once."
            )
        options[name] = value
    return options


def _int_option(options: dict[str, str], name: str, default: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise _bad_request(f"Invalid value '{raw}' for query option '{name}'.") from None


def _split_fields(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_FIELD_NAMES = {name.lower(): name for name in GRAPH_FIELDS}


def _canonical_fields(raw: str) -> tuple[str, ...]:
    """$select names are case-insensitive; unknown ones are ignored (``id`` is always sent)."""
    names = (_FIELD_NAMES.get(name.lower()) for name in _split_fields(raw))
    return tuple(name for name in names if name)


def _parse_expand(raw: str | None) -> tuple[bool, tuple[str, ...] | None]:
    if raw is None:
        return False, None
    match = _EXPAND.match(raw)
    if not match:
        raise _bad_request(
            f"Parsing OData Select and Expand failed: Could not find a property named "
            f"'{raw.strip()}' on type 'microsoft.graph.message'."
        )
    if match.group(1) is None:
        return True, None
    names = {name.lower() for name in _split_fields(match.group(1))}
    return True, tuple(name for name in ATTACHMENT_FIELDS if name.lower() in names)


def _literal_bounds(literal: str) -> tuple[int, int]:
    """(floor, ceil) of the datetime literal in epoch seconds; exact for fractions."""
    if not _DATETIME_LITERAL.match(literal):
        raise _bad_request(f"Invalid filter clause: '{literal}' is not a valid DateTimeOffset.")
    # Graph sends 7 fractional digits; Python parses at most 6. The 7th is below our precision.
    trimmed = re.sub(r"(\.\d{6})\d", r"\1", literal)
    try:
        delta = parse_iso(trimmed) - _EPOCH
    except ValueError:  # shaped like a datetime, but e.g. month 13
        raise _bad_request(f"Invalid filter clause: '{literal}' is not a valid date.") from None
    floor = delta // _SECOND
    return floor, floor + (1 if delta % _SECOND else 0)


def _parse_filter(raw: str) -> tuple[int | None, int | None]:
    """``receivedDateTime ge|gt|le|lt <datetime>`` clauses joined by ``and``."""
    low: int | None = None
    high: int | None = None
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.I):
        match = _CLAUSE.match(clause)
        if not match or match.group(1).lower() != "receiveddatetime":
            raise _bad_request(f"Invalid filter clause: '{clause.strip()}'.")
        floor, ceil = _literal_bounds(match.group(3))
        op = match.group(2).lower()
        if op in ("ge", "gt"):
            bound = ceil if op == "ge" else floor + 1
            low = bound if low is None else max(low, bound)
        else:
            bound = floor if op == "le" else ceil - 1
            high = bound if high is None else min(high, bound)
    return low, high


def _parse_orderby(raw: str | None, filter_raw: str | None) -> bool:
    """True for descending. Graph's rule: with $filter, order only by the first filtered
    property; anything else is InefficientFilter."""
    if raw is None:
        return True  # Graph lists messages newest first
    match = _ORDERBY.match(raw)
    if not match:
        raise _bad_request(f"Invalid $orderby expression '{raw}'.")
    prop = match.group(1).lower()
    if filter_raw is not None:
        first = _FIRST_PROPERTY.match(filter_raw)
        if first is None or first.group(1).lower() != prop:
            raise _GraphFailure(
                400,
                "InefficientFilter",
                "The restriction or sort order is too complex for this operation.",
            )
    if prop != "receiveddatetime":
        raise _bad_request(f"The simulator only orders by receivedDateTime, not {raw!r}.")
    return (match.group(2) or "asc").lower() == "desc"


def _parse_query(query: str) -> _Query:
    pairs = parse_qsl(query, keep_blank_values=True)
    options = _options(pairs)
    top = _int_option(options, "$top", DEFAULT_TOP)
    if not 1 <= top <= MAX_TOP:
        raise _bad_request(
            f"The value of '$top' must be between 1 and {MAX_TOP}, got {top}.",
            "ErrorInvalidArgument",
        )
    skip = _int_option(options, "$skip", 0)
    if skip < 0:
        raise _bad_request("The value of '$skip' must not be negative.")
    filter_raw = options.get("$filter")
    desc = _parse_orderby(options.get("$orderby"), filter_raw)  # InefficientFilter first
    low, high = _parse_filter(filter_raw) if filter_raw is not None else (None, None)
    count_raw = options.get("$count", "false").lower()
    if count_raw not in ("true", "false"):
        raise _bad_request(f"Invalid value '{count_raw}' for query option '$count'.")
    select = _canonical_fields(options["$select"]) if "$select" in options else None
    expand, attachment_fields = _parse_expand(options.get("$expand"))
    return _Query(
        top, skip, select, expand, attachment_fields, low, high, desc, count_raw == "true", pairs
    )


def _next_link(request: _Request, query: _Query, next_skip: int) -> str:
    # The same request with $skip moved on: Graph evaluates it when it is fetched, not now.
    pairs = [(k, v) for k, v in query.pairs if k.lower() != "$skip"]
    pairs.append(("$skip", str(next_skip)))
    encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe='$,()=:*')}" for k, v in pairs)
    return f"{request.base_url}{request.path}?{encoded}"


# --- the server -----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections would make server_close() hang
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: GraphSimulator) -> None:
        super().__init__(address, _Handler)
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = 120  # an idle keep-alive connection frees its thread eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client went away first

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown test output

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        address = self.server.server_address
        host = self.headers.get("Host") or f"{address[0]!s}:{address[1]}"
        request = _Request(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=f"http://{host}",
        )
        response = self.server.simulator.handle(request)
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", JSON_TYPE)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class GraphSimulator:
    """The simulator; ``with GraphSimulator() as sim:`` starts it on a free loopback port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        faults: Faults | None = None,
        authority_host: str = DEFAULT_AUTHORITY_HOST,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.authority_host = authority_host
        self.faults = faults or Faults()
        self.stats = Stats()
        self._mailboxes: dict[str, Mailbox] = {}  # by lower-cased UPN and by user id
        self._mailboxes_lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # access token -> monotonic expiry
        self._tokens_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self._server.server_address[1]}"

    def bind(self) -> _Server:
        """Open the listening socket (so ``url`` is known) without serving yet."""
        if self._server is None:
            self._server = _Server((self.host, self.port), self)
        return self._server

    def start(self) -> GraphSimulator:
        if self._thread is not None:
            return self
        server = self.bind()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="graph-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._thread is not None:
            server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        # Handler threads block reading idle keep-alive connections: hang those up.
        with server.connections_lock:
            for conn in list(server.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        server.server_close()

    def __enter__(self) -> GraphSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- mailboxes and tokens

    def add_mailbox(
        self,
        user: str,
        count: int,
        seed: int = 0,
        folder: str = "inbox",
        *,
        start: datetime = DEFAULT_START,
    ) -> Mailbox:
        mailbox = Mailbox(user, count, seed=seed, folder=folder, start=start)
        with self._mailboxes_lock:
            if user.lower() in self._mailboxes:
                raise ValueError(f"mailbox {user!r} already exists")
            self._mailboxes[user.lower()] = mailbox
            self._mailboxes[mailbox.user_id] = mailbox
        return mailbox

    def mailbox(self, user: str) -> Mailbox:
        """By UPN (any case) or user id; KeyError when unknown."""
        return self._mailboxes[user.lower()]

    def mailboxes(self) -> list[Mailbox]:
        with self._mailboxes_lock:
            return list({id(m): m for m in self._mailboxes.values()}.values())

    def issue_token(self) -> str:
        """A valid access token, as the token endpoint would issue it (a test shortcut)."""
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0." + secrets.token_urlsafe(48)
        now = time.monotonic()
        with self._tokens_lock:
            if len(self._tokens) > 10_000:  # long runs with short lifetimes: forget dead ones
                self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = now + self.faults.token_lifetime_s
        return token

    def expire_all_tokens(self) -> None:
        with self._tokens_lock:
            self._tokens.clear()

    def _token_valid(self, token: str) -> bool:
        with self._tokens_lock:
            expiry = self._tokens.get(token)
            return expiry is not None and expiry > time.monotonic()

    # -- dispatch

    def handle(self, request: _Request) -> _Response:
        """Answer one request; never raises (a bug becomes a logged 500)."""
        request_id = str(uuid.uuid4())
        segments = [unquote(s) for s in request.path.split("/") if s]
        admin = bool(segments) and segments[0] == "_sim"
        token = len(segments) >= 2 and segments[-1].lower() == "token"
        data = bool(segments) and segments[0].lower() == "v1.0"
        try:
            response = self._route(request, segments)
        except _GraphFailure as failure:
            response = _graph_error_response(failure, request_id)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            bug = _GraphFailure(500, "InternalServerError", "Simulator bug, see its stderr.")
            response = _graph_error_response(bug, request_id)
        response.headers.setdefault("request-id", request_id)
        response.headers.setdefault(
            "client-request-id", request.headers.get("client-request-id", request_id)
        )
        if not admin:
            self.stats.record(response.status, token=token, data=data)
        return response

    def _route(self, request: _Request, segments: list[str]) -> _Response:
        lowered = [s.lower() for s in segments]
        if lowered[:1] == ["_sim"]:
            return self._admin(request, segments[1:])
        if lowered[:1] == ["v1.0"]:
            if request.method != "GET":
                raise _GraphFailure(405, "Request_BadRequest", "Only GET is simulated.")
            return self._graph(request, segments[1:])
        if len(lowered) == 4 and lowered[1:] == ["oauth2", "v2.0", "token"]:
            return self._token_endpoint(request, segments[0])
        if lowered[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._openid_configuration(request, segments[0])
        if lowered[1:] == ["discovery", "instance"]:
            return self._instance_discovery(request)
        raise _bad_request(f"Resource not found for the segment '{'/'.join(segments)}'.")

    # -- the identity platform

    def _authority(self, request: _Request) -> str:
        # Behind mailsync.auth.RoutedHttpClient the client believes it talks to the real
        # authority host; msal insists on https endpoints, so answer in its terms.
        host = request.headers.get("x-forwarded-host")
        if host:
            return f"{request.headers.get('x-forwarded-proto', 'https')}://{host}"
        return f"https://{self.authority_host}"

    def _openid_configuration(self, request: _Request, tenant: str) -> _Response:
        base = f"{self._authority(request)}/{tenant}"
        return _json_response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{self._authority(request)}/{tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            },
        )

    def _instance_discovery(self, request: _Request) -> _Response:
        params = dict(parse_qsl(request.query))
        endpoint = params.get("authorization_endpoint", "")
        path = urlsplit(endpoint).path.split("/")
        tenant = path[1] if len(path) > 1 and path[1] else "common"
        authority = self._authority(request)
        host = urlsplit(authority).netloc
        return _json_response(
            200,
            {
                "tenant_discovery_endpoint": (
                    f"{authority}/{tenant}/v2.0/.well-known/openid-configuration"
                ),
                "api-version": "1.1",
                "metadata": [
                    {"preferred_network": host, "preferred_cache": host, "aliases": [host]}
                ],
            },
        )

    def _token_endpoint(self, request: _Request, tenant: str) -> _Response:
        if request.method != "POST":
            return _aad_error(
                405, "invalid_request", "AADSTS900561: The endpoint only accepts POST requests."
            )
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        refusal = self._refuse_token_request(form, request.headers, tenant)
        if refusal is not None:
            return refusal
        if self.faults.take_token_error():
            return _aad_error(
                503,
                "temporarily_unavailable",
                "AADSTS90033: A transient error has occurred. Please try again.",
            )
        lifetime = self.faults.token_lifetime_s
        return _json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": self.issue_token(),
            },
        )

    def _refuse_token_request(
        self, form: dict[str, str], headers: dict[str, str], tenant: str
    ) -> _Response | None:
        """Entra ID's answers to a bad client-credentials request (msal sends the secret both
        in the form and as HTTP Basic; either is accepted)."""
        basic_id, basic_secret = _basic_credentials(headers.get("authorization", ""))
        client_id = form.get("client_id") or basic_id
        secret = form.get("client_secret") or basic_secret
        grant = form.get("grant_type")
        scope = form.get("scope", "")
        if grant != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                f"AADSTS70003: The app requested an unsupported grant type '{grant}'. "
                "The simulator supports client_credentials only.",
            )
        if client_id != self.client_id:
            return _aad_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory '{tenant}'.",
            )
        if not secret:
            return _aad_error(
                401,
                "invalid_client",
                "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for "
                "the 'client_credentials' grant type.",
            )
        if not secrets.compare_digest(secret.encode(), self.client_secret.encode()):
            return _aad_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                "the request is the client secret value, not the client secret ID, for a secret "
                f"added to app '{client_id}'.",
            )
        if not scope.endswith("/.default"):
            return _aad_error(
                400,
                "invalid_scope",
                f"AADSTS1002012: The provided value for scope {scope} is not valid. "
                "Client credential flows must have a scope value with /.default suffixed.",
            )
        return None

    # -- Graph

    def _graph(self, request: _Request, segments: list[str]) -> _Response:
        self._authenticate(request)
        lowered = [s.lower() for s in segments]
        if len(segments) < 2 or lowered[0] != "users":
            raise _bad_request(f"Resource not found for the segment '{'/'.join(segments)}'.")
        mailbox = self._mailboxes.get(segments[1].lower())
        if mailbox is None:
            raise _GraphFailure(
                404, "ErrorInvalidUser", f"The requested user '{segments[1]}' is invalid."
            )
        self._inject_failures()
        with self._concurrency_slot(mailbox):
            response = self._mailbox_resource(request, mailbox, segments[2:], lowered[2:])
        prefer = request.headers.get("prefer", "")
        if 'idtype="immutableid"' in prefer.lower().replace(" ", ""):
            response.headers["Preference-Applied"] = 'IdType="ImmutableId"'
        return response

    def _authenticate(self, request: _Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._token_valid(token.strip()):
            return
        message = (
            "Access token is empty."
            if not token.strip()
            else "Access token has expired or is not yet valid."
        )
        raise _GraphFailure(
            401,
            "InvalidAuthenticationToken",
            message,
            {
                "WWW-Authenticate": 'Bearer realm="", authorization_uri='
                '"https://login.microsoftonline.com/common/oauth2/authorize", '
                'client_id="00000003-0000-0000-c000-000000000000"'
            },
        )

    def _inject_failures(self) -> None:
        status = self.faults.take_server_error()
        if status is not None:
            code = {503: "ServiceUnavailable", 504: "GatewayTimeout"}.get(status, "UnknownError")
            raise _GraphFailure(status, code, "The service is temporarily unavailable.")
        if self.faults.take_throttle():
            raise _GraphFailure(
                429,
                "TooManyRequests",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": _format_seconds(self.faults.retry_after_s)},
            )

    def _concurrency_slot(self, mailbox: Mailbox) -> _ConcurrencySlot:
        return _ConcurrencySlot(mailbox, self.faults)

    def _mailbox_resource(
        self, request: _Request, mailbox: Mailbox, segments: list[str], lowered: list[str]
    ) -> _Response:
        if not lowered:
            return _json_response(200, self._user_json(request, mailbox))
        if lowered[0] == "messages":
            return self._messages_resource(request, mailbox, None, segments[1:])
        if lowered[0] == "mailfolders":
            if len(segments) == 1:
                return _json_response(200, {"value": [self._folder_json(request, mailbox)]})
            folder = segments[1]
            if folder.lower() not in (mailbox.folder, mailbox.folder_id.lower()):
                raise _GraphFailure(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            if len(segments) == 2:
                return _json_response(200, self._folder_json(request, mailbox))
            if lowered[2] == "messages":
                return self._messages_resource(request, mailbox, folder, segments[3:])
        raise _bad_request(f"Resource not found for the segment '{'/'.join(segments)}'.")

    def _user_json(self, request: _Request, mailbox: Mailbox) -> dict[str, Any]:
        return {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users/$entity",
            "id": mailbox.user_id,
            "userPrincipalName": mailbox.user,
            "mail": mailbox.user,
            "displayName": mailbox.user.split("@", 1)[0].replace(".", " ").title(),
        }

    def _folder_json(self, request: _Request, mailbox: Mailbox) -> dict[str, Any]:
        return {
            "@odata.context": f"{request.base_url}/v1.0/$metadata#users('{mailbox.user_id}')"
            "/mailFolders/$entity",
            "id": mailbox.folder_id,
            "displayName": mailbox.display_name,
            "parentFolderId": folder_id_for(mailbox.user, "msgfolderroot"),
            "childFolderCount": 0,
            "unreadItemCount": mailbox.unread_count,
            "totalItemCount": len(mailbox),
            "isHidden": False,
        }

    def _messages_resource(
        self, request: _Request, mailbox: Mailbox, folder: str | None, rest: list[str]
    ) -> _Response:
        if len(rest) > 1:
            raise _bad_request(f"Resource not found for the segment '{'/'.join(rest)}'.")
        if rest:
            return self._single_message(request, mailbox, rest[0])
        return self._message_page(request, mailbox, folder)

    def _single_message(self, request: _Request, mailbox: Mailbox, message_id: str) -> _Response:
        message = mailbox.get(message_id)
        if message is None:
            raise _GraphFailure(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        query = _parse_query(request.query)
        return _Response(200, mailbox.render_json(message, query.shape))

    def _message_page(self, request: _Request, mailbox: Mailbox, folder: str | None) -> _Response:
        query = _parse_query(request.query)
        if self.faults.latency_ms > 0:
            time.sleep(self.faults.latency_ms / 1000)
        page, total = mailbox.page(
            query.low_ts, query.high_ts, skip=query.skip, top=query.top, desc=query.desc
        )
        mailbox.count_page(self.faults)  # may mutate: this page was cut before it
        body = self._page_body(request, mailbox, folder, query, page, total)
        if self.faults.page_is_malformed((request.path.lower(), tuple(sorted(query.pairs)))):
            body = body[: len(body) // 2]  # a 200 whose JSON stops mid-message
        self.stats.record_page(len(page))
        return _Response(200, body)

    def _page_body(
        self,
        request: _Request,
        mailbox: Mailbox,
        folder: str | None,
        query: _Query,
        page: list[Message],
        total: int,
    ) -> bytes:
        where = f"mailFolders('{folder}')/messages" if folder else "messages"
        selected = f"({','.join(query.select)})" if query.select else ""
        context = (
            f"{request.base_url}/v1.0/$metadata#users('{quote(mailbox.user)}')/{where}{selected}"
        )
        parts = [b'{"@odata.context":', json.dumps(context).encode()]
        if query.count:
            parts += [b',"@odata.count":', str(total).encode()]
        parts.append(b',"value":[')
        shape = query.shape
        for i, message in enumerate(page):
            if i:
                parts.append(b",")
            head, tail = mailbox.rendered(message, shape)
            parts.append(head)
            if tail is not None:
                parts.append(message.body_json_fragment())
                parts.append(tail)
        parts.append(b"]")
        if query.skip + len(page) < total:
            link = _next_link(request, query, query.skip + len(page))
            parts += [b',"@odata.nextLink":', json.dumps(link).encode()]
        parts.append(b"}")
        return b"".join(parts)

    # -- admin

    def _admin(self, request: _Request, segments: list[str]) -> _Response:
        route = (request.method, "/".join(segments[:1]), len(segments))
        if route == ("GET", "stats", 1):
            return _json_response(200, self.stats.as_dict())
        if request.method == "POST" and segments == ["stats", "reset"]:
            self.stats.reset()
            return _json_response(200, self.stats.as_dict())
        if route == ("GET", "faults", 1):
            return _json_response(200, self.faults.as_dict())
        if route == ("POST", "faults", 1):
            return self._admin_set_faults(request)
        if request.method == "POST" and segments == ["faults", "reset"]:
            self.faults.reset()
            return _json_response(200, self.faults.as_dict())
        if request.method == "POST" and segments == ["tokens", "expire"]:
            self.expire_all_tokens()
            return _json_response(200, {"expired": True})
        if route == ("POST", "mailboxes", 1):
            return self._admin_add_mailbox(request)
        if route == ("GET", "mailboxes", 1):
            return _json_response(200, {"value": [m.summary() for m in self.mailboxes()]})
        if route == ("GET", "mailboxes", 2):
            return self._admin_mailbox(segments[1])
        raise _GraphFailure(404, "NotFound", f"No admin resource {request.method} {request.path}.")

    def _admin_set_faults(self, request: _Request) -> _Response:
        try:
            changes = json.loads(request.body or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of Faults fields")
            self.faults.update(changes)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        return _json_response(200, self.faults.as_dict())

    def _admin_add_mailbox(self, request: _Request) -> _Response:
        try:
            spec = json.loads(request.body or b"{}")
            mailbox = self.add_mailbox(
                str(spec["user"]),
                int(spec["count"]),
                int(spec.get("seed", 0)),
                str(spec.get("folder", "inbox")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _bad_request(f"Cannot add mailbox: {exc!r}") from None
        return _json_response(201, mailbox.summary())

    def _admin_mailbox(self, user: str) -> _Response:
        try:
            mailbox = self.mailbox(user)
        except KeyError:
            raise _GraphFailure(404, "ErrorInvalidUser", f"No mailbox {user!r}.") from None
        summary = mailbox.summary()
        summary["ids"] = sorted(mailbox.ids())
        summary["added_ids"] = sorted(mailbox.added_ids)
        summary["deleted_ids"] = sorted(mailbox.deleted_ids)
        return _json_response(200, summary)


class _ConcurrencySlot:
    """Holds one of a mailbox's concurrent-request slots; over the limit is a 429."""

    def __init__(self, mailbox: Mailbox, faults: Faults) -> None:
        self._mailbox = mailbox
        self._faults = faults

    def __enter__(self) -> None:
        limit = self._faults.max_concurrent_per_mailbox
        with self._mailbox._lock:
            self._mailbox.in_flight += 1
            over = limit > 0 and self._mailbox.in_flight > limit
        if over:
            self.__exit__()
            raise _GraphFailure(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": _format_seconds(self._faults.retry_after_s)},
            )

    def __exit__(self, *exc: object) -> None:
        with self._mailbox._lock:
            self._mailbox.in_flight -= 1


def _aad_error(status: int, error: str, description: str) -> _Response:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id = str(uuid.uuid4())
    code = int(re.match(r"AADSTS(\d+)", description).group(1))  # type: ignore[union-attr]
    return _json_response(
        status,
        {
            "error": error,
            "error_description": f"{description} Trace ID: {trace_id} Timestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace_id,
        },
    )


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8765,
    mailboxes: dict[str, int] | None = None,
    seed: int = 0,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
) -> None:
    """Run a simulator in the foreground (``mailsync simulator``) until interrupted.

    Prints the base URL alone on the first stdout line, so a parent process can read it.
    """
    simulator = GraphSimulator(host, port, client_id=client_id, client_secret=client_secret)
    for user, count in (mailboxes or {}).items():
        simulator.add_mailbox(user, count, seed)
    server = simulator.bind()
    print(simulator.url, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
