"""Input hygiene: identifiers are checked before they reach a Graph URL or a query.

Everything reaching SQL is a bound parameter anyway; these checks exist so that a bad
mailbox name fails here with a clear message instead of as a confusing Graph 400, and so
that nothing like ``../`` or ``%2F`` can steer a request to another path.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from mailsync.errors import InvalidInputError

# A user principal name (local@domain) or an Entra object id (a GUID). Entra ID allows
# A-Z a-z 0-9 ' . - _ ! # ^ ~ before the '@' (its username policy); '#' is in guest UPNs
# (x_contoso.com#EXT#@...) and is percent-encoded in the Graph URL like the rest.
_UPN = re.compile(r"[A-Za-z0-9'._!#^~-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Well-known folder names and Graph folder ids (base64url-like, may end in '=').
_FOLDER = re.compile(r"[A-Za-z0-9_-]{1,200}={0,2}")


def mailbox(value: str) -> str:
    value = value.strip()
    if _GUID.fullmatch(value):
        return value
    if not _UPN.fullmatch(value) or ".." in value or "'" in value:
        raise InvalidInputError(
            f"invalid mailbox {value!r}: expected a user principal name like "
            "'user@contoso.com' or a user object id (GUID)"
        )
    return value


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
