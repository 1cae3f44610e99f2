"""The Microsoft identity platform as msal meets it: token, openid and discovery endpoints.

Only the client-credentials grant is simulated. Entra ID's refusals are reproduced with their
AADSTS codes, because mailsync's error messages quote them.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from mailsync.simulator.faults import Faults
from mailsync.simulator.wire import Request, Response, json_response

DEFAULT_CLIENT_ID = "sim-client"
DEFAULT_CLIENT_SECRET = "sim-secret"
DEFAULT_AUTHORITY_HOST = "login.microsoftonline.com"


class TokenStore:
    """Access tokens issued and not yet expired; thread-safe."""

    def __init__(self) -> None:
        self._tokens: dict[str, float] = {}  # access token -> monotonic expiry
        self._lock = threading.Lock()

    def issue(self, lifetime_s: float) -> str:
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0." + secrets.token_urlsafe(48)
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) > 10_000:  # long runs with short lifetimes: forget dead ones
                self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = now + lifetime_s
        return token

    def expire_all(self) -> None:
        with self._lock:
            self._tokens.clear()

    def valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
            return expiry is not None and expiry > time.monotonic()


class IdentityPlatform:
    """Answers the identity requests; ``issue_token`` mints the access tokens it hands out."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        authority_host: str,
        faults: Faults,
        issue_token: Callable[[], str],
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.authority_host = authority_host
        self._faults = faults
        self._issue_token = issue_token

    def route(self, request: Request, segments: list[str]) -> Response | None:
        """The response if this is an identity request, else None."""
        lowered = [s.lower() for s in segments]
        if len(lowered) == 4 and lowered[1:] == ["oauth2", "v2.0", "token"]:
            return self._token_endpoint(request, segments[0])
        if lowered[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return self._openid_configuration(request, segments[0])
        if lowered[1:] == ["discovery", "instance"]:
            return self._instance_discovery(request)
        return None

    def _authority(self, request: Request) -> str:
        # Behind mailsync.graph.auth.RoutedHttpClient the client believes it talks to the real
        # authority host; msal insists on https endpoints, so answer in its terms.
        host = request.headers.get("x-forwarded-host")
        if host:
            return f"{request.headers.get('x-forwarded-proto', 'https')}://{host}"
        return f"https://{self.authority_host}"

    def _openid_configuration(self, request: Request, tenant: str) -> Response:
        base = f"{self._authority(request)}/{tenant}"
        return json_response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{self._authority(request)}/{tenant}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            },
        )

    def _instance_discovery(self, request: Request) -> Response:
        params = dict(parse_qsl(request.query))
        endpoint = params.get("authorization_endpoint", "")
        path = urlsplit(endpoint).path.split("/")
        tenant = path[1] if len(path) > 1 and path[1] else "common"
        authority = self._authority(request)
        host = urlsplit(authority).netloc
        return json_response(
            200,
            {
                "tenant_discovery_endpoint": (
                    f"{authority}/{tenant}/v2.0/.well-known/openid-configuration"
                ),
                "api-version": "1.1",
                "metadata": [
                    {"preferred_network": host, "preferred_cache": host, "aliases": [host]}
                ],
            },
        )

    def _token_endpoint(self, request: Request, tenant: str) -> Response:
        if request.method != "POST":
            return aad_error(
                405, "invalid_request", "AADSTS900561: The endpoint only accepts POST requests."
            )
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        refusal = self._refuse_token_request(form, request.headers, tenant)
        if refusal is not None:
            return refusal
        if self._faults.take_token_error():
            return aad_error(
                503,
                "temporarily_unavailable",
                "AADSTS90033: A transient error has occurred. Please try again.",
            )
        lifetime = self._faults.token_lifetime_s
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": self._issue_token(),
            },
        )

    def _refuse_token_request(
        self, form: dict[str, str], headers: dict[str, str], tenant: str
    ) -> Response | None:
        """Entra ID's answers to a bad client-credentials request (msal sends the secret both
        in the form and as HTTP Basic; either is accepted)."""
        basic_id, basic_secret = basic_credentials(headers.get("authorization", ""))
        client_id = form.get("client_id") or basic_id
        secret = form.get("client_secret") or basic_secret
        grant = form.get("grant_type")
        scope = form.get("scope", "")
        if grant != "client_credentials":
            return aad_error(
                400,
                "unsupported_grant_type",
                f"AADSTS70003: The app requested an unsupported grant type '{grant}'. "
                "The simulator supports client_credentials only.",
            )
        if client_id != self.client_id:
            return aad_error(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory '{tenant}'.",
            )
        if not secret:
            return aad_error(
                401,
                "invalid_client",
                "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for "
                "the 'client_credentials' grant type.",
            )
        if not secrets.compare_digest(secret.encode(), self.client_secret.encode()):
            return aad_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in "
                "the request is the client secret value, not the client secret ID, for a secret "
                f"added to app '{client_id}'.",
            )
        if not scope.endswith("/.default"):
            return aad_error(
                400,
                "invalid_scope",
                f"AADSTS1002012: The provided value for scope {scope} is not valid. "
                "Client credential flows must have a scope value with /.default suffixed.",
            )
        return None


def aad_error(status: int, error: str, description: str) -> Response:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace_id = str(uuid.uuid4())
    match = re.match(r"AADSTS(\d+)", description)
    codes = [int(match.group(1))] if match else []
    return json_response(
        status,
        {
            "error": error,
            "error_description": f"{description} Trace ID: {trace_id} Timestamp: {now}",
            "error_codes": codes,
            "timestamp": now,
            "trace_id": trace_id,
        },
    )


def basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))
