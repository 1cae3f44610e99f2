"""clientState: a random secret per subscription, kept only as its sha256.

Graph echoes the clientState in every notification; it is the only proof a POST comes from
Graph for our subscription (basic notifications carry no signature). The database keeps its
digest, so a dump or a read-only login cannot forge notifications; the receiver compares
digests with ``hmac.compare_digest`` so the time taken says nothing about how much of a
guess matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CLIENT_STATE_BYTES = 32  # 43 url-safe characters: under Graph's 128-character limit


def new_client_state() -> str:
    return secrets.token_urlsafe(CLIENT_STATE_BYTES)


def digest(client_state: str) -> bytes:
    return hashlib.sha256(client_state.encode("utf-8")).digest()


def matches(client_state: object, stored_digest: bytes) -> bool:
    """Whether ``client_state`` (as it came: anything) hashes to ``stored_digest``."""
    if not isinstance(client_state, str):
        return False
    return hmac.compare_digest(digest(client_state), bytes(stored_digest))
