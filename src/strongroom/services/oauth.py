"""OAuth: admin-managed providers, and access tokens of `oauth` credentials that refresh themselves, once.

`access_token` answers the credential's access token while it is valid for longer than the refresh margin;
otherwise it refreshes it with the refresh-token grant at the credential's provider and stores the new access
token (and the rotated refresh token, if the provider rotated it) sealed, with the use's audit record, in one
transaction. Concurrent callers, in one process or several on one PostgreSQL database, wait on the credential's
refresh lock (store/repositories/oauth.py) and then find the token the first one stored: one refresh at the
provider. A refresh token the provider rejects marks the credential as needing re-authorisation (persisted,
with the provider's error code), and later calls answer so without calling the provider, until the
credential's secret is replaced.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from strongroom import credential_types
from strongroom.config import Settings
from strongroom.crypto.barrier import Barrier, RecordBinding
from strongroom.crypto.envelope import Sealed
from strongroom.errors import Conflict, InvalidInput, NotFound, StrongroomError
from strongroom.representation import iso
from strongroom.services.accounts import Principal
from strongroom.services.audit import Event
from strongroom.services.connections import Connector
from strongroom.services.credentials import CredentialService, is_id
from strongroom.store.db import Database
from strongroom.store.models import new_id, utcnow
from strongroom.store.repositories.oauth import Flight, OAuthRepository, ProviderNameTaken

if TYPE_CHECKING:  # httpx (and the rich console its command line brings) loads at the first refresh
    import httpx

AUTH_METHODS = ("client_secret_basic", "client_secret_post")
URL_MAX = 2048
CLIENT_ID_MAX = 1024
ASSUMED_LIFETIME = timedelta(hours=1)  # a token answer without expires_in
ANSWER_MAX = 1 << 20  # bytes of a token endpoint's answer read (a real one is a few KiB)
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LIFETIME = re.compile("[0-9]{1,9}")  # expires_in as a string: seconds, under the 10**9 kept below
_PROVIDER_FIELDS = ("name", "tokenUrl", "clientId", "clientSecret", "tokenEndpointAuthMethod")
_CONTROL = re.compile(r"[\u0000-\u001f\u007f-\u009f]")


@cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context of every refresh (certifi's CA bundle), built once: httpx builds one per client otherwise,
    loading the bundle each time (more than the refresh's round trip on loopback)."""
    import httpx

    return httpx.create_ssl_context(trust_env=False)


class ProviderFailed(StrongroomError):
    """The OAuth provider could not be reached or answered with an error that is not about the refresh token."""

    status_code = 502


class ProviderDown(ProviderFailed):
    """The OAuth provider itself failed (unreachable, or a 5xx answer), whoever asked: worth not calling again for a
    few seconds, unlike an answer about the caller's own grant or client."""


class ProviderTimeout(StrongroomError):
    """The OAuth provider did not answer in time."""

    status_code = 504


class ReauthorisationNeeded(Conflict):
    """The provider rejected the credential's refresh token: someone must authorise again and store the new one."""


@dataclass(frozen=True)
class Tokens:
    """A credential's tokens as they stand (from its token state, or from its own secret before any refresh)."""

    access: str | None
    refresh: str
    expires_at: datetime | None
    token_type: str
    reauth_at: datetime | None
    reauth_error: str | None
    seal_generation: int  # of the stored state; 0: none stored yet

    def fresh(self, margin: timedelta) -> bool:
        """Whether the access token is known to stay valid for longer than `margin`."""
        return self.access is not None and self.expires_at is not None and self.expires_at - utcnow() > margin


def _admin(who: Principal | None) -> None:
    """Administrators only: a principal with the admin scope, or None (the machine's local administrator)."""
    if who is not None:
        who.require("admin")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", {field: message})


def _unusable(field: str, message: str) -> Conflict:
    """The stored credential cannot give an access token as it stands (a valid request, the wrong resource)."""
    return Conflict(f"{field}: {message}", {field: message})


def _text(body: Mapping[str, Any], field: str, limit: int, *, secret: bool = False) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise _invalid(field, "must be a non-empty string")
    if len(value) > limit:
        raise _invalid(field, f"at most {limit} characters")
    if not secret and _CONTROL.search(value):
        raise _invalid(field, "must not contain control characters")
    return value


