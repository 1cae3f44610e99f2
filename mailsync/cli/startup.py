"""Checks before a command writes anything: the directories, the Prefect API, the database,
the Graph credentials. Each failure is one line that says what failed and what to set, and
comes within seconds (short timeouts, no retries), not after a flow run gave up.

Why ahead of time: an unreachable Prefect API failed only when the flow started, after the
job was opened; a PREFECT_HOME whose parent is missing made Prefect's temporary server time
out after three minutes; a wrong client secret failed after the chunk's retries.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import httpx

from mailsync.errors import AuthError, ConfigError, DatabaseError, GraphError
from mailsync.runtime import Runtime, resolve_database_url
from mailsync.store.db import check_connectable

PROBE_TIMEOUT_S = 5.0


def prefect_home() -> Path:
    """Where Prefect keeps its settings and its temporary server's database."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def make_directory(path: Path, variable: str) -> None:
    """``path`` and its parents, made when missing; ConfigError naming ``variable`` if not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create {variable} {path}: {exc.strerror or exc}; set {variable} to a "
            "writable directory"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{variable} {path} is not writable; set {variable} to a directory that is"
        )


def check_prefect_api() -> None:
    """Prefect's API answers its health check (or, without PREFECT_API_URL, the temporary
    server Prefect will start has a home to live in)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if not settings.api.url:
        make_directory(settings.home, "PREFECT_HOME")
        return
    url = settings.api.url.rstrip("/")
    headers = {}
    if settings.api.key:
        headers["Authorization"] = f"Bearer {settings.api.key.get_secret_value()}"
    elif settings.api.auth_string:
        token = base64.b64encode(settings.api.auth_string.get_secret_value().encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        response = httpx.get(
            f"{url}/health",
            headers=headers,
            timeout=PROBE_TIMEOUT_S,
            verify=not settings.api.tls_insecure_skip_verify,
        )
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"the Prefect API at {url} cannot be reached ({type(exc).__name__}: {exc}): start it "
            "(`prefect server start`), or fix or unset PREFECT_API_URL (unset: a temporary "
            "server runs the flow)"
        ) from None
    if response.status_code in (401, 403):
        raise ConfigError(
            f"the Prefect API at {url} refused our credentials (HTTP {response.status_code}): "
            "check PREFECT_API_KEY"
        )
    if response.status_code != 200:
        raise ConfigError(
            f"the Prefect API at {url} answered HTTP {response.status_code} to /health: set "
            "PREFECT_API_URL to the API's URL (e.g. http://127.0.0.1:4200/api)"
        )


def database_url(runtime: Runtime) -> str:
    """The database's URL, once a connection to it opened: the configured server, or the
    embedded one (started, under MAILSYNC_HOME, made when missing)."""
    settings = runtime.settings
    if settings.database_url:
        # config.load_settings reads MAILSYNC_DATABASE_URL first, then DATABASE_URL
        named = (
            "MAILSYNC_DATABASE_URL" if os.environ.get("MAILSYNC_DATABASE_URL") else "DATABASE_URL"
        )
        hint = f"check {named}"
    else:
        make_directory(settings.home, "MAILSYNC_HOME")
        hint = "set MAILSYNC_HOME to another directory, or MAILSYNC_DATABASE_URL to a server"
    try:
        url = resolve_database_url(settings)
        check_connectable(url, timeout_s=int(PROBE_TIMEOUT_S))
    except (DatabaseError, ConfigError) as exc:
        raise type(exc)(f"{exc}; {hint}") from None
    return url


def check_graph_access(runtime: Runtime) -> None:
    """A token for the Graph host, now: the credentials work and the token endpoint answers."""
    try:
        runtime.check_graph_access()
    except AuthError as exc:
        raise AuthError(
            f"{exc}; check MAILSYNC_TENANT_ID, MAILSYNC_CLIENT_ID and MAILSYNC_CLIENT_SECRET",
            code=exc.code,
        ) from None
    except GraphError as exc:  # the token endpoint cannot be reached
        raise type(exc)(
            f"{exc}; check MAILSYNC_GRAPH_URL (or --graph-url) and the network"
        ) from None
