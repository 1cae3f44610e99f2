"""The process's long-lived resources: one database pool, one Graph HTTP client per URL,
one page prefetcher (its threads), all closed together.

Flows and tasks ask for them here instead of receiving them as parameters: Prefect stores
parameters (and shows them in the UI), and a pool or a client with a secret inside does not
belong there. Built lazily from the environment, so a deployment's flow run in a fresh
worker process builds its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from mailsync import collector
from mailsync.config import GRAPH_URL, Settings, load_settings
from mailsync.errors import ConfigError, InvalidInputError
from mailsync.graph.auth import GraphAuth, RoutedHttpClient, TokenProvider
from mailsync.graph.client import GraphClient
from mailsync.graph.limits import graph_transport
from mailsync.graph.prefetch import PagePrefetch
from mailsync.store.db import Database
from mailsync.store.pgembed import embedded_database_url
from mailsync.sync import shutdown

SECRET_BLOCK = "mailsync-client-secret"


def resolve_database_url(settings: Settings) -> str:
    return settings.database_url or embedded_database_url(settings.home)


def _secret_from_prefect_block() -> str | None:
    """The client secret from the Prefect Secret block, when a Prefect API holds one."""
    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(SECRET_BLOCK).get())  # type: ignore[union-attr]
    except Exception:  # no API, no block: the caller says what to configure
        return None


def graph_credentials(settings: Settings) -> tuple[str, str, str]:
    secret = settings.client_secret or _secret_from_prefect_block()
    missing = [
        name
        for name, value in (
            ("MAILSYNC_TENANT_ID", settings.tenant_id),
            ("MAILSYNC_CLIENT_ID", settings.client_id),
            ("MAILSYNC_CLIENT_SECRET", secret),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            "missing Graph credentials: set "
            + ", ".join(missing)
            + f" (the secret may instead live in the Prefect Secret block '{SECRET_BLOCK}')"
        )
    return settings.tenant_id, settings.client_id, secret  # type: ignore[return-value]


@dataclass
class Runtime:
    settings: Settings
    _db: Database | None = None
    _http: dict[str, httpx.Client] = field(default_factory=dict)
    # Per Graph URL: its token provider and the HTTP client msal's requests go through.
    _tokens: dict[str, tuple[TokenProvider, httpx.Client]] = field(default_factory=dict)
    _prefetch: PagePrefetch | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def prefetch(self) -> PagePrefetch:
        """The process's page prefetcher: every attempt's pages come through it, in waits
        that a stop wakes (mailsync.sync.shutdown), and a round's requests made ahead are
        handed from one chunk to the next."""
        with self._lock:
            if self._prefetch is None:
                self._prefetch = PagePrefetch(wait=shutdown.result)
            return self._prefetch

    @property
    def db(self) -> Database:
        with self._lock:
            if self._db is None:
                url = resolve_database_url(self.settings)
                self._db = Database(url, max_size=self.settings.db_pool_size)
            return self._db

    def reserve_db_connections(self, size: int) -> None:
        """At least ``size`` database connections for this process, when its pool is not
        built yet (a deployment's fresh flow run process, which syncs mailboxes in threads:
        the environment's size is one sync's). A pool already built (the CLI's, a test's)
        is the caller's choice and stays."""
        with self._lock:
            if self._db is None and self.settings.db_pool_size < size:
                self.settings = self.settings.with_overrides(db_pool_size=size)

    def graph_url(self, requested: str | None = None) -> str:
        """The Graph host to use: the configured one, or Microsoft's when ``requested``.

        A flow parameter never chooses another host: msal's token requests go to the Graph
        host too, with the client secret in them. Another host (a simulator, a proxy) is the
        operator's choice: MAILSYNC_GRAPH_URL, or the CLI's --graph-url.
        """
        configured = self.settings.graph_url.rstrip("/")
        url = (requested or configured).rstrip("/")
        if url not in (configured, GRAPH_URL):
            parts = urlsplit(url)  # scheme and host only: a URL may carry user:password@
            raise InvalidInputError(
                f"graph_url {parts.scheme}://{parts.hostname} is not the configured Graph "
                f"host ({configured}); set MAILSYNC_GRAPH_URL to use another one"
            )
        return url

    def check_graph_access(self, graph_url: str | None = None) -> None:
        """Get a token for the Graph host now: wrong credentials or an unreachable token
        endpoint fail here, before anything is written. msal keeps the token for the sync."""
        self._token_provider(self.graph_url(graph_url)).acquire()

    def graph(self, graph_url: str | None = None) -> GraphClient:
        """A Graph client (its own request counter) over the shared HTTP client for the URL."""
        url = self.graph_url(graph_url)
        provider = self._token_provider(url)
        with self._lock:
            if url not in self._http:
                self._http[url] = self._http_client(url, provider)
        s = self.settings
        return GraphClient(
            self._http[url],
            base_url=url,
            max_retries=s.http_max_retries,
            backoff_base_s=s.http_backoff_base_s,
            backoff_max_s=s.http_backoff_max_s,
        )

    def _token_provider(self, graph_url: str) -> TokenProvider:
        with self._lock:
            if graph_url not in self._tokens:
                tenant_id, client_id, secret = graph_credentials(self.settings)
                # --graph-url aims msal's token requests at the same host (a simulator, a proxy).
                target = None if graph_url == GRAPH_URL else graph_url
                token_http = httpx.Client(timeout=self._timeout())
                provider = TokenProvider(
                    tenant_id,
                    client_id,
                    secret,
                    authority_host=self.settings.authority_host,
                    http_client=RoutedHttpClient(token_http, self.settings.authority_host, target),
                )
                self._tokens[graph_url] = (provider, token_http)
            return self._tokens[graph_url][0]

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.settings.http_timeout_s, connect=10.0)

    def _http_client(self, graph_url: str, provider: TokenProvider) -> httpx.Client:
        return httpx.Client(
            auth=GraphAuth(provider, origin=graph_url),  # the token goes to this host only
            timeout=self._timeout(),
            # Every request inside a slot of Graph's limits, shared by all workers.
            transport=graph_transport(self.settings, lambda: self.db),
        )

    def close(self) -> None:
        with self._lock:
            prefetch, self._prefetch = self._prefetch, None
        # First, and outside the lock: its threads finish their requests through the HTTP
        # clients, and Graph's limits (their slots) ask ``db`` for the pool, under the lock.
        # A request that hangs is not waited for past a moment: its slot's lease ends later.
        if prefetch is not None:
            prefetch.close()
        with self._lock:
            for client in self._http.values():
                client.close()
            self._http.clear()
            for _, token_http in self._tokens.values():
                token_http.close()
            self._tokens.clear()
            if self._db is not None:
                self._db.close()
                self._db = None


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            collector.set_gc_policy()  # a deployment's flow run: the first flow of its process
            _runtime = Runtime(load_settings())
        return _runtime


def configure(settings: Settings) -> Runtime:
    """Make the process's runtime one built from ``settings`` (the CLI's, with its
    command-line overrides); the resources of the one before are closed."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = Runtime(settings)
        return _runtime


def reset_runtime() -> None:
    """Forget the resources (tests change the environment between runs)."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
