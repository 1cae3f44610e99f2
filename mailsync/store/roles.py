"""The database roles mailsync acts as, and how a connection takes them (docs/security.md).

Row-level security binds every role except superusers and BYPASSRLS roles, and the embedded
server's login is the superuser ``postgres``. So a pool never works as its login when the
login would bypass the policies: each connection takes ``mailsync_worker`` (``SET ROLE``)
when the login may, and a login that may not, yet bypasses RLS, is refused. A login that is
itself bound by RLS (a least-privilege ``DATABASE_URL``) may work as itself.

Inside a transaction the tenant is ``app.business_id`` and a different role is taken with
``SET LOCAL ROLE``: both end with the transaction. They are SET statements rather than
``set_config()`` calls because a SET takes no snapshot, so a caller may still open its
transaction with ``SET TRANSACTION ISOLATION LEVEL`` (the report does).

``SET ROLE`` is a guard against the application's own mistakes (a query without its tenant,
a cleanup statement run as a worker), not a wall against code running in this process: that
code holds the login, which can ``RESET ROLE``. The wall is a login that is not a superuser.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql as pgsql

from mailsync import validate
from mailsync.errors import ConfigError
from mailsync.sql import queries

WORKER = "mailsync_worker"  # syncs: its tenant's rows, no DDL
REPORTING = "mailsync_reporting"  # reads its tenant's rows
MAINTENANCE = "mailsync_maintenance"  # BYPASSRLS: cleanup and all-tenant reports
_CANNOT_TAKE = (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidParameterValue)


def acting_role(conn: psycopg.Connection[Any], wanted: str | None) -> str | None:
    """The role a pool should work as: ``wanted`` when the login may take it, else None (the
    login itself); ConfigError when that would leave row-level security bypassed.

    ``conn`` is an autocommit connection of the login; it is left acting as the answer.
    """
    acting = wanted if wanted is not None and _try_set_role(conn, wanted) else None
    row = conn.execute(queries["acting_role"]).fetchone()
    assert row is not None
    current, login, bypasses = row[0], row[1], row[2]
    if bypasses:
        raise ConfigError(
            f"the database role {current!r} bypasses row-level security"
            + (f" and login {login!r} cannot act as {wanted!r}" if wanted and not acting else "")
            + ": run `mailsync db upgrade` (it creates the mailsync roles) or connect with a "
            "login that is a member of mailsync_worker (see docs/security.md)"
        )
    return acting


def _try_set_role(conn: psycopg.Connection[Any], role: str) -> bool:
    try:
        set_role(conn, role)
    except _CANNOT_TAKE:  # no such role, or the login is not allowed to take it
        return False
    return True


def set_role(conn: psycopg.Connection[Any], role: str) -> None:
    """Act as ``role`` for the rest of the session."""
    conn.execute(pgsql.SQL("SET ROLE {}").format(pgsql.Identifier(role)))


def set_local_role(conn: psycopg.Connection[Any], role: str) -> None:
    """Act as ``role`` until the current transaction ends."""
    try:
        conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(role)))
    except _CANNOT_TAKE:
        raise ConfigError(
            f"the database login cannot act as {role}: grant it the role "
            f"(GRANT {role} TO <login>, see docs/security.md)"
        ) from None


def set_tenant(conn: psycopg.Connection[Any], business_id: UUID | str) -> None:
    """The business whose rows the current transaction sees and writes (row-level security)."""
    tenant = str(validate.business_id(business_id))  # a UUID: nothing else reaches the SQL
    conn.execute(pgsql.SQL("SET LOCAL app.business_id = {}").format(pgsql.Literal(tenant)))
