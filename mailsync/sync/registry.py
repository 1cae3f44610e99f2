"""The mailbox registry: which mailboxes of a business sync-all keeps current, how often.

A registered mailbox is a row of ``stores`` (one per mailbox of a business, issue 9) with
``registered_at`` set, not a table of its own: the store already is the mailbox, its jobs,
folders and mail hang off it, and sync-all's claim needs the store's active job in the same
statement. A store made by an ad-hoc ``mailsync sync`` is simply not registered.

Every change here runs as the business (row-level security). Errors say what is wrong and
change nothing: an invalid mailbox, a mailbox registered twice, one that is not registered.
Removing keeps the store and its mail; ``purge`` deletes both, as the maintenance role
(the worker role may not delete stores).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from mailsync import validate
from mailsync.errors import ConflictError, InvalidInputError
from mailsync.store.db import Database, Session
from mailsync.store.rows import RegisteredMailbox, RegistryEntry, StoreRow

DEFAULT_INTERVAL_MINUTES = 60
MAX_INTERVAL_MINUTES = 7 * 24 * 60  # the column's CHECK says the same


def pool_size_for(parallel: int) -> int:
    """Database connections for a process syncing ``parallel`` mailboxes at once: each sync
    writes pages (one transaction at a time), renews its heartbeat and takes Graph slots;
    about two at a time."""
    return 2 + 2 * parallel


@dataclass(frozen=True)
class Registration:
    business_id: UUID
    mailbox: str
    folder: str = "all"
    interval_minutes: int = DEFAULT_INTERVAL_MINUTES

    @classmethod
    def checked(
        cls,
        business_id: str | UUID,
        mailbox: str,
        folder: str = "all",
        interval_minutes: int = DEFAULT_INTERVAL_MINUTES,
    ) -> Registration:
        return cls(
            business_id=validate.business_id(business_id),
            mailbox=validate.mailbox(mailbox),
            folder=validate.folder(folder),
            interval_minutes=validate.positive(
                interval_minutes, "schedule (minutes)", MAX_INTERVAL_MINUTES
            ),
        )


def add_mailbox(db: Database, registration: Registration) -> RegistryEntry:
    """Register a mailbox (due at once); ConflictError when it is registered already."""
    r = registration
    with db.transaction(r.business_id) as session:
        store = session.one_as(StoreRow, "find_store", business_id=r.business_id, mailbox=r.mailbox)
        params: dict[str, Any] = {
            "business_id": r.business_id,
            "folder": r.folder,
            "interval_minutes": r.interval_minutes,
        }
        if store is None:
            row = session.one_as(RegistryEntry, "register_new_store", mailbox=r.mailbox, **params)
        else:
            row = session.one_as(
                RegistryEntry, "register_existing_store", store_id=store.id, **params
            )
            if row is None:
                raise ConflictError(f"mailbox {store.mailbox} is already registered")
        assert row is not None
        return row


def list_mailboxes(db: Database, business_id: str | UUID) -> list[RegisteredMailbox]:
    """The business's registered mailboxes, problem mailboxes first."""
    business = validate.business_id(business_id)
    return db.all_as(RegisteredMailbox, "list_registered_mailboxes", business, business_id=business)


def remove_mailbox(
    db: Database, business_id: str | UUID, mailbox: str, *, purge: bool = False
) -> RegistryEntry:
    """Stop syncing a mailbox; with ``purge``, delete its store and mail too."""
    business, name = validate.business_id(business_id), validate.mailbox(mailbox)
    with db.transaction(business) as session:
        store = _registered(
            session.one_as(StoreRow, "find_store", business_id=business, mailbox=name), name
        )
        if purge and _has_active_job(session, store):
            raise InvalidInputError(
                f"mailbox {store.mailbox} has a sync running; purge it once the sync ended"
            )
        row = session.one_as(
            RegistryEntry, "unregister_store", store_id=store.id, business_id=business
        )
    assert row is not None, "registered under the same transaction's eyes"
    if purge:
        with db.maintenance_transaction() as session:
            session.one("purge_store", store_id=store.id, business_id=business)
    return row


def set_enabled(
    db: Database, business_id: str | UUID, mailbox: str, enabled: bool
) -> RegistryEntry:
    """Pause (False) or resume (True) a registered mailbox."""
    business, name = validate.business_id(business_id), validate.mailbox(mailbox)
    with db.transaction(business) as session:
        store = _registered(
            session.one_as(StoreRow, "find_store", business_id=business, mailbox=name), name
        )
        row = session.one_as(
            RegistryEntry,
            "set_store_enabled",
            store_id=store.id,
            business_id=business,
            enabled=enabled,
        )
    assert row is not None
    return row


def _has_active_job(session: Session, store: StoreRow) -> bool:
    row = session.one("store_has_active_job", store_id=store.id)
    return bool(row and row["active"])  # one column: no class of its own


def _registered(store: StoreRow | None, mailbox: str) -> StoreRow:
    if store is None or store.registered_at is None:
        raise InvalidInputError(
            f"mailbox {mailbox} is not registered (see `mailsync mailbox list`)"
        )
    return store


def describe(entry: RegistryEntry) -> dict[str, Any]:
    """A registered mailbox as JSON-able fields (the CLI's --json and tables)."""
    out = {name: _jsonable(value) for name, value in asdict(entry).items()}
    out["store_id"] = out.pop("id")
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value