def check_token_url(value: Any) -> str:
    """An absolute http(s) URL with a host, no credentials and no fragment (422 naming `tokenUrl` otherwise)."""
    if not isinstance(value, str) or not value or len(value) > URL_MAX or _CONTROL.search(value):
        raise _invalid("tokenUrl", f"must be an http(s) URL of at most {URL_MAX} characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _invalid("tokenUrl", "must be an http(s) URL with a valid host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment or port == 0:
        raise _invalid("tokenUrl", "must be an absolute http(s) URL with a host and no fragment")
    if parts.username is not None or parts.password is not None:
        raise _invalid("tokenUrl", "must not hold a user name or password (give clientId and clientSecret)")
    return value


def _provider_wire(row: Mapping[str, Any]) -> dict[str, Any]:
    """A provider as the API shows it: never its client secret."""
    return {
        "id": row["id"],
        "name": row["name"],
        "tokenUrl": row["token_url"],
        "clientId": row["client_id"],
        "tokenEndpointAuthMethod": row["auth_method"],
        "createdAt": iso(Database.as_datetime(row["created_at"]) or row["created_at"]),
    }


class OAuthService:
    """OAuth providers (administrators) and self-refreshing access tokens of `oauth` credentials."""

    def __init__(
        self,
        repo: OAuthRepository,
        credentials: CredentialService,
        barrier: Barrier,
        settings: Settings,
        connector: Connector,
    ) -> None:
        self.repo = repo
        self.credentials = credentials
        self.barrier = barrier
        self.connector = connector
        self.margin = timedelta(seconds=settings.oauth_refresh_margin)
        self.read_timeout, self.connect_timeout = settings.statement_timeout, settings.connect_timeout
        self.backoff = settings.oauth_failure_backoff
        # (provider id, grant) -> (when the provider failed for that grant, how): see _refresh_unless_down
        self._down: dict[tuple[str, str], tuple[float, StrongroomError]] = {}

    # ---- providers (administrators) -------------------------------------------------------------------------

    def create_provider(self, who: Principal | None, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, seal the client secret and store a provider (admin scope, or None: local; audited); its API
        JSON."""
        _admin(who)
        unknown = sorted(k for k in body if k not in _PROVIDER_FIELDS)
        if unknown:
            shown = unknown[0][:64] if not _CONTROL.search(unknown[0]) else "(unprintable)"
            raise _invalid(shown, "unknown field for an OAuth provider")
        if "name" not in body:
            raise _invalid("name", "is required")
        name = credential_types.check_name(body["name"])
        token_url = check_token_url(body.get("tokenUrl"))
        client_id = _text(body, "clientId", CLIENT_ID_MAX)
        client_secret = _text(body, "clientSecret", credential_types.VALUE_MAX, secret=True)
        method = body.get("tokenEndpointAuthMethod", AUTH_METHODS[0])
        if method not in AUTH_METHODS:
            raise _invalid("tokenEndpointAuthMethod", f"must be one of {', '.join(AUTH_METHODS)}")
        row: dict[str, Any] = {
            "id": new_id(),
            "name": name,
            "token_url": token_url,
            "client_id": client_id,
            "auth_method": method,
            "seal_generation": 1,
            "created_at": utcnow(),
        }
        sealed = self.barrier.seal(RecordBinding("oauth-provider", row["id"], 1), {"clientSecret": client_secret})
        row.update(key_version=sealed.key_version, wrapped_key=sealed.wrapped_key, ciphertext=sealed.ciphertext)
        audit = Event("oauth_provider.create", 201, who, detail={"providerId": row["id"], "name": name}).entry()
        try:
            self.repo.insert_provider(row, audit)
        except ProviderNameTaken:
            raise Conflict(f"name: the name {name[:80]!r} is already in use", {"name": "already in use"}) from None
        return _provider_wire(row)

    def list_providers(self, who: Principal | None) -> list[dict[str, Any]]:
        """Every provider, oldest first (admin scope)."""
        _admin(who)
        return [_provider_wire(r) for r in self.repo.providers()]

    def get_provider(self, who: Principal | None, provider_id: str) -> dict[str, Any]:
        """One provider (admin scope); 404 if unknown."""
        _admin(who)
        return _provider_wire(self._provider(provider_id))

    def delete_provider(self, who: Principal | None, provider_id: str) -> None:
        """Delete a provider (admin scope; audited); 409 naming how many credentials still name it."""
        _admin(who)
        row = self._provider(provider_id)
        using = self.repo.credentials_using(provider_id)
        if using:
            msg = f"{using} oauth credential(s) name this provider; point them elsewhere first"
            raise Conflict(f"oauthProvider: {msg}", {"oauthProvider": "in use"})
        audit = Event("oauth_provider.delete", 204, who, detail={"providerId": provider_id, "name": row["name"]})
        if not self.repo.delete_provider(provider_id, audit.entry()):
            raise NotFound("OAuth provider not found")

    def _provider(self, provider_id: str) -> dict[str, Any]:
        found = self.repo.provider(provider_id) if is_id(provider_id) else None
        if found is None:
            raise NotFound("OAuth provider not found")
        return found

    # ---- access tokens --------------------------------------------------------------------------------------

    def access_token(self, who: Principal, credential_id: str) -> dict[str, Any]:
        """A valid access token of an `oauth` credential the caller may use (`use` scope, CONSUMER up):
        `{accessToken, expiresAt, tokenType}`, refreshed first when it expires within the margin. Audited as
        credential.use, once per call; never the token."""
        row, fields = self.credentials.held(who, credential_id)
        if row["credential_type"] != "oauth":
            msg = f"is a {row['credential_type']!r} credential; only oauth credentials have access tokens"
            raise _unusable("credentialType", msg)
        provider_id = fields.get("oauthProviderId")
        if not provider_id:
            raise _unusable("oauthProviderId", "the credential names no OAuth provider; set one with PATCH")
        provider = self.repo.provider(provider_id) if is_id(provider_id) else None
        if provider is None:
            raise _unusable("oauthProviderId", "no such OAuth provider (deleted, or never created)")
        source = {"token": fields.get("token"), "refreshToken": fields.get("refreshToken")}

        current = self._tokens(self.repo.state(credential_id), row, source)
        if current.reauth_at is not None:  # marked: answered without the lock, and without the provider
            raise _reauthorise(row, current.reauth_error)
        if current.fresh(self.margin):
            self.repo.record(_use(who, row, refreshed=False))
            return _answer(current)

        def decide(state: dict[str, Any] | None) -> Flight:
            tokens = self._tokens(state, row, source)
            if tokens.reauth_at is not None:
                raise _reauthorise(row, tokens.reauth_error)
            if tokens.fresh(self.margin):  # another caller refreshed while this one waited for the lock
                return Flight(audit=_use(who, row, refreshed=False), result=_answer(tokens))
            generation = tokens.seal_generation + 1
            try:
                answer = self._refresh_unless_down(provider, tokens.refresh, grant=credential_id)
            except _Rejected as rejected:
                marked = {"refresh": tokens.refresh, "access": None, "source": source}
                state_row = self._state_row(credential_id, row, generation, marked, None, tokens.token_type)
                state_row.update(reauth_at=utcnow(), reauth_error=rejected.code)
                return Flight(state=state_row, extra={"rejected": rejected.code})
            expires_at = utcnow() + (
                timedelta(seconds=answer["expires_in"]) if answer["expires_in"] is not None else ASSUMED_LIFETIME
            )
            rotated = answer["refresh_token"] or tokens.refresh
            new = {"refresh": rotated, "access": answer["access_token"], "source": source}
            state_row = self._state_row(credential_id, row, generation, new, expires_at, answer["token_type"])
            refreshed = Tokens(answer["access_token"], new["refresh"], expires_at, answer["token_type"], None, None, 0)
            return Flight(
                state=state_row,
                audit=_use(who, row, refreshed=True, rotated=answer["refresh_token"] is not None),
                result=_answer(refreshed),
            )

        flight = self.repo.single_flight(credential_id, decide)
        if "rejected" in flight.extra:
            raise _reauthorise(row, flight.extra["rejected"])
        result: dict[str, Any] = flight.result
        return result

    def access_token_for_data(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """An access token from an inline oauth `credentialData` (used once, never stored) at the provider named by
        `oauthProviderId`, whose token endpoint it uses (its client id and secret too, unless the data gives
        them): `{accessToken, expiresAt, tokenType, refreshToken}`, `refreshToken` being the one to use next time
        (rotated by the provider, or the one given). `use` scope; audited as credential.use, never a token."""
        who.require("use")
        unknown = sorted(k for k in body if k not in ("credentialData", "oauthProviderId"))
        if unknown:
            shown = unknown[0][:64] if not _CONTROL.search(unknown[0]) else "(unprintable)"
            raise _invalid(shown, "unknown field; give credentialData and oauthProviderId")
        if body.get("credentialData") is None:
            raise _invalid("credentialData", "is required")
        ctype, values = credential_types.parse_credential_data(body["credentialData"])
        if ctype.name != "oauth":
            raise _invalid("credentialData.credentialType", "must be oauth to get an access token")
        provider_id = body.get("oauthProviderId")
        if not isinstance(provider_id, str) or not provider_id:
            raise _invalid("oauthProviderId", "must name the OAuth provider whose token endpoint to use")
        provider = self._provider(provider_id)
        refresh = str(values["oauthRefreshToken"])
        client = (values.get("oauthClientId"), values.get("oauthClientSecret"))
        grant = hashlib.sha256(f"{client[0] or ''}\0{refresh}".encode()).hexdigest()  # the data's own key, no token
        try:
            answer = self._refresh_unless_down(provider, refresh, client, grant=f"data:{grant}")
        except _Rejected as rejected:
            raise ReauthorisationNeeded(
                f"credentialData.oauthRefreshToken: the OAuth provider rejected the refresh token ({rejected.code}): "
                "authorise again for a new one",
                {"credentialData.oauthRefreshToken": "rejected by the OAuth provider"},
            ) from None
        lifetime = answer["expires_in"]
        expires_at = utcnow() + (timedelta(seconds=lifetime) if lifetime is not None else ASSUMED_LIFETIME)
        audit = Event("credential.use", 200, who, detail={"purpose": "accessToken", "providerId": provider_id})
        self.repo.record(audit.entry())
        tokens = Tokens(answer["access_token"], refresh, expires_at, answer["token_type"], None, None, 0)
        return {**_answer(tokens), "refreshToken": answer["refresh_token"] or refresh}

    def _tokens(self, state: Mapping[str, Any] | None, row: Mapping[str, Any], source: Mapping[str, Any]) -> Tokens:
        """The tokens in force: the stored state while it derives from the credential's current secret (its seal
        generation, or the same token values after a re-seal that kept them), else the credential's own."""
        if state is not None:
            binding = RecordBinding("oauth-token", row["id"], int(state["seal_generation"]))
            sealed = Sealed(state["key_version"], bytes(state["wrapped_key"]), bytes(state["ciphertext"]))
            opened = self.barrier.open(binding, sealed)
            if int(state["source_generation"]) == int(row["seal_generation"]) or opened["source"] == dict(source):
                return Tokens(
                    opened["access"],
                    opened["refresh"],
                    Database.as_datetime(state["expires_at"]),
                    str(state["token_type"]),
                    Database.as_datetime(state["reauth_at"]),
                    state["reauth_error"],
                    int(state["seal_generation"]),
                )
        # Before any refresh the stored access token's expiry is unknown, so the first use refreshes it.
        generation = int(state["seal_generation"]) if state is not None else 0
        return Tokens(source["token"], str(source["refreshToken"]), None, "Bearer", None, None, generation)

    def _state_row(
        self,
        credential_id: str,
        row: Mapping[str, Any],
        generation: int,
        secret: Mapping[str, Any],
        expires_at: datetime | None,
        token_type: str,
    ) -> dict[str, Any]:
        sealed = self.barrier.seal(RecordBinding("oauth-token", credential_id, generation), secret)
        return {
            "credential_id": credential_id,
            "source_generation": int(row["seal_generation"]),
            "seal_generation": generation,
            "key_version": sealed.key_version,
            "wrapped_key": sealed.wrapped_key,
            "ciphertext": sealed.ciphertext,
            "expires_at": expires_at,
            "token_type": token_type,
            "refreshed_at": utcnow(),
            "reauth_at": None,
            "reauth_error": None,
        }

    def _refresh_unless_down(
        self,
        provider: Mapping[str, Any],
        refresh_token: str,
        client: tuple[str | None, str | None] = (None, None),
        *,
        grant: str,
    ) -> dict[str, Any]:
        """`_refresh`, except while the provider was down (unreachable, timed out, a 5xx) for this `grant` (a
        credential's id, or a digest of inline data) less than `backoff` seconds ago: then the same error at once,
        so waiting callers do not each wait out a timeout (no retry storm)."""
        # Keyed by the grant, and only for the provider's own failures: an answer about a caller's grant or
        # client (invalid_client, invalid_grant…), or any failure of another user's request, never makes the
        # provider look down to anyone else.
        key = (str(provider["id"]), grant)
        down = self._down.get(key)
        if down is not None and time.monotonic() - down[0] < self.backoff:
            error = down[1]
            retry = f"; not tried again for {self.backoff:g} s"
            raise type(error)(error.message + retry, error.errors)
        try:
            return self._refresh(provider, refresh_token, client)
        except (ProviderDown, ProviderTimeout) as exc:
            now = time.monotonic()
            for old in [k for k, (at, _) in list(self._down.items()) if now - at >= self.backoff]:
                self._down.pop(old, None)  # forgotten once over, so inline callers cannot grow it without end
            self._down[key] = (now, exc)
            raise

    def _refresh(
        self, provider: Mapping[str, Any], refresh_token: str, client: tuple[str | None, str | None] = (None, None)
    ) -> dict[str, Any]:
        """One refresh-token grant at the provider's token endpoint: access_token, token_type, expires_in and the
        rotated refresh_token (or None). _Rejected for a rejected refresh token; ProviderFailed / ProviderTimeout
        naming the host otherwise. Never retried; no token or provider text in any message."""
        import httpx

        url = httpx.URL(provider["token_url"])
        host = url.host or "?"
        # The SSRF rules check the address the request then goes to: pinned, so a second lookup cannot answer
        # another one (DNS rebinding); TLS still names and verifies the host (SNI).
        address = self.connector.address(host, url.port or (443 if url.scheme == "https" else 80))
        pinned = url.copy_with(host=address)
        # The answer is read undecoded and bounded (ANSWER_MAX), so no compressed answer is expanded.
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "Host": url.netloc.decode("ascii")}
        client_id, client_secret = self._client(provider, client)
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        auth: httpx.Auth | None = None
        if client_secret is None:  # RFC 6749 3.2.1: a public client names itself in the body
            data["client_id"] = client_id
        elif provider["auth_method"] == "client_secret_post":
            data.update(client_id=client_id, client_secret=client_secret)
        else:  # RFC 6749 2.3.1: both form-encoded before Basic
            auth = httpx.BasicAuth(quote(client_id, safe=""), quote(client_secret, safe=""))
        try:
            with (
                httpx.Client(
                    timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                    follow_redirects=False,
                    trust_env=False,
                    verify=_tls_context(),
                ) as http,
                http.stream(
                    "POST", pinned, data=data, auth=auth, headers=headers, extensions={"sni_hostname": host}
                ) as resp,
            ):
                status, raw = resp.status_code, _bounded(resp, host)
        except httpx.TimeoutException:
            raise ProviderTimeout(
                f"oauthProvider: the OAuth provider at {host} did not answer in time", {"oauthProvider": "timed out"}
            ) from None
        except httpx.HTTPError:
            raise ProviderDown(
                f"oauthProvider: the OAuth provider at {host} is unreachable", {"oauthProvider": "unreachable"}
            ) from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        error = body.get("error")
        code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else f"http_{status}"
        if status in (400, 401) and code not in ("invalid_client", "unauthorized_client"):
            raise _Rejected(code)
        if status >= 500:
            raise ProviderDown(f"oauthProvider: the OAuth provider at {host} failed ({code})", {"oauthProvider": code})
        if status != 200:
            raise ProviderFailed(
                f"oauthProvider: the OAuth provider at {host} refused the refresh ({code}); check its settings",
                {"oauthProvider": code},
            )
        access, rotated, lifetime = body.get("access_token"), body.get("refresh_token"), body.get("expires_in")
        token_type = body.get("token_type")
        if not isinstance(access, str) or not access or len(access) > credential_types.VALUE_MAX:
            raise ProviderFailed(
                f"oauthProvider: the OAuth provider at {host} answered no access token", {"oauthProvider": "bad"}
            )
        return {
            "access_token": access,
            "refresh_token": rotated if isinstance(rotated, str) and rotated else None,
            "expires_in": lifetime_of(lifetime),
            "token_type": token_type if isinstance(token_type, str) and _ERROR_CODE.fullmatch(token_type) else "Bearer",
        }

    def _client(self, provider: Mapping[str, Any], client: tuple[str | None, str | None]) -> tuple[str, str | None]:
        """The client id and secret a refresh presents: the data's own client when it names another one than the
        provider's (with its own secret, or none: a public client), else the provider's client. The provider's
        stored secret goes only with the provider's own client id, never paired with a caller's."""
        given_id, given_secret = client
        if given_id is not None and given_id != provider["client_id"]:
            return given_id, given_secret
        if given_secret is not None:
            return str(provider["client_id"]), given_secret
        binding = RecordBinding("oauth-provider", provider["id"], int(provider["seal_generation"]))
        sealed = Sealed(provider["key_version"], bytes(provider["wrapped_key"]), bytes(provider["ciphertext"]))
        return str(provider["client_id"]), str(self.barrier.open(binding, sealed)["clientSecret"])


