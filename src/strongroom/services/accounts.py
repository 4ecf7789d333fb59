"""Users, API tokens and authentication: who is calling, and with which scopes."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from strongroom import credential_types
from strongroom.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from strongroom.representation import iso
from strongroom.store.db import Database
from strongroom.store.models import ApiToken, User, is_id, new_id, utcnow
from strongroom.store.repositories import AccountRepository, UsernameTaken
from strongroom.store.repositories.accounts import TokenOwner
from strongroom.store.repositories.audit import Entry

SCOPES = ("read", "write", "use", "admin")
TOKEN_PREFIX = "sr_"  # noqa: S105 (a public prefix, not a secret)
_TOKEN_MAX = 128
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
LAST_USED_EVERY = timedelta(minutes=1)  # a token's last use is written at most this often
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
    expires_at: datetime | None = None  # the token's expiry

    def at(self, address: str | None, request_id: str | None) -> Principal:
        """This principal in another request (its address and id): `dataclasses.replace` without its generic
        work, on every authenticated request and every write by a remembered token."""
        return Principal(
            self.user_id,
            self.username,
            self.token_id,
            self.scopes,
            self.is_admin,
            self.shared,
            address,
            request_id,
            self.expires_at,
        )

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
        self._used: set[str] = set()  # hashes of tokens used since the last `take_used`

    # ---- authentication ---------------------------------------------------------------------------------

    def authenticate(self, raw: str | None) -> Principal:
        """Resolve a bearer token, remembering the principal for `remembered`; every failure reads the same so
        tokens cannot be probed."""
        token_hash = token_hash_of(raw)
        return self._remember(token_hash, None if token_hash is None else self.accounts.token_owner(token_hash))

    async def aauthenticate(self, raw: str | None) -> Principal:
        """`authenticate` for the event loop."""
        token_hash = token_hash_of(raw)
        return self._remember(token_hash, None if token_hash is None else await self.accounts.atoken_owner(token_hash))

    def _remember(self, token_hash: str | None, owner: TokenOwner | None) -> Principal:
        who = self._principal(owner)
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
        return Principal(
            user_id,
            username,
            token_id,
            frozenset(scopes.split()),
            bool(is_admin),
            bool(shared),
            expires_at=Database.as_datetime(expires_at),
        )

    # ---- last use -----------------------------------------------------------------------------------------

    def used(self, token_hash: str | None) -> None:
        """Note that the valid token hashed `token_hash` was just used (in memory; `take_used` and `record_use`
        write it later)."""
        if token_hash is not None:
            self._used.add(token_hash)

    def take_used(self) -> set[str]:
        """The token hashes used since the last call (call it on the thread that calls `used`)."""
        batch, self._used = self._used, set()
        return batch

    def record_use(self, token_hashes: set[str]) -> int:
        """Write the tokens' last use, each at most once per LAST_USED_EVERY; how many rows changed."""
        if not token_hashes:
            return 0
        return self.accounts.note_use(token_hashes, utcnow(), LAST_USED_EVERY)

    # ---- users ------------------------------------------------------------------------------------------

    def create_user(self, username: str, *, admin: bool = False, who: Principal | None = None) -> User:
        """Create a user (an administrator with `admin`), audited; 409 if the name is taken. `who` None: local."""
        _admin(who)
        if not _USERNAME.fullmatch(username):
            raise InvalidInput(
                "username: 1-64 characters of letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
                {"username": "invalid"},
            )
        user = User(id=new_id(), username=username, created_at=utcnow(), is_admin=admin, shared=False)
        entry = _entry("user.create", 201, who, {"userId": user.id, "username": username, "isAdmin": admin})
        try:
            self.accounts.add_user(user, entry)
        except UsernameTaken:
            raise Conflict(f"username: user {username!r} already exists", {"username": "already exists"}) from None
        return user

    def list_users(self) -> list[User]:
        return self.accounts.users()

    def users_page(self, who: Principal | None, offset: int, limit: int) -> tuple[list[User], int]:
        """A page of users, oldest first, and how many there are (administrators)."""
        _admin(who)
        return self.accounts.users_page(offset, limit)

    def update_user(
        self, username: str, *, disabled: bool | None = None, admin: bool | None = None, who: Principal | None = None
    ) -> User:
        """Disable a user (every token of theirs fails from the next request) or enable them again, and/or make
        them an administrator or not; one audit record. An administrator may not disable or demote themselves."""
        _admin(who)
        if disabled is None and admin is None:
            raise InvalidInput("give disabled and/or isAdmin", {"disabled": "required unless isAdmin is given"})
        user = self.user(username)
        if who is not None and who.user_id == user.id and (disabled or admin is False):
            raise Conflict("you may not disable yourself or take away your own administrator role")
        detail: dict[str, object] = {"userId": user.id, "username": username}
        if disabled is not None:
            detail["disabled"] = disabled
        if admin is not None:
            detail["isAdmin"] = admin
        self.accounts.update_user(
            user.id,
            _entry("user.update", 200, who, detail),
            disabled_at=... if disabled is None else (utcnow() if disabled else None),
            is_admin=admin,
        )
        return self.user(username)

    def set_disabled(self, username: str, disabled: bool, who: Principal | None = None) -> User:
        """Disable a user (every token of theirs fails from the next request) or enable them again."""
        return self.update_user(username, disabled=disabled, who=who)

    def set_admin(self, username: str, admin: bool, who: Principal | None = None) -> User:
        """Make a user an administrator, or no longer one."""
        return self.update_user(username, admin=admin, who=who)

    def delete_user(self, username: str, who: Principal | None = None) -> None:
        """Delete a user with their tokens, memberships and roles; refused (409, naming the count) while they own
        credentials, and for oneself."""
        _admin(who)
        user = self.user(username)
        if who is not None and who.user_id == user.id:
            raise Conflict("you may not delete yourself")
        owned = self.accounts.delete_user(
            user.id, _entry("user.delete", 204, who, {"userId": user.id, "username": username})
        )
        if owned:
            raise Conflict(
                f"user {username!r} owns {owned} credential(s); delete them (or share them to a new OWNER and "
                "remove this one) first",
                {"username": f"owns {owned} credential(s)"},
            )

    def user(self, username: str) -> User:
        user = self.accounts.user_named(username)
        if user is None:
            raise NotFound(f"user {username!r} not found")
        return user

    # ---- tokens -----------------------------------------------------------------------------------------

    def create_token(
        self,
        username: str,
        name: str = "default",
        scopes: tuple[str, ...] = SCOPES,
        expires_at: datetime | None = None,
        who: Principal | None = None,
    ) -> tuple[ApiToken, str]:
        """Mint a token, audited (never its value); the raw value is returned once and only its hash is stored."""
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
        detail = {
            "tokenId": token.id,
            "name": token.name,
            "username": username,
            "scopes": token.scopes.split(),
            "expiresAt": iso(expires_at) if expires_at else None,
        }
        self.accounts.add_token(token, _entry("token.create", 201, who, detail))
        return token, raw

    def create_own_token(
        self, who: Principal, name: str, scopes: tuple[str, ...] | None = None, expires_at: datetime | None = None
    ) -> tuple[ApiToken, str]:
        """A new token for the caller: never a scope their own token lacks (`admin` only for an administrator),
        never outliving their own token; by default the caller's scopes and expiry."""
        who.require("write")
        own = tuple(sc for sc in SCOPES if sc in who.scopes and (sc != "admin" or who.admin))
        for scope in scopes or ():
            if scope in SCOPES:
                who.require(scope)
        if who.expires_at is not None:
            if expires_at is None:
                expires_at = who.expires_at
            elif expires_at > who.expires_at:
                raise InvalidInput(
                    f"expiresAt: may not be later than this token's own expiry, {iso(who.expires_at)}",
                    {"expiresAt": "later than the caller's token"},
                )
        if expires_at is not None and expires_at <= utcnow():
            raise InvalidInput("expiresAt: must be in the future", {"expiresAt": "in the past"})
        return self.create_token(who.username, name, tuple(scopes) if scopes is not None else own, expires_at, who)

    def list_tokens(self, username: str) -> list[ApiToken]:
        return list(self.accounts.tokens_of(self.user(username).id))

    def own_tokens(self, who: Principal) -> list[ApiToken]:
        """The caller's tokens, revoked and expired ones included (never their values)."""
        who.require("read")
        return list(self.accounts.tokens_of(who.user_id))

    def revoke_token(self, token_id: str, who: Principal | None = None, *, own: bool = False) -> None:
        """Revoke a token (audited); with `own`, only one of the caller's (another user's id is 404)."""
        if own:
            assert who is not None
            who.require("write")
        entry = _entry("token.revoke", 204, who, {"tokenId": token_id})
        if self.accounts.revoke(token_id, utcnow(), entry, who.user_id if own and who else None) is None:
            # Only an id is quoted back: a token pasted where its id belongs must not reach the answer or audit.
            raise NotFound(f"token {token_id!r} not found" if is_id(token_id) else "token not found")


def _admin(who: Principal | None) -> None:
    """Administrators only; None is local administration (the CLI on the server machine)."""
    if who is not None:
        who.require("admin")


def _entry(action: str, status: int, who: Principal | None, detail: dict[str, object]) -> Entry:
    """The audit record of an account change (never a token value)."""
    from strongroom.services.audit import Event  # the audit module imports Principal from here

    return Event(action, status, who, detail=detail).entry()
