"""App-only Graph tokens through msal (client credentials), and an ``httpx.Auth`` using them.

What msal 1.39 does for ``acquire_token_for_client`` (read in its source, application.py
``_acquire_token_silent_from_cache_and_possibly_refresh_it``; token_cache.py; authority.py;
throttled_http_client.py), and what that means here:

* It looks in its in-memory token cache first. A cached token is served until fewer than
  5 minutes of its life remain; then it is treated as expired and a new one is fetched. It
  refreshes earlier only when the token response carried ``refresh_in`` (then from
  ``refresh_on`` on, keeping the old token as a fallback if the refresh fails). Consequence:
  tokens living <= 300 s are never served from the cache (every call fetches).
* ``acquire_token_for_client`` refuses ``force_refresh``. ``claims_challenge`` would bypass
  the cache, but it also sends a ``claims`` parameter to Entra ID, which changes the request.
  So a forced refresh here removes the refused access token from msal's cache
  (``TokenCache.search`` + ``remove_at``) and asks again: a plain cache miss.
* Constructing the application fetches ``{authority}/v2.0/.well-known/openid-configuration``.
  Authorities must be ``https://host/tenant`` (msal rejects http), which is why the simulator
  is reached by rewriting URLs in ``RoutedHttpClient`` rather than by pointing msal at it.
  ``instance_discovery=False`` stops msal from asking login.microsoftonline.com about
  authority aliases (it does that after any failed token request otherwise).
* msal wraps our http client in its ThrottledHttpClient, which replays a token endpoint 429/5xx
  for Retry-After seconds (5 s if absent) and an HTTP 400 for 60 s without sending anything.
* Transport exceptions from our http client pass through msal untouched.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import msal
from msal.exceptions import MsalServiceError

from mailsync.errors import AuthError, BadDataError, ConfigError, TransientError

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
INVALID_TOKEN_CODE = "InvalidAuthenticationToken"

_T = TypeVar("_T")


class RoutedHttpClient:
    """The http client msal calls (``msal.oauth2cli.http.HttpClient`` contract), via httpx.

    msal calls ``get(url, params=, headers=)`` and ``post(url, params=, data=, headers=)`` and
    reads ``status_code``, ``text`` and ``headers`` of the result (an ``httpx.Response``).
    With ``target_base_url`` set, URLs under ``authority_host`` are sent there instead, with
    ``X-Forwarded-Host``/``-Proto`` naming the original so the simulator can answer with the
    https endpoints msal insists on. With ``None``, requests go where msal says.
    """

    def __init__(
        self,
        http: httpx.Client,
        authority_host: str = DEFAULT_AUTHORITY_HOST,
        target_base_url: str | None = None,
    ) -> None:
        self.http = http
        self.authority_host = authority_host.rstrip("/")
        self.target_base_url = target_base_url.rstrip("/") if target_base_url else None
        authority = urlsplit(self.authority_host)
        self._authority = (authority.scheme.lower(), authority.netloc.lower())

    def route(self, url: str) -> tuple[str, dict[str, str]]:
        """(URL to send to, extra headers)."""
        parts = urlsplit(url)
        if self.target_base_url is None or (parts.scheme.lower(), parts.netloc.lower()) != (
            self._authority
        ):
            return url, {}
        rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
        forwarded = {"X-Forwarded-Host": parts.netloc, "X-Forwarded-Proto": parts.scheme}
        return self.target_base_url + rest, forwarded

    def get(
        self,
        url: str,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return self._send("GET", url, params, None, headers, kwargs.get("timeout"))

    def post(
        self,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | str | bytes | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return self._send("POST", url, params, data, headers, kwargs.get("timeout"))

    def close(self) -> None:
        """msal may call this; the httpx client belongs to whoever passed it in."""

    def _send(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None,
        data: dict[str, Any] | str | bytes | None,
        headers: dict[str, str] | None,
        timeout: float | None,
    ) -> httpx.Response:
        target, extra = self.route(url)
        merged = {**(headers or {}), **extra}
        options: dict[str, Any] = {"params": params, "headers": merged}
        if isinstance(data, dict):
            options["data"] = data  # form-encoded, as OAuth2 wants
        elif data is not None:
            options["content"] = data  # msal's "send as-is" case
        if timeout is not None:
            options["timeout"] = timeout
        return self.http.request(method, target, **options)


@dataclass(frozen=True)
class AccessToken:
    token: str = field(repr=False)
    expires_in: int
    from_cache: bool


class TokenProvider:
    """Client-credentials tokens for Graph; thread-safe, one msal application per provider."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        authority_host: str = DEFAULT_AUTHORITY_HOST,
        http_client: RoutedHttpClient | None = None,
        scopes: Sequence[str] = (GRAPH_SCOPE,),
    ) -> None:
        missing = [
            name
            for name, value in (
                ("tenant id", tenant_id),
                ("client id", client_id),
                ("client secret", client_secret),
            )
            if not (value or "").strip()
        ]
        if missing:
            raise ConfigError(f"Graph credentials incomplete: missing {', '.join(missing)}")
        self.tenant_id = tenant_id.strip()
        self.client_id = client_id.strip()
        self._secret = client_secret
        self.authority = f"{authority_host.rstrip('/')}/{self.tenant_id}"
        self._owns_http = http_client is None
        self._http_client = http_client or RoutedHttpClient(
            httpx.Client(timeout=httpx.Timeout(30.0, connect=10.0)), authority_host
        )
        self._scopes = list(scopes)
        self._app: msal.ConfidentialClientApplication | None = None
        # One lock for every acquisition: cache hits take microseconds, and serializing
        # misses means threads sharing a provider fetch one token, not one each.
        self._lock = threading.Lock()
        self.fetches = 0  # tokens obtained from the identity provider (not from the cache)

    def __repr__(self) -> str:
        return f"TokenProvider(authority={self.authority!r}, client_id={self.client_id!r})"

    def token(self, force_refresh: bool = False, *, rejected: str | None = None) -> str:
        """A bearer token. ``force_refresh`` bypasses msal's cache; with ``rejected`` (the
        token Graph refused) only that token is dropped, so when another thread already
        replaced it, its replacement is returned without a second fetch."""
        return self.acquire(force_refresh, rejected=rejected).token

    def acquire(self, force_refresh: bool = False, *, rejected: str | None = None) -> AccessToken:
        with self._lock:
            app = self._application()
            if force_refresh:
                _drop_access_tokens(app, self.client_id, rejected)
            result = self._call_msal(lambda: app.acquire_token_for_client(scopes=self._scopes))
            if not result or "access_token" not in result:
                raise self._refused(result or {})
            from_cache = result.get("token_source") == "cache"
            self.fetches += not from_cache
            return AccessToken(result["access_token"], int(result.get("expires_in", 0)), from_cache)

    def close(self) -> None:
        if self._owns_http:
            self._http_client.http.close()

    def _application(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            routed = self._http_client.target_base_url is not None
            self._app = self._call_msal(
                lambda: msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._secret,
                    authority=self.authority,
                    http_client=self._http_client,
                    instance_discovery=False,
                    # A regional endpoint ({region}.login.microsoft.com, from MSAL_FORCE_REGION)
                    # would bypass the routing to the simulator.
                    azure_region=False if routed else None,
                )
            )
        return self._app

    def _call_msal(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except httpx.TransportError as exc:
            raise TransientError(
                f"token endpoint {self.authority} unreachable: {type(exc).__name__}"
            ) from None
        except MsalServiceError as exc:  # msal raises these for 5xx answers
            raise AuthError(self._redact(f"token endpoint failed: {exc}")) from None
        except ValueError as exc:  # authority discovery failed, or a non-JSON token answer
            raise AuthError(self._redact(f"token request failed: {exc}")) from None

    def _refused(self, result: dict[str, Any]) -> AuthError:
        code = str(result.get("error") or "no_token")
        description = str(result.get("error_description") or "msal returned no access token")
        message = f"token request for {self.authority} refused: {code}: {description}"
        return AuthError(self._redact(message), code=code)

    def _redact(self, text: str) -> str:
        # Entra ID never echoes the secret, but an error message must not be the one place
        # it leaks if some proxy or future msal version does.
        return text.replace(self._secret, "***") if self._secret else text


def _drop_access_tokens(
    app: msal.ConfidentialClientApplication, client_id: str, only: str | None
) -> None:
    cache = app.token_cache
    entries = list(
        cache.search(cache.CredentialType.ACCESS_TOKEN, query={"client_id": client_id})
    )  # a list first: search() holds the cache lock while it yields
    for entry in entries:
        if only is None or entry.get("secret") == only:
            cache.remove_at(entry)


class GraphAuth(httpx.Auth):
    """Bearer auth for Graph: on a 401 InvalidAuthenticationToken, one fresh token, one retry.

    ``sync_auth_flow`` is overridden (httpx's advice when the token source does I/O and
    takes locks); the body is read only for a 401, so streamed pages stay streamed.
    """

    def __init__(self, provider: TokenProvider, origin: str | None = None) -> None:
        self.provider = provider
        # With an origin, the token is sent there only: a link in a Graph answer (nextLink)
        # naming another host must not carry it away.
        self._origin = url_origin(origin) if origin else None
        self._lock = threading.Lock()
        self.token_fetches = 0  # tokens this auth got from the identity provider, not the cache
        self.refreshes = 0  # forced refreshes after Graph refused a token

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        if self._origin is not None and origin_of(request.url) != self._origin:
            raise BadDataError(
                f"refusing to send the Graph token to {request.url.scheme}://{request.url.host}"
                f" (not {self._origin[0]}://{self._origin[1]}): a link from Graph points elsewhere"
            )
        token = self._token(force_refresh=False, rejected=None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        response.read()
        if _graph_error_code(response) != INVALID_TOKEN_CODE:
            return
        with self._lock:
            self.refreshes += 1
        token = self._token(force_refresh=True, rejected=token)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request  # a second 401 goes back to the caller: the token is really refused

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise RuntimeError("GraphAuth is synchronous (msal blocks); use it with httpx.Client")
        yield request  # type: ignore[unreachable]  # makes this an async generator, as httpx expects

    def _token(self, *, force_refresh: bool, rejected: str | None) -> str:
        acquired = self.provider.acquire(force_refresh, rejected=rejected)
        if not acquired.from_cache:
            with self._lock:
                self.token_fetches += 1
        return acquired.token


def url_origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) of a URL, the default port made explicit."""
    return origin_of(httpx.URL(url))


def origin_of(parsed: httpx.URL) -> tuple[str, str]:
    """``url_origin`` of a URL httpx has parsed already (a request's: parsing a deltaLink of
    a few hundred characters again, character by character, cost ~25 µs a request)."""
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    return parsed.scheme, f"{parsed.host}:{port}"


def _graph_error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None
