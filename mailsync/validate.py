"""Input hygiene: identifiers are checked before they reach a Graph URL or a query.

Everything reaching SQL is a bound parameter anyway; these checks exist so that a bad
mailbox name fails here with a clear message instead of as a confusing Graph 400, and so
that nothing like ``../`` can steer a request to another path.

A mailbox is any address Exchange accepts, or an Entra object id (a GUID). Addresses are
RFC 5322 dot-atoms: ``o'brien@…``, ``support+billing@…``, guest UPNs
(``x_contoso.com#EXT#@…``) and every other ``atext`` character pass, except ``/``: no path
separator reaches a URL. ``mailsync.graph.client`` percent-encodes everything but ``@`` in the URL's
path, so a ``%``, ``?`` or ``#`` in an address stays part of the user's segment (``%2F``
arrives as the literal three characters, never as a slash).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from mailsync.errors import InvalidInputError

_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# RFC 5322 atext without '/', in atoms joined by single dots; RFC 5321's length limits.
_ATEXT = r"[A-Za-z0-9!#$%&'*+=?^_`{|}~-]"
_LOCAL = re.compile(rf"{_ATEXT}+(\.{_ATEXT}+)*")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})+")
MAX_LOCAL = 64
MAX_ADDRESS = 254
# What cannot be in an address, said by name (the first one found is reported).
_REFUSED = {"/": "a '/'", "\\": "a '\\'", '"': "a double quote", "..": "an empty part ('..')"}
# Well-known folder names and Graph folder ids (base64url-like, may end in '=').
_FOLDER = re.compile(r"[A-Za-z0-9_-]{1,200}={0,2}")


def mailbox(value: str) -> str:
    """An address (``local@domain``) or a user object id, surrounding whitespace removed."""
    value = value.strip()
    if _GUID.fullmatch(value):
        return value
    problem = _address_problem(value)
    if problem:
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise InvalidInputError(
            f"invalid mailbox {shown!r}: {problem}; expected an address like "
            "'user@contoso.com' or a user object id (GUID)"
        )
    return value


def _address_problem(value: str) -> str | None:
    """What makes ``value`` no address Exchange accepts, in a few words; None if nothing."""
    if not value:
        return "it is empty"
    if len(value) > MAX_ADDRESS:
        return f"longer than {MAX_ADDRESS} characters"
    if any(c.isspace() for c in value):
        return "it contains whitespace"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "it contains a control character"
    for text, name in _REFUSED.items():
        if text in value:
            return f"it contains {name}"
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain:
        return "no local part, '@' and domain"
    return _local_problem(local) or (None if _DOMAIN.fullmatch(domain) else "invalid domain")


def _local_problem(local: str) -> str | None:
    if len(local) > MAX_LOCAL:
        return f"the part before '@' is longer than {MAX_LOCAL} characters"
    if local.startswith("$"):
        # Graph reads /users/$… as an OData system option and answers 400, encoded or not.
        return "it starts with '$', which Graph cannot address by name: use the user's object id"
    if _LOCAL.fullmatch(local):
        return None
    if local.startswith(".") or local.endswith("."):
        return "an empty part (a dot at the start or end)"
    bad = next(c for c in local if c != "." and not re.fullmatch(_ATEXT, c))
    return f"it contains {bad!r}"


def folder(value: str) -> str:
    value = value.strip()
    if not _FOLDER.fullmatch(value):
        raise InvalidInputError(
            f"invalid folder {value!r}: expected a well-known name such as 'inbox' or a "
            "Graph folder id"
        )
    return value


def business_id(value: str | uuid.UUID) -> uuid.UUID:
    return _uuid(value, "business id")


def job_id(value: str | uuid.UUID) -> uuid.UUID:
    return _uuid(value, "job id")


def _uuid(value: str | uuid.UUID, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InvalidInputError(f"invalid {what} {value!r}: expected a UUID") from None


def timestamp(value: str | datetime | None, name: str) -> datetime | None:
    """A date or datetime, as an aware UTC datetime; naive values are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(
                f"invalid {name} {value!r}: expected a date like 2024-01-31 or an ISO 8601 "
                "datetime like 2024-01-31T12:00:00Z"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def date_range(
    sync_from: str | datetime | None, sync_to: str | datetime | None
) -> tuple[datetime | None, datetime | None]:
    start, end = timestamp(sync_from, "--from date"), timestamp(sync_to, "--to date")
    if start and end and start >= end:
        raise InvalidInputError(
            f"invalid date range: --from {start.isoformat()} is not before --to {end.isoformat()}"
        )
    return start, end


def positive(value: int, name: str, maximum: int | None = None) -> int:
    if value < 1 or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidInputError(f"invalid {name} {value}: must be at least 1{upper}")
    return value
