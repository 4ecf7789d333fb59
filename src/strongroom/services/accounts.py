"""Users, API tokens and authentication: who is calling, and with which scopes."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from strongroom import credential_types
from strongroom.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from strongroom.store.db import Database
from strongroom.store.models import ApiToken, User, new_id, utcnow
from strongroom.store.repositories import AccountRepository, UsernameTaken
from strongroom.store.repositories.accounts import TokenOwner

SCOPES = ("read", "write", "use", "admin")
TOKEN_PREFIX = "sr_"  # noqa: S105 (a public prefix, not a secret)
_TOKEN_MAX = 128
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_KNOWN_TOKENS_MAX = 10_000  # principals remembered for `remembered` (forgotten all at once beyond)


@dataclass(frozen=True)
class Principal:
    """Who is calling, from a verified token, and (for the audit trail) from where and in which request."""

    user_id: str
    username: str
    token_id: str
    scopes: frozenset[str]
    is_admin: bool = False  # the user is an administrator
    shared: bool = False  # the user may see credentials beyond their own (shares or groups)
    address: str | None = None
    request_id: str | None = None

    @property
    def admin(self) -> bool:
        """Acting as an administrator: an admin user with a token that has the `admin` scope."""
        return self.is_admin and "admin" in self.scopes

    def require(self, scope: str) -> None:
        """Forbidden unless the token has `scope`; `admin` needs an admin user, and an admin token of one has
        every scope."""
        if self.admin or (scope in self.scopes and scope != "admin"):
            return
        if scope == "admin" and "admin" in self.scopes:
            raise Forbidden("this needs an administrator", {"user": "not an administrator"})
        raise Forbidden(f"this token lacks the {scope!r} scope", {"scope": scope})


def hash_token(raw: str) -> str:
    """The stored form of a token: tokens are 256-bit random, so SHA-256 needs no salt or stretching."""
    return hashlib.sha256(raw.encode()).hexdigest()


def token_hash_of(raw: str | None) -> str | None:
    """The hash of a presented token, or None when it cannot be one of ours (no lookup needed)."""
    if not raw or not raw.startswith(TOKEN_PREFIX) or len(raw) > _TOKEN_MAX:
        return None
    return hash_token(raw)


def expired(expires_at: datetime | str | None) -> bool:
    """Whether a token expiry, as read from either backend, has passed."""
    if expires_at is None:
        return False
    return Database.as_datetime(expires_at) <= utcnow()  # type: ignore[operator]


class AccountService:
    """User and token administration, and turning a presented token into a Principal."""

    def __init__(self, accounts: AccountRepository) -> None:
        self.accounts = accounts
        # token hash -> principal, for writes whose statement re-checks the token itself (never trusted alone)
        self._known: dict[str, Principal] = {}

    # ---- authentication ---------------------------------------------------------------------------------

    def authenticate(self, raw: str | None) -> Principal:
        """Resolve a bearer token; every failure reads the same so tokens cannot be probed."""
        token_hash = token_hash_of(raw)
        return self._principal(None if token_hash is None else self.accounts.token_owner(token_hash))

    async def aauthenticate(self, raw: str | None) -> Principal:
        """`authenticate` for the event loop; remembers the principal for `remembered`."""
        token_hash = token_hash_of(raw)
        who = self._principal(None if token_hash is None else await self.accounts.atoken_owner(token_hash))
        if len(self._known) >= _KNOWN_TOKENS_MAX:
            self._known.clear()
        self._known[token_hash] = who  # type: ignore[index]
        return who

    def remembered(self, token_hash: str) -> Principal | None:
        """The principal this process last authenticated for the token, for a statement that re-checks it."""
        return self._known.get(token_hash)

    def forget(self, token_hash: str) -> None:
        self._known.pop(token_hash, None)

    @staticmethod
    def _principal(owner: TokenOwner | None) -> Principal:
        if owner is None:
            raise Unauthorized("missing or invalid API token")
        token_id, scopes, expires_at, user_id, username, is_admin, shared = owner
        if expired(expires_at):
            raise Unauthorized("missing or invalid API token")
        return Principal(user_id, username, token_id, frozenset(scopes.split()), bool(is_admin), bool(shared))

    # ---- administration ---------------------------------------------------------------------------------

    def create_user(self, username: str, *, admin: bool = False) -> User:
        """Create a user (an administrator with `admin`); 409 if the name is taken."""
        if not _USERNAME.fullmatch(username):
            raise InvalidInput(
                "username: 1-64 characters of letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
                {"username": "invalid"},
            )
        user = User(id=new_id(), username=username, created_at=utcnow(), is_admin=admin, shared=False)
        try:
            self.accounts.add_user(user)
        except UsernameTaken:
            raise Conflict(f"username: user {username!r} already exists") from None
        return user

    def list_users(self) -> list[User]:
        return self.accounts.users()

    def set_disabled(self, username: str, disabled: bool) -> User:
        """Disable a user (every token of theirs fails from the next request) or enable them again."""
        user = self.user(username)
        self.accounts.set_disabled(user.id, utcnow() if disabled else None)
        return self.user(username)

    def set_admin(self, username: str, admin: bool) -> User:
        """Make a user an administrator, or no longer one."""
        user = self.user(username)
        self.accounts.set_admin(user.id, admin)
        return self.user(username)

    def user(self, username: str) -> User:
        user = self.accounts.user_named(username)
        if user is None:
            raise NotFound(f"user {username!r} not found")
        return user

    def create_token(
        self,
        username: str,
        name: str = "default",
        scopes: tuple[str, ...] = SCOPES,
        expires_at: datetime | None = None,
    ) -> tuple[ApiToken, str]:
        """Mint a token; the raw value is returned once and only its hash is stored."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise InvalidInput(f"scopes: expected some of {', '.join(SCOPES)}", {"scopes": "invalid"})
        user = self.user(username)
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = ApiToken(
            id=new_id(),
            user_id=user.id,
            name=credential_types.check_name(name),
            token_hash=hash_token(raw),
            prefix=raw[:8],
            scopes=" ".join(sc for sc in SCOPES if sc in scopes),
            created_at=utcnow(),
            expires_at=expires_at,
        )
        self.accounts.add_token(token)
        return token, raw

    def list_tokens(self, username: str) -> list[ApiToken]:
        return list(self.accounts.tokens_of(self.user(username).id))

    def revoke_token(self, token_id: str) -> None:
        if self.accounts.revoke(token_id, utcnow()) is None:
            raise NotFound(f"token {token_id!r} not found")
