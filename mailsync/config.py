"""Settings, read once from the environment, typed, with the defaults argued for here.

Sizes: Graph serves at most 1,000 messages a page and large pages with full bodies can
time out (504), so a page is 500 messages of the selected fields only (~1.5 MB with a few
KB of body each). A chunk is 5,000 messages: ten pages, a few seconds of work, small enough
that a retried chunk repeats little and large enough that the per-chunk bookkeeping (a
claim, a Prefect task run, a completion) is noise. 100,000 messages are 20 chunks and 200
requests, far below Outlook's 10,000 requests per 10 minutes per mailbox.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from mailsync.errors import ConfigError

DEFAULT_CHUNK_SIZE = 5_000
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1_000  # Graph's limit for $top on messages
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_HEARTBEAT_S = 10.0
# Stuck after three missed heartbeats: a dead worker's chunk is back within ~40 s.
DEFAULT_STUCK_AFTER_S = 30.0
GRAPH_URL = "https://graph.microsoft.com"
AUTHORITY_HOST = "https://login.microsoftonline.com"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _env_flag(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "on", "yes"):
        return True
    if raw.lower() in ("0", "false", "off", "no"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}")


def default_home() -> Path:
    from platformdirs import user_data_dir  # shipped with prefect; the XDG-aware answer

    return Path(user_data_dir("mailsync", appauthor=False))


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None  # None: the embedded PostgreSQL under home
    graph_url: str = GRAPH_URL
    authority_host: str = AUTHORITY_HOST
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    page_size: int = DEFAULT_PAGE_SIZE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    stuck_after_s: float = DEFAULT_STUCK_AFTER_S
    # Chunk retry backoff: base * 2**(attempt-1), jittered, capped; Retry-After wins.
    retry_base_s: float = 2.0
    retry_max_s: float = 120.0
    # In-request retries of 429/5xx inside the Graph client before the chunk attempt fails.
    http_max_retries: int = 6
    http_backoff_base_s: float = 0.5
    http_backoff_max_s: float = 30.0
    http_timeout_s: float = 60.0
    # Connections of the process's pool: a sync uses about two at a time (its page writes,
    # one transaction each on the attempt's thread; its heartbeat and Graph's limits);
    # `mailsync sync-all --parallel N` asks for 2 + 2N (mailsync.sync.registry.pool_size_for).
    db_pool_size: int = 4
    # Graph's limits, held by every worker at once through Postgres (mailsync/graph/limits.py):
    # per mailbox (Outlook's: 4 in flight, 10,000 requests in 10 minutes) and for the app
    # as a whole (a ceiling of our own; Graph's global limit is 130,000 per 10 s).
    graph_limits: bool = True
    graph_mailbox_concurrency: int = 4
    graph_mailbox_requests: int = 10_000
    graph_mailbox_window_s: float = 600.0
    graph_app_concurrency: int = 256
    graph_app_requests: int = 130_000
    graph_app_window_s: float = 10.0
    # Attachments (mailsync.sync.attachments): content (bytes, once per hash), metadata
    # (the list only) or none; the largest content kept (Graph's own maximum is 150 MB).
    attachments: str = "content"
    attachment_max_mb: float = 150.0

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


def load_settings() -> Settings:
    home = Path(_env("MAILSYNC_HOME") or default_home()).expanduser()
    return Settings(
        home=home,
        database_url=_env("MAILSYNC_DATABASE_URL") or _env("DATABASE_URL"),
        graph_url=(_env("MAILSYNC_GRAPH_URL") or GRAPH_URL).rstrip("/"),
        authority_host=(_env("MAILSYNC_AUTHORITY_HOST") or AUTHORITY_HOST).rstrip("/"),
        tenant_id=_env("MAILSYNC_TENANT_ID"),
        client_id=_env("MAILSYNC_CLIENT_ID"),
        client_secret=_env("MAILSYNC_CLIENT_SECRET"),
        chunk_size=env_int("MAILSYNC_CHUNK_SIZE", DEFAULT_CHUNK_SIZE),
        page_size=env_int("MAILSYNC_PAGE_SIZE", DEFAULT_PAGE_SIZE),
        max_attempts=env_int("MAILSYNC_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
        heartbeat_s=env_float("MAILSYNC_HEARTBEAT_S", DEFAULT_HEARTBEAT_S),
        stuck_after_s=env_float("MAILSYNC_STUCK_AFTER_S", DEFAULT_STUCK_AFTER_S),
        retry_base_s=env_float("MAILSYNC_RETRY_BASE_S", 2.0),
        retry_max_s=env_float("MAILSYNC_RETRY_MAX_S", 120.0),
        http_max_retries=env_int("MAILSYNC_HTTP_MAX_RETRIES", 6),
        http_backoff_base_s=env_float("MAILSYNC_HTTP_BACKOFF_BASE_S", 0.5),
        http_backoff_max_s=env_float("MAILSYNC_HTTP_BACKOFF_MAX_S", 30.0),
        http_timeout_s=env_float("MAILSYNC_HTTP_TIMEOUT_S", 60.0),
        db_pool_size=env_int("MAILSYNC_DB_POOL_SIZE", 4),
        graph_limits=_env_flag("MAILSYNC_GRAPH_LIMITS", True),
        graph_mailbox_concurrency=env_int("MAILSYNC_GRAPH_MAILBOX_CONCURRENCY", 4),
        graph_mailbox_requests=env_int("MAILSYNC_GRAPH_MAILBOX_REQUESTS", 10_000),
        graph_mailbox_window_s=env_float("MAILSYNC_GRAPH_MAILBOX_WINDOW_S", 600.0),
        graph_app_concurrency=env_int("MAILSYNC_GRAPH_APP_CONCURRENCY", 256),
        graph_app_requests=env_int("MAILSYNC_GRAPH_APP_REQUESTS", 130_000),
        graph_app_window_s=env_float("MAILSYNC_GRAPH_APP_WINDOW_S", 10.0),
        attachments=attachments_mode(_env("MAILSYNC_ATTACHMENTS", "content") or "content"),
        attachment_max_mb=env_float("MAILSYNC_ATTACHMENT_MAX_MB", 150.0),
    )


ATTACHMENT_MODES = ("content", "metadata", "none")


def attachments_mode(value: str) -> str:
    """An attachments mode, checked: content, metadata or none."""
    mode = value.strip().lower()
    if mode not in ATTACHMENT_MODES:
        raise ConfigError(
            f"attachments must be one of {', '.join(ATTACHMENT_MODES)}, got {value!r}"
        )
    return mode
