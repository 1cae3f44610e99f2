"""The exception tree. Each class owns one ``error_category``, decided once, here.

    MailsyncError
    ├── ConfigError            config         a missing secret, a bad DSN, a bad setting
    ├── InvalidInputError      invalid_input  a bad mailbox id, date range, chunk size
    ├── DatabaseError          db             Postgres unreachable or a statement failed
    ├── LeaseLostError         stuck          our claim on a chunk was taken back
    └── GraphError             graph          anything Microsoft Graph answered badly
        ├── AuthError          auth           token refused even after one refresh
        │   └── PermissionDeniedError           403: Mail.Read not granted
        ├── NotFoundError      not_found      unknown mailbox or folder
        ├── BadRequestError    bad_request    400s: InefficientFilter, bad $filter
        ├── BadDataError       bad_data       a page that is not the JSON Graph promises
        ├── ThrottledError     throttled      429 / MailboxConcurrency, Retry-After spent
        ├── GraphServerError   graph_server   5xx that outlived its retries
        └── TransientError     transient      timeouts, resets: the network, not Graph

``retryable`` says whether a whole chunk attempt is worth repeating: the Prefect task
retries only those (``retry_condition_fn``), everything else fails the chunk at once.
"""

from __future__ import annotations


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


class InvalidInputError(MailsyncError):
    category = "invalid_input"


class DatabaseError(MailsyncError):
    category = "db"
    retryable = True


class LeaseLostError(MailsyncError):
    category = "stuck"


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
