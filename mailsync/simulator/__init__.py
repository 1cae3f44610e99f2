"""A Microsoft Graph simulator: a real HTTP server on loopback speaking the mail API subset.

It serves generated mailboxes the way Graph does, including the awkward parts a sync client
must survive: ``$skip`` paging evaluated at request time, 429s with Retry-After, 5xx,
malformed pages, expiring tokens, MailboxConcurrency limits, a token endpoint msal can talk
to, folder trees with hidden and search folders, and per-folder delta rounds with expiring
sync state. Faults are switched at run time through ``GraphSimulator.faults`` (in process)
or ``POST /_sim/faults`` (from another process, e.g. against ``mailsync simulator``).

Modules, each owning one thing:

- ``corpus``: the paragraph pool, people and topics generated mail is made of
- ``generator``: deterministic messages (ids, timestamps, bodies, attachments, folders)
- ``folders``: a mailbox's folder tree (well-known names, hidden and search folders)
- ``sorted_messages``: messages in receivedDateTime order, windowed and paged
- ``changelog``: every change to a message, numbered: what delta rounds are made of
- ``store``: the simulated mailboxes and their mutations
- ``mutations``: mutations as JSON, for the admin API and fault triggers
- ``render``: messages as Graph JSON bytes, cached per shape
- ``odata``: query options and the Prefer header, parsed and refused in Graph's words
- ``faults``: fault switches; ``stats``: request counters
- ``identity``: the token and openid endpoints msal talks to
- ``mail``: the Graph mail resources under ``/v1.0/users/{user}``
- ``delta``: ``…/mailFolders/{id}/messages/delta``
- ``directory``: ``GET /v1.0/users``: users, shared mailboxes, users without a mailbox
- ``limits``: Graph's per-mailbox limits (4 in flight, a request budget), enforced and counted
- ``admin``: the ``/_sim`` control API
- ``wire``: requests, responses, Graph's error shape
- ``server``: the HTTP server and ``GraphSimulator``
"""

from __future__ import annotations

from mailsync.simulator.faults import SYNC_STATE_CODES, Faults
from mailsync.simulator.folders import DEFAULT_TREE, Folder, FolderSpec, SearchSpec
from mailsync.simulator.identity import (
    DEFAULT_AUTHORITY_HOST,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
)
from mailsync.simulator.mutations import Mutation
from mailsync.simulator.server import GraphSimulator, serve_forever
from mailsync.simulator.stats import Stats
from mailsync.simulator.store import Mailbox

__all__ = [
    "DEFAULT_AUTHORITY_HOST",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_TREE",
    "SYNC_STATE_CODES",
    "Faults",
    "Folder",
    "FolderSpec",
    "GraphSimulator",
    "Mailbox",
    "Mutation",
    "SearchSpec",
    "Stats",
    "serve_forever",
]