def _bounded(resp: httpx.Response, host: str) -> bytes:
    """A token endpoint's answer as sent, at most ANSWER_MAX bytes (a 502 naming the host past that, and for an
    encoding that was not asked for, which would have to be expanded first)."""
    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        msg = f"the OAuth provider at {host} answered in an encoding it was not asked for"
        raise ProviderFailed(f"oauthProvider: {msg}", {"oauthProvider": "unexpected encoding"})
    raw = bytearray()
    for piece in resp.iter_raw():
        raw += piece
        if len(raw) > ANSWER_MAX:
            msg = f"the OAuth provider at {host} answered more than {ANSWER_MAX >> 20} MiB"
            raise ProviderFailed(f"oauthProvider: {msg}", {"oauthProvider": "answer too large"})
    return bytes(raw)


def lifetime_of(value: Any) -> int | None:
    """A token answer's `expires_in` in seconds (a number, or a string of ASCII digits), None if unusable."""
    if isinstance(value, str) and _LIFETIME.fullmatch(value):  # not str.isdigit(): int() refuses "¹"
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else None


class _Rejected(Exception):
    """The provider refused the refresh token (its error code, never its text)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _answer(tokens: Tokens) -> dict[str, Any]:
    return {
        "accessToken": tokens.access,
        "expiresAt": None if tokens.expires_at is None else iso(tokens.expires_at),
        "tokenType": tokens.token_type,
    }


def _use(who: Principal, row: Mapping[str, Any], **detail: Any) -> Any:
    return Event(
        "credential.use",
        200,
        who,
        credential_id=row["id"],
        credential_name=row["name"],
        owner_id=row["owner_id"],
        detail={"purpose": "accessToken", **detail},
    ).entry()


def _reauthorise(row: Mapping[str, Any], code: str | None) -> ReauthorisationNeeded:
    return ReauthorisationNeeded(
        f"refreshToken: the OAuth provider rejected the refresh token ({code}): re-authorise credential {row['id']} "
        f"({str(row['name'])[:80]!r}) and store the new refresh token with PATCH",
        {"refreshToken": "rejected by the OAuth provider; re-authorise"},
    )


__all__ = ["AUTH_METHODS", "OAuthService", "ProviderDown", "ProviderFailed", "ProviderTimeout", "ReauthorisationNeeded"]
