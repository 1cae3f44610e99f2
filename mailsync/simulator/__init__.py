"""A Microsoft Graph simulator: a real HTTP server on loopback speaking the mail API subset.

It serves generated mailboxes the way Graph does, including the awkward parts a sync client
must survive: ``$skip`` paging evaluated at request time, 429s with Retry-After, 5xx,
malformed pages, expiring tokens, MailboxConcurrency limits, and a token endpoint msal can
talk to. Faults are switched at run time through ``GraphSimulator.faults`` (in process) or
``POST /_sim/faults`` (from another process, e.g. against ``mailsync simulator``).

Modules, each owning one thing:

- ``corpus``: the paragraph pool, people and topics generated mail is made of
- ``generator``: deterministic messages (ids, timestamps, bodies, attachments)
- ``store``: the simulated mailboxes and their mutations
- ``render``: messages as Graph JSON bytes, cached per shape
- ``odata``: query options, parsed and refused in Graph's words
- ``faults``: fault switches and request statistics
- ``identity``: the token and openid endpoints msal talks to
- ``mail``: the Graph mail resources under ``/v1.0/users/{user}``
- ``admin``: the ``/_sim`` control API
- ``wire``: requests, responses, Graph's error shape
- ``server``: the HTTP server and ``GraphSimulator``
"""

from __future__ import annotations

from mailsync.simulator.faults import Faults, Stats
from mailsync.simulator.identity import (
    DEFAULT_AUTHORITY_HOST,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
)
from mailsync.simulator.server import GraphSimulator, serve_forever
from mailsync.simulator.store import Mailbox

__all__ = [
    "DEFAULT_AUTHORITY_HOST",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "Faults",
    "GraphSimulator",
    "Mailbox",
    "Stats",
    "serve_forever",
]
