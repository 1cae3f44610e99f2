"""OData query options of message listings: parsing, validation in Graph's words, nextLinks.

Only what mailsync (and a careful client) sends is understood: ``$top``, ``$skip``,
``$select``, ``$expand=attachments``, ``$filter`` on receivedDateTime ranges, ``$orderby``
receivedDateTime, ``$count``. Anything else is a 400, never silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote

from mailsync.simulator.generator import ATTACHMENT_FIELDS, GRAPH_FIELDS, parse_iso
from mailsync.simulator.wire import GraphFailure, Request, bad_request

DEFAULT_TOP = 10
MAX_TOP = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_DATETIME_LITERAL = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})$", re.I
)
_CLAUSE = re.compile(r"^\s*(\w+)\s+(ge|gt|le|lt)\s+(\S+)\s*$", re.I)
_FIRST_PROPERTY = re.compile(r"^\s*\(*\s*(\w+)")
_ORDERBY = re.compile(r"^\s*(\w+)(?:\s+(asc|desc))?\s*$", re.I)
_EXPAND = re.compile(r"^\s*attachments\s*(?:\(\s*\$select\s*=\s*([^)]*)\))?\s*$", re.I)
_KNOWN_OPTIONS = {"$top", "$skip", "$select", "$expand", "$filter", "$orderby", "$count"}
_FIELD_NAMES = {name.lower(): name for name in GRAPH_FIELDS}

# (selected fields or None for all, expand attachments, attachment fields or None for all)
Shape = tuple[tuple[str, ...] | None, bool, tuple[str, ...] | None]


@dataclass
class Query:
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
    def shape(self) -> Shape:
        return (self.select, self.expand, self.attachment_fields)


def parse_options(pairs: list[tuple[str, str]], known: set[str] = _KNOWN_OPTIONS) -> dict[str, str]:
    """The ``$`` options by lower-cased name; unknown or repeated ones are a 400."""
    options: dict[str, str] = {}
    for key, value in pairs:
        name = key.lower()
        if not name.startswith("$"):
            continue  # Graph ignores unknown non-$ parameters
        if name not in known:
            raise bad_request(f"Query option '{key}' is not supported by the simulator.")
        if name in options:
            raise bad_request(
                f"Query option '{key}' was specified more than once, "
                "but it must be specified at most once."
            )
        options[name] = value
    return options


def int_option(options: dict[str, str], name: str, default: int) -> int:
    raw = options.get(name)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise bad_request(f"Invalid value '{raw}' for query option '{name}'.") from None


def top_option(options: dict[str, str]) -> int:
    top = int_option(options, "$top", DEFAULT_TOP)
    if not 1 <= top <= MAX_TOP:
        raise bad_request(
            f"The value of '$top' must be between 1 and {MAX_TOP}, got {top}.",
            "ErrorInvalidArgument",
        )
    return top


def skip_option(options: dict[str, str]) -> int:
    skip = int_option(options, "$skip", 0)
    if skip < 0:
        raise bad_request("The value of '$skip' must not be negative.")
    return skip


def split_fields(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def canonical_fields(raw: str) -> tuple[str, ...]:
    """$select names are case-insensitive; unknown ones are ignored (``id`` is always sent)."""
    names = (_FIELD_NAMES.get(name.lower()) for name in split_fields(raw))
    return tuple(name for name in names if name)


def parse_expand(raw: str | None) -> tuple[bool, tuple[str, ...] | None]:
    if raw is None:
        return False, None
    match = _EXPAND.match(raw)
    if not match:
        raise bad_request(
            f"Parsing OData Select and Expand failed: Could not find a property named "
            f"'{raw.strip()}' on type 'microsoft.graph.message'."
        )
    if match.group(1) is None:
        return True, None
    names = {name.lower() for name in split_fields(match.group(1))}
    return True, tuple(name for name in ATTACHMENT_FIELDS if name.lower() in names)


def parse_shape(options: dict[str, str]) -> Shape:
    """What to render of each message: ``$select`` and ``$expand``."""
    select = canonical_fields(options["$select"]) if "$select" in options else None
    expand, attachment_fields = parse_expand(options.get("$expand"))
    return select, expand, attachment_fields


def _literal_bounds(literal: str) -> tuple[int, int]:
    """(floor, ceil) of the datetime literal in epoch seconds; exact for fractions."""
    if not _DATETIME_LITERAL.match(literal):
        raise bad_request(f"Invalid filter clause: '{literal}' is not a valid DateTimeOffset.")
    # Graph sends 7 fractional digits; Python parses at most 6. The 7th is below our precision.
    trimmed = re.sub(r"(\.\d{6})\d", r"\1", literal)
    try:
        delta = parse_iso(trimmed) - _EPOCH
    except ValueError:  # shaped like a datetime, but e.g. month 13
        raise bad_request(f"Invalid filter clause: '{literal}' is not a valid date.") from None
    floor = delta // _SECOND
    return floor, floor + (1 if delta % _SECOND else 0)


def parse_filter(raw: str) -> tuple[int | None, int | None]:
    """``receivedDateTime ge|gt|le|lt <datetime>`` clauses joined by ``and``."""
    low: int | None = None
    high: int | None = None
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.I):
        match = _CLAUSE.match(clause)
        if not match or match.group(1).lower() != "receiveddatetime":
            raise bad_request(f"Invalid filter clause: '{clause.strip()}'.")
        floor, ceil = _literal_bounds(match.group(3))
        op = match.group(2).lower()
        if op in ("ge", "gt"):
            bound = ceil if op == "ge" else floor + 1
            low = bound if low is None else max(low, bound)
        else:
            bound = floor if op == "le" else ceil - 1
            high = bound if high is None else min(high, bound)
    return low, high


def parse_orderby(raw: str | None, filter_raw: str | None) -> bool:
    """True for descending. Graph's rule: with $filter, order only by the first filtered
    property; anything else is InefficientFilter."""
    if raw is None:
        return True  # Graph lists messages newest first
    match = _ORDERBY.match(raw)
    if not match:
        raise bad_request(f"Invalid $orderby expression '{raw}'.")
    prop = match.group(1).lower()
    if filter_raw is not None:
        first = _FIRST_PROPERTY.match(filter_raw)
        if first is None or first.group(1).lower() != prop:
            raise GraphFailure(
                400,
                "InefficientFilter",
                "The restriction or sort order is too complex for this operation.",
            )
    if prop != "receiveddatetime":
        raise bad_request(f"The simulator only orders by receivedDateTime, not {raw!r}.")
    return (match.group(2) or "asc").lower() == "desc"


def parse_count(options: dict[str, str]) -> bool:
    raw = options.get("$count", "false").lower()
    if raw not in ("true", "false"):
        raise bad_request(f"Invalid value '{raw}' for query option '$count'.")
    return raw == "true"


def parse_query(query: str) -> Query:
    """The options of a message listing (or a single message's ``$select``/``$expand``)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    options = parse_options(pairs)
    top = top_option(options)
    skip = skip_option(options)
    filter_raw = options.get("$filter")
    desc = parse_orderby(options.get("$orderby"), filter_raw)  # InefficientFilter first
    low, high = parse_filter(filter_raw) if filter_raw is not None else (None, None)
    count = parse_count(options)
    select, expand, attachment_fields = parse_shape(options)
    return Query(top, skip, select, expand, attachment_fields, low, high, desc, count, pairs)


def next_link(request: Request, pairs: list[tuple[str, str]], next_skip: int) -> str:
    """The same request with ``$skip`` moved on: Graph evaluates it when it is fetched."""
    kept = [(k, v) for k, v in pairs if k.lower() != "$skip"]
    kept.append(("$skip", str(next_skip)))
    encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe='$,()=:*')}" for k, v in kept)
    return f"{request.base_url}{request.path}?{encoded}"


