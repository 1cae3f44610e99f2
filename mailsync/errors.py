"""The exception tree. Each class owns one ``error_category``, decided once, here.

    MailsyncError
    ├── ConfigError            config         a missing secret, a bad DSN, a bad setting
    ├── MigrationHistoryError  migration      an applied migration's file changed or went
    ├── InvalidInputError      invalid_input  a bad mailbox id, date range, chunk size
    ├── DatabaseError          db             Postgres unreachable, a connection lost
    │   ├── ConflictError      conflict       a unique key refused the row (not retried)
    │   └── StatementError     db             a statement refused: constraint, value, SQL
    ├── LeaseLostError         stuck          our claim on a chunk was taken back
    ├── ChunkBusyError         busy           a chunk held by another live worker
    ├── ChunkAttemptError      (the cause's)  a chunk attempt failed and was recorded
    ├── SyncIncompleteError    incomplete     a job ended partial_failure or failed
    └── GraphError             graph          anything Microsoft Graph answered badly
        ├── AuthError          auth           token refused even after one refresh
        │   └── PermissionDeniedError           403: Mail.Read not granted
        ├── NotFoundError      not_found      unknown mailbox or folder
        ├── BadRequestError    bad_request    400s: InefficientFilter, bad $filter
        ├── BadDataError       bad_data       a page that is not the JSON Graph promises
        ├── ThrottledError     throttled      429 / MailboxConcurrency, Retry-After spent
        ├── GraphServerError   graph_server   5xx that outlived its retries
        ├── TransientError     transient      timeouts, resets: the network, not Graph
        ├── SyncStateExpiredError  delta_expired  a delta/skip token no longer honoured
        └── DeltaQuotaExceededError delta_quota  403 ErrorQuotaExceeded on a delta request

``retryable`` says whether a failure is worth another try at all. For a chunk attempt it
is only the input: the chunk row decides (``fail_chunk_job``: retrying while attempts are
left, else failed), and the attempt then raises ``ChunkAttemptError`` carrying that
decision, which is all the Prefect task's ``retry_condition_fn`` reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mailsync.sync.jobs imports this module
    from mailsync.sync.jobs import JobSummary


class MailsyncError(Exception):
    category: str = "internal"
    retryable: bool = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Graph's Retry-After, when it gave one: the next attempt must not start earlier.
        self.retry_after_s = retry_after_s


class ConfigError(MailsyncError):
    category = "config"


class MigrationHistoryError(MailsyncError):
    """The database applied a migration file that is no longer as it was: edited, renamed or
    removed since. Upgrading on top of it would leave a schema that no file describes, so
    nothing is applied (docs/migrations.md)."""

    category = "migration"


class InvalidInputError(MailsyncError):
    category = "invalid_input"


class MailboxBusyError(MailsyncError):
    """A sync asked to start only if the mailbox is idle found a job of it active."""

    category = "busy"


class DatabaseError(MailsyncError):
    category = "db"
    retryable = True


class ConflictError(DatabaseError):
    """A unique key refused the row: another process wrote it first. Retrying the same
    statement fails the same way; the caller decides (e.g. resume the other's job)."""

    category = "conflict"
    retryable = False


class StatementError(DatabaseError):
    """The database refused a statement (a check or foreign key, a value, a privilege, the
    SQL itself): a bug or bad data, not a blip, so not retried."""

    retryable = False


class LeaseLostError(MailsyncError):
    category = "stuck"


class ChunkBusyError(MailsyncError):
    """The chunk is held by another live worker (or waits for an earlier chunk)."""

    category = "busy"
    retryable = True


class ChunkAttemptError(MailsyncError):
    """A chunk attempt failed and the chunk row recorded it. ``retryable`` is the row's
    decision (status ``retrying``), ``category`` the cause's; the cause is ``__cause__``."""

    def __init__(self, message: str, *, category: str, will_retry: bool) -> None:
        super().__init__(message)
        self.category = category
        self.retryable = will_retry


class GraphError(MailsyncError):
    category = "graph"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status
        self.code = code


class AuthError(GraphError):
    category = "auth"
    # A token endpoint hiccup is worth one more attempt; a wrong secret fails every time,
    # and the attempt limit ends it.
    retryable = True


class PermissionDeniedError(AuthError):
    retryable = False  # admin consent does not appear between two attempts


class NotFoundError(GraphError):
    category = "not_found"


class BadRequestError(GraphError):
    category = "bad_request"


class BadDataError(GraphError):
    category = "bad_data"


class ThrottledError(GraphError):
    category = "throttled"
    retryable = True


class GraphServerError(GraphError):
    category = "graph_server"
    retryable = True


class TransientError(GraphError):
    category = "transient"
    retryable = True


def category_of(exc: BaseException) -> str:
    """The error_category to record for any exception, ours or not."""
    if isinstance(exc, MailsyncError):
        return exc.category
    return "internal"


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, MailsyncError) and exc.retryable


class SyncIncompleteError(MailsyncError):
    """The job ended ``partial_failure`` (chunks failed for good) or ``failed``: its flow run
    fails, so that Prefect automations alert. The job's summary rides along for callers
    that show it (the CLI prints it, then exits non-zero)."""

    category = "incomplete"

    def __init__(self, message: str, *, summary: JobSummary) -> None:
        super().__init__(message)
        self.summary = summary


class SyncStateExpiredError(GraphError):
    """410 Gone / SyncStateNotFound / resyncRequired: the folder's delta state is gone. Not a
    failure of the sync: its round restarts from scratch and reconciles (mailsync.sync.rounds)."""

    category = "delta_expired"


class DeltaQuotaExceededError(GraphError):
    """403 ErrorQuotaExceeded on a delta request: the mailbox cannot keep more sync state.
    The folder falls back to a full listing and reconciles (mailsync.sync.rounds)."""

    category = "delta_quota"