# --- the Prefer header ------------------------------------------------------------------------

# Delta pages without ``odata.maxpagesize``: Graph documents no default; Corso observed 10
# (research notes §1), which is also the listings' default. Larger asks are capped silently,
# as a preference allows (Graph documents no maximum; 1000 is the listings' $top limit).
DEFAULT_DELTA_PAGE_SIZE = 10
MAX_DELTA_PAGE_SIZE = 1000


def prefer_values(header: str | None) -> dict[str, str]:
    """``odata.maxpagesize=50, IdType="ImmutableId"`` -> {"odata.maxpagesize": "50",
    "idtype": "ImmutableId"}: names lower-cased, quotes stripped."""
    values: dict[str, str] = {}
    for part in (header or "").split(","):
        name, _, value = part.partition("=")
        if name.strip():
            values[name.strip().lower()] = value.strip().strip('"')
    return values


def prefers_immutable_ids(header: str | None) -> bool:
    return prefer_values(header).get("idtype", "").lower() == "immutableid"


def max_page_size(header: str | None) -> int | None:
    """The ``odata.maxpagesize`` asked for, capped; None if absent or not a count (a
    preference the server cannot honour is ignored, not refused)."""
    raw = prefer_values(header).get("odata.maxpagesize")
    try:
        size = int(raw) if raw is not None else 0
    except ValueError:
        return None
    return min(size, MAX_DELTA_PAGE_SIZE) if size >= 1 else None
