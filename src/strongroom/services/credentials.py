"""Credential use cases: list, get, create, update and delete, with validation and sealing.

Each use case has a sync form (SQLite, the CLI, tests) and, where the server runs it on the event loop
(PostgreSQL), an async one; both share the non-I/O steps (`_new`, `_patched`). Reads come back as the
stored API JSON text, which the server sends untouched.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import unicodedata
from collections.abc import Callable, Collection, Mapping
from typing import Any

from strongroom import credential_types, representation
from strongroom.crypto.barrier import Barrier, Binding
from strongroom.crypto.envelope import Sealed
from strongroom.crypto.keys import DecryptionError
from strongroom.errors import (
    Conflict,
    Forbidden,
    Hidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    StrongroomError,
)
from strongroom.services.accounts import AccountService, Principal, expired
from strongroom.services.audit import Event
from strongroom.services.roles import CONSUMER, EDITOR, OWNER, ROLE_NAMES, role_rank
from strongroom.store.models import is_id, new_id, utcnow
from strongroom.store.repositories import CredentialRepository, NameTaken, Page, TokenRow
from strongroom.store.repositories.audit import NAME_SLOT, AuditRepository, Entry
from strongroom.store.repositories.credentials import WIRE_COLUMNS

MAX_PAGE = 1000
MAX_OFFSET = 2**31 - 1  # beyond any store; keeps OFFSET within the databases' integer range
DEFAULT_PAGE = 100
ORDERS = ("creationDate", "-creationDate")
# Given the caller's role rank on a credential, raises to refuse a use that the role alone would allow.
Guard = Callable[[int], None]
_UPDATE_TRIES = 20  # optimistic PATCH attempts (with jitter) against concurrent changes to one credential
log = logging.getLogger("strongroom.credentials")
Revisions = Collection[int] | None  # an If-Match: the revisions a change may apply to; None: any


def list_params(offset: int, limit: int, types_filter: list[str] | None, order_by: str) -> dict[str, Any]:
    """Check a list request's paging, order and type filter; the repository parameters they make."""
    if not 0 <= offset <= MAX_OFFSET:
        msg = f"must be between 0 and {MAX_OFFSET}"
        raise InvalidInput(f"offset: {msg}", {"offset": msg})
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit: must be between 1 and {MAX_PAGE}", {"limit": f"must be 1 to {MAX_PAGE}"})
    if order_by not in ORDERS:
        msg = "must be creationDate or -creationDate"
        raise InvalidInput(f"orderBy: {msg}", {"orderBy": msg})
    for name in types_filter or ():
        credential_types.get_type(name, field="types")  # raises for an unknown type, naming the valid ones
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if types_filter:
        params["types"] = sorted(set(types_filter))
    return params


def name_filters(name: str | None, search: str | None) -> dict[str, str]:
    """Check a list request's `name` (exact) and `search` (case-insensitive substring) filters; the repository
    parameters they make (names compare in Unicode NFC, as they are stored)."""
    params: dict[str, str] = {}
    for key, value in (("name", name), ("search", search)):
        if value is None:
            continue
        value = unicodedata.normalize("NFC", value[: 4 * credential_types.NAME_MAX + 1])
        if not value or len(value) > credential_types.NAME_MAX:
            msg = f"must be 1 to {credential_types.NAME_MAX} characters"
            raise InvalidInput(f"{key}: {msg}", {key: msg})
        if "\x00" in value:  # no stored name holds one (PostgreSQL text cannot)
            raise InvalidInput(f"{key}: must not contain NUL", {key: "must not contain NUL"})
        params[key] = value
    return params


def _readable(token: TokenRow) -> bool:
    return not expired(token.expires_at) and "read" in token.scopes.split()


class CredentialService:
    """The credential use cases over a repository and the barrier."""

    def __init__(
        self,
        credentials: CredentialRepository,
        barrier: Barrier,
        accounts: AccountService,
        audit: AuditRepository | None = None,
    ) -> None:
        self.credentials = credentials
        self.barrier = barrier
        self.accounts = accounts
        self.audit = audit

    # ---- reads ------------------------------------------------------------------------------------------

    def list(
        self,
        who: Principal,
        *,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
        types_filter: list[str] | None = None,
        order_by: str = "-creationDate",
        role: str | None = None,
        name: str | None = None,
        search: str | None = None,
    ) -> Page:
        """A page of what the caller has a role on (owned, shared with them or their groups), each item with the
        caller's `role`; `role` keeps one role only, `name` the credentials of that exact name, `search` those
        whose name holds it, ignoring case."""
        own, params, newest_first = _list_plan(who, offset, limit, types_filter, order_by, role, name, search)
        if own:
            return _owned(self.credentials.page(who.user_id, params, newest_first))
        return _with_roles(self.credentials.shared_page(who.user_id, params, newest_first, owner_only=not who.shared))

    async def alist(
        self,
        who: Principal,
        *,
        offset: int = 0,
        limit: int = DEFAULT_PAGE,
        types_filter: list[str] | None = None,
        order_by: str = "-creationDate",
        role: str | None = None,
        name: str | None = None,
        search: str | None = None,
    ) -> Page:
        """`list` for async callers (on the event loop's own PostgreSQL connections where it has them)."""
        own, params, newest_first = _list_plan(who, offset, limit, types_filter, order_by, role, name, search)
        if own:
            return _owned(await self.credentials.apage(who.user_id, params, newest_first))
        repo = self.credentials
        return _with_roles(await repo.ashared_page(who.user_id, params, newest_first, owner_only=not who.shared))

    def list_for_token(
        self, token_hash: str | None, *, offset: int, limit: int, types_filter: list[str] | None, order_by: str
    ) -> Page | None:
        """`list` in one statement with the check of the token hashed `token_hash` (`token_hash_of`); None means
        "take the ordinary path", which explains any failure (an invalid token, a missing scope, a bad
        parameter)."""
        query = self._token_list_query(token_hash, offset, limit, types_filter, order_by)
        if query is None:
            return None
        found = self.credentials.page_for_token(*query)
        return _owned(found[0]) if found is not None and _readable(found[1]) else None

    async def alist_for_token(
        self, token_hash: str | None, *, offset: int, limit: int, types_filter: list[str] | None, order_by: str
    ) -> Page | None:
        query = self._token_list_query(token_hash, offset, limit, types_filter, order_by)
        if query is None:
            return None
        found = await self.credentials.apage_for_token(*query)
        return _owned(found[0]) if found is not None and _readable(found[1]) else None

    def _token_list_query(
        self, token_hash: str | None, offset: int, limit: int, types_filter: list[str] | None, order_by: str
    ) -> tuple[str, dict[str, Any], bool] | None:
        if token_hash is None:
            return None
        known = self.accounts.remembered(token_hash)
        if known is not None and known.shared:  # the statement serves owners alone (a user stays `shared`)
            return None
        try:
            params = list_params(offset, limit, types_filter, order_by)
        except InvalidInput:
            return None
        return token_hash, params, order_by.startswith("-")

    def get(self, who: Principal, credential_id: str) -> tuple[str, int]:
        """The credential's API JSON and its revision (the ETag a later If-Match names)."""
        who.require("read")
        found = self.credentials.get(credential_id, who.user_id) if is_id(credential_id) else None
        if found is None:
            raise _not_found()
        wire, revision, role = found
        if role is None:
            raise _hidden(credential_id)
        return representation.with_role(wire, ROLE_NAMES[role]), revision

    def get_for_token(self, token_hash: str | None, credential_id: str) -> tuple[str, int] | None:
        """`get` in one statement with the check of the token hashed `token_hash`; None means "take the
        ordinary path", which tells 401, 403 and 404 apart."""
        if token_hash is None or not is_id(credential_id):
            return None
        return _visible(self.credentials.get_for_token(token_hash, credential_id))

    async def aget_for_token(self, token_hash: str | None, credential_id: str) -> tuple[str, int] | None:
        if token_hash is None or not is_id(credential_id):
            return None
        return _visible(await self.credentials.aget_for_token(token_hash, credential_id))

    def secrets(self, who: Principal, credential_id: str) -> dict[str, Any]:
        """Every field of the credential, secret ones included (for local administration and backups)."""
        who.require("use")
        row = self._current(who, credential_id, EDITOR, "reveal its secrets")
        return {**representation.parse_json(row["public_data"]), **self._open(row)}

    def reveal(self, who: Principal, credential_id: str) -> dict[str, Any]:
        """The credential's metadata and every field, secret ones included (`use` scope, EDITOR or OWNER;
        audited as credential.reveal, naming no value)."""
        who.require("use")
        row = self._current(who, credential_id, EDITOR, "reveal its secrets")
        fields = {**representation.parse_json(row["public_data"]), **self._open(row)}
        self.record(_event("credential.reveal", 200, who, row))
        return {"credentialId": row["id"], "name": row["name"], "credentialType": row["credential_type"], **fields}

    def use(
        self, who: Principal, credential_id: str, purpose: Mapping[str, Any], *, guard: Guard | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Open a credential for the server's own use on the caller's behalf (`use` scope, any role from
        CONSUMER up, then `guard` given the caller's role): its type and every field; audited as credential.use
        with `purpose` (never a value)."""
        who.require("use")
        row = self._current(who, credential_id, CONSUMER, "use it", guard)
        fields = {**representation.parse_json(row["public_data"]), **self._open(row)}
        self.record(_event("credential.use", 200, who, row, **purpose))
        return str(row["credential_type"]), fields

    def held(self, who: Principal, credential_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A credential the caller may use (`use` scope, any role from CONSUMER up): every column of its row and
        every field, secret ones included. Not audited: the caller audits the use it makes of it."""
        who.require("use")
        row = self._current(who, credential_id, CONSUMER, "use it")
        return row, {**representation.parse_json(row["public_data"]), **self._open(row)}

    def check_use(self, who: Principal, credential_id: str, *, guard: Guard | None = None) -> str:
        """The credential's type if the caller may use it (`use` scope, CONSUMER or above, then `guard`; 404 with
        no role, 403 with too low a one), without opening it or writing an audit record (a job checks before it
        starts)."""
        who.require("use")
        return str(self._current(who, credential_id, CONSUMER, "use it", guard)["credential_type"])

    def check_delete(self, who: Principal, credential_id: str) -> None:
        """Nothing if the caller may delete the credential (`write` scope, OWNER); else what `delete` would
        answer (404 with no role, 403 with too low a one), without changing anything."""
        who.require("write")
        self._current(who, credential_id, OWNER, "delete it")

    def record(self, entry: Entry) -> None:
        """Append an audit record of its own (a use or a reveal, which change nothing)."""
        if self.audit is not None:
            self.audit.append(entry)

    def _current(
        self, who: Principal, credential_id: str, needed: int, doing: str, guard: Guard | None = None
    ) -> dict[str, Any]:
        """Every column of a credential the caller holds at least the `needed` role on (404 with no role, 403
        with too low a role), once `guard` accepts that role."""
        found = self.credentials.current(credential_id, who.user_id) if is_id(credential_id) else None
        row = _allowed(found, credential_id, needed, doing)
        if guard is not None and found is not None and found[1] is not None:
            guard(found[1])
        return row

    # ---- create -----------------------------------------------------------------------------------------

    def create(self, who: Principal, body: Mapping[str, Any]) -> str:
        """Validate, seal and store a new credential (audited); its API JSON, with the caller's role (OWNER)."""
        row = self._new(who, body)
        try:
            self.credentials.insert(row, _event("credential.create", 201, who, row))
        except NameTaken:
            raise _name_taken(row["name"]) from None
        return _as_owner(row)

    async def acreate(self, who: Principal, body: Mapping[str, Any]) -> str:
        row = await self.barrier.run(self._new, who, body)
        try:
            await self.credentials.ainsert(row, _event("credential.create", 201, who, row))
        except NameTaken:
            raise _name_taken(row["name"]) from None
        return _as_owner(row)

    def remembers(self, token_hash: str | None) -> bool:
        """Whether this process authenticated the token hashed `token_hash` before (so `acreate_for_token` may be
        tried)."""
        return token_hash is not None and self.accounts.remembered(token_hash) is not None

    def _remembered(self, token_hash: str | None, address: str | None, request_id: str | None) -> Principal | None:
        """The principal this process authenticated for the token before, with this request's address and id
        for the audit record; None if it has not."""
        who = None if token_hash is None else self.accounts.remembered(token_hash)
        return None if who is None else who.at(address, request_id)

    async def acreate_for_token(
        self,
        token_hash: str | None,
        body: Mapping[str, Any],
        *,
        address: str | None = None,
        request_id: str | None = None,
    ) -> str | None:
        """Create for a token this process authenticated before, re-checking the token in the write itself
        (PostgreSQL: in its one statement; SQLite: in the committer's transaction). None means "take the
        ordinary path" (authenticate, then create), which reports any error, so a caller whose token is no
        longer valid only ever learns 401. `address` and `request_id` go into the audit record."""
        who = self._remembered(token_hash, address, request_id)
        if who is None or token_hash is None:
            return None
        try:
            row = await self.barrier.run(self._new, who, body)
        except StrongroomError:
            return None
        try:
            audit = _event("credential.create", 201, who, row)
            inserted = await self.credentials.ainsert_if_token(row, token_hash, utcnow(), audit)
        except NameTaken:  # the row was tried, so the token was valid
            raise _name_taken(row["name"]) from None
        if not inserted:  # revoked, expired or disabled since it was remembered
            self.accounts.forget(token_hash)
            return None
        return _as_owner(row)

    def _new(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a create body; the sealed row to insert."""
        who.require("write")
        data = dict(body)
        if "name" not in data:
            raise InvalidInput("name: is required", {"name": "is required"})
        name = credential_types.check_name(data.pop("name"))
        description = data.pop("description", None)
        description = "" if description is None else credential_types.check_description(description)
        type_name = data.pop("credentialType", None)
        ctype = credential_types.get_type(credential_types.DEFAULT_TYPE if type_name is None else type_name)
        values = credential_types.parse_fields(ctype, data)
        credential_types.check_complete(ctype, values)
        public, secret = ctype.split(values)
        now = utcnow()
        row: dict[str, Any] = {
            "id": new_id(),
            "owner_id": who.user_id,
            "name": name,
            "credential_type": ctype.name,
            "description": description,
            "public_data": representation.compact_json(public),
            "revision": 1,
            "seal_generation": 0,  # `_seal` makes it 1
            "created_at": now,
            "updated_at": now,
        }
        self._seal(row, secret)
        return row

    # ---- update -----------------------------------------------------------------------------------------

    def update(
        self, who: Principal, credential_id: str, body: Mapping[str, Any], *, if_match: Revisions = None
    ) -> tuple[str, int]:
        """Apply a PATCH; the new API JSON and revision. DataRobot semantics: a new name without a description
        clears the description. With `if_match`, the change applies only if the stored revision is one of
        them, else 412: the compare-and-swap makes the check and the write one step."""
        self._check_update(who, credential_id, body)
        # Optimistic: read, decrypt, merge and re-seal outside any transaction (a KMS round trip must not hold
        # SQLite's write lock), then write only if the revision is still the one read.
        for attempt in range(_UPDATE_TRIES):
            found = self.credentials.current(credential_id, who.user_id)
            role, read_revision, row = self._patched(found, credential_id, body, if_match)
            try:
                written = self.credentials.swap(read_revision, row, _update_event(who, row, body), _read(found))
            except NameTaken:
                raise _name_taken(str(body.get("name"))) from None
            if written:
                return representation.with_role(row["wire"], ROLE_NAMES[role]), int(row["revision"])
            _lost_race(if_match)
            time.sleep(random.uniform(0, 0.002 * (1 + attempt)))
        raise _busy()

    async def aupdate(
        self, who: Principal, credential_id: str, body: Mapping[str, Any], *, if_match: Revisions = None
    ) -> tuple[str, int]:
        self._check_update(who, credential_id, body)
        for attempt in range(_UPDATE_TRIES):
            found = await self.credentials.acurrent(credential_id, who.user_id)
            role, read_revision, row = await self.barrier.run(self._patched, found, credential_id, body, if_match)
            try:
                written = await self.credentials.aswap(read_revision, row, _update_event(who, row, body), _read(found))
            except NameTaken:
                raise _name_taken(str(body.get("name"))) from None
            if written:
                return representation.with_role(row["wire"], ROLE_NAMES[role]), int(row["revision"])
            _lost_race(if_match)
            await asyncio.sleep(random.uniform(0, 0.002 * (1 + attempt)))
        raise _busy()

    async def aupdate_for_token(
        self,
        token_hash: str | None,
        credential_id: str,
        body: Mapping[str, Any],
        *,
        if_match: Revisions = None,
        address: str | None = None,
        request_id: str | None = None,
    ) -> tuple[str, int] | None:
        """`aupdate` for a token this process authenticated before, re-checking the token in the write itself
        (as `acreate_for_token` does). None means "take the ordinary path" (authenticate, then update), which
        answers every refusal, a lost race included."""
        who = self._remembered(token_hash, address, request_id)
        if who is None or token_hash is None:
            return None
        try:
            self._check_update(who, credential_id, body)
        except StrongroomError:
            return None
        # The owner's row as this process last wrote it spares the read; the write's compare-and-swap checks that
        # guess (not with If-Match: a 412 must come from the stored revision).
        kept = None if if_match is not None else self.credentials.last_written(credential_id, who.user_id)
        try:
            if kept is not None:
                updated = await self._aswap_patched(who, token_hash, credential_id, body, (kept, OWNER))
                if updated is not None:
                    return updated  # else it changed since (the repository forgot its row): read it, try once more
            updated = await self._aswap_patched(who, token_hash, credential_id, body, None, if_match)
        except _Refused:
            return None
        if updated is None:  # the token is no longer valid, or the credential changed meanwhile
            self.accounts.forget(token_hash)
        return updated

    async def _aswap_patched(
        self,
        who: Principal,
        token_hash: str,
        credential_id: str,
        body: Mapping[str, Any],
        found: tuple[dict[str, Any], int | None] | None,
        if_match: Revisions = None,
    ) -> tuple[str, int] | None:
        """`aupdate_for_token`'s write of the PATCH applied to `found` (None: the row read now): the API JSON and
        revision, None if the token or the row moved; `_Refused` if the read or the PATCH itself failed (the
        ordinary path answers why). The write's own errors are the caller's."""
        try:
            if found is None:
                found = await self.credentials.acurrent(credential_id, who.user_id)
            role, read_revision, row = await self.barrier.run(self._patched, found, credential_id, body, if_match)
        except StrongroomError:
            raise _Refused from None
        audit = _update_event(who, row, body)
        try:
            written = await self.credentials.aswap_if_token(
                read_revision, row, audit, token_hash, who.user_id, utcnow(), _read(found)
            )
        except NameTaken:  # the row was tried, so the token was valid
            raise _name_taken(str(body.get("name"))) from None
        if not written:
            return None
        return representation.with_role(row["wire"], ROLE_NAMES[role]), int(row["revision"])

    @staticmethod
    def _check_update(who: Principal, credential_id: str, body: Mapping[str, Any]) -> None:
        who.require("write")
        if not body:
            raise InvalidInput("Must specify at least one field to update", {"body": "empty"})
        if not is_id(credential_id):
            raise _not_found()

    def _patched(
        self,
        found: tuple[dict[str, Any], int | None] | None,
        credential_id: str,
        body: Mapping[str, Any],
        if_match: Revisions,
    ) -> tuple[int, int, dict[str, Any]]:
        """The caller's role, the revision read and the row with the PATCH applied (EDITOR or OWNER needed); the
        body is checked before the revision, so a bad body is a 422 whatever the revision."""
        role, row = found[1] if found else None, dict(_allowed(found, credential_id, EDITOR, "change it"))
        read_revision = int(row["revision"])
        data = dict(body)
        ctype = credential_types.TYPES[row["credential_type"]]
        if "credentialType" in data and data.pop("credentialType") != row["credential_type"]:
            msg = "cannot be changed; create a new credential instead"
            raise InvalidInput(f"credentialType: {msg}", {"credentialType": msg})
        if "name" in data:
            row["name"] = credential_types.check_name(data.pop("name"))
            if "description" not in data:
                row["description"] = ""
        if "description" in data:
            value = data.pop("description")
            row["description"] = "" if value is None else credential_types.check_description(value)
        patch = credential_types.parse_fields(ctype, data, allow_null=True)
        if patch:
            current = {**representation.parse_json(row["public_data"]), **self._open(row)}
            merged = _merge(ctype, current, patch)
            credential_types.check_complete(ctype, merged)
            public, secret = ctype.split(merged)
            row["public_data"] = representation.compact_json(public)
            self._seal(row, secret)
        else:
            row["wire"] = representation.render_credential([row[c] for c in WIRE_COLUMNS])
        if if_match is not None and read_revision not in if_match:
            raise _stale(if_match, read_revision)
        row["revision"] = read_revision + 1
        row["updated_at"] = utcnow()
        return int(role), read_revision, row  # type: ignore[arg-type]

    # ---- delete -----------------------------------------------------------------------------------------

    def delete(self, who: Principal, credential_id: str, *, if_match: Revisions = None) -> None:
        """Delete (OWNER needed; audited); with `if_match`, only while the stored revision is one of them (412)."""
        who.require("write")
        row = self._current(who, credential_id, OWNER, "delete it")
        audit = _event("credential.delete", 204, who, row)
        if if_match is None:
            if not self.credentials.delete(credential_id, None, audit):
                raise _not_found()
            return
        outcome, revision = self.credentials.delete_at(credential_id, if_match, audit)
        if outcome == "missing":
            raise _not_found()
        if outcome != "deleted":
            raise _stale(if_match, revision)

    async def adelete(self, who: Principal, credential_id: str, *, if_match: Revisions = None) -> None:
        """`delete` on the event loop: one statement for the owner's own credential; anything else (If-Match, a
        credential shared with OWNER) runs `delete` in a worker thread."""
        who.require("write")
        if not is_id(credential_id):
            raise _not_found()
        if if_match is None:
            row = {"id": credential_id, "owner_id": who.user_id, "name": NAME_SLOT}  # the statement names it
            audit = _event("credential.delete", 204, who, row)
            if await self.credentials.adelete(credential_id, who.user_id, audit):
                return
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.delete(who, credential_id, if_match=if_match)
        )

    def handover(self, credential_id: str, new_owner: str) -> dict[str, Any]:
        """The credential's secret re-sealed for a new owner (the seal binds its owner), as the columns an
        ownership transfer writes if the credential is still at the revision read (`read_revision`)."""
        found = self.credentials.current(credential_id, new_owner)
        if found is None:
            raise _not_found()
        row = dict(found[0])
        secret, old_owner, read_revision = self._open(row), row["owner_id"], int(row["revision"])
        row["owner_id"] = new_owner
        self._seal(row, secret)
        return {
            "cid": credential_id,
            "old_owner": old_owner,
            "new_owner": new_owner,
            "credential_type": row["credential_type"],
            "read_revision": read_revision,
            "revision": read_revision + 1,
            "seal_generation": row["seal_generation"],
            "key_version": row["key_version"],
            "wrapped_key": row["wrapped_key"],
            "ciphertext": row["ciphertext"],
            "updated_at": utcnow(),
        }

    # ---- sealing ----------------------------------------------------------------------------------------

    def _seal(self, row: dict[str, Any], secret: Mapping[str, Any]) -> None:
        """Seal the secret fields into the row under its next seal generation, and render its API JSON."""
        row["seal_generation"] = int(row["seal_generation"]) + 1
        sealed = self.barrier.seal(Binding.of(row), secret)
        row["key_version"], row["wrapped_key"], row["ciphertext"] = (
            sealed.key_version,
            sealed.wrapped_key,
            sealed.ciphertext,
        )
        row["wire"] = representation.render_credential([row[c] for c in WIRE_COLUMNS])

    def _open(self, row: Mapping[str, Any], *, legacy: bool = False) -> dict[str, Any]:
        sealed = Sealed(row["key_version"], bytes(row["wrapped_key"]), bytes(row["ciphertext"]))
        return self.barrier.open(Binding.of(row), sealed, legacy=legacy)

    # ---- upkeep -----------------------------------------------------------------------------------------

    def upgrade_legacy_seals(self, batch: int = 500) -> int:
        """Re-seal every credential sealed before seal generations existed, once per store (at start, before
        serving); how many. Once done, that is recorded, and a generation-0 seal found later is a rollback and
        never opens. Each row is written only if unchanged since read (a concurrent writer's seal is as good)."""
        if self.credentials.seals_upgraded():
            return 0
        done, after = 0, ""
        while rows := self.credentials.legacy_seals(after, batch):
            after = rows[-1]["id"]
            for found in rows:
                row = dict(found)
                try:
                    secret = self._open(row, legacy=True)
                except DecryptionError:
                    log.error("credential %s does not open; left as it is (it will be refused)", row["id"])
                    continue
                self._seal(row, secret)
                upkeep = Event("credential.reseal", 200, credential_id=row["id"], owner_id=row["owner_id"])
                done += self.credentials.swap(int(found["revision"]), row, upkeep.entry(), found)
        self.credentials.mark_seals_upgraded(utcnow())
        return done


def _visible(found: tuple[str, int, TokenRow, int | None] | None) -> tuple[str, int] | None:
    if found is None or found[3] is None or not _readable(found[2]):
        return None
    return representation.with_role(found[0], ROLE_NAMES[found[3]]), found[1]


def _list_plan(
    who: Principal,
    offset: int,
    limit: int,
    types_filter: list[str] | None,
    order_by: str,
    role: str | None,
    name: str | None,
    search: str | None,
) -> tuple[bool, dict[str, Any], bool]:
    """What `list` reads: (only the caller's own credentials, the page's parameters, newest first)."""
    who.require("read")
    params = list_params(offset, limit, types_filter, order_by)
    named = name_filters(name, search)
    params.update(named)
    if role is not None:
        params["role"] = role_rank(role, field="role")
    own = not named and not who.shared and params.get("role", OWNER) == OWNER
    if own:
        params.pop("role", None)
    return own, params, order_by.startswith("-")


def _owned(page: Page) -> Page:
    """The caller's own credentials: each item says OWNER."""
    return Page([representation.with_role(w, "OWNER") for w in page.items], page.total, page.offset, page.limit)


def _with_roles(page: Page) -> Page:
    roles = page.roles or []
    items = [representation.with_role(w, ROLE_NAMES[r]) for w, r in zip(page.items, roles, strict=True)]
    return Page(items, page.total, page.offset, page.limit)


def _as_owner(row: Mapping[str, Any]) -> str:
    return representation.with_role(row["wire"], "OWNER")


def _allowed(
    found: tuple[dict[str, Any], int | None] | None, credential_id: str, needed: int, doing: str
) -> dict[str, Any]:
    """The row if the caller's role is at least `needed`: 404 without a role (as if it did not exist), 403 with
    too low a one, naming the role needed."""
    if found is None:
        raise _not_found()
    row, role = found
    if role is None:
        raise _hidden(credential_id)
    if role < needed:
        names = " or ".join(ROLE_NAMES[r] for r in (OWNER, EDITOR) if r >= needed)
        raise Forbidden(
            f"your role on this credential is {ROLE_NAMES[role]}; to {doing} you need {names}",
            {"role": f"needs {names}"},
        )
    return row


def _event(action: str, status: int, who: Principal, row: Mapping[str, Any], **detail: Any) -> Entry:
    return Event(
        action,
        status,
        who,
        credential_id=row["id"],
        credential_name=row.get("name"),
        owner_id=row["owner_id"],
        detail=detail,
    ).entry()


def _read(found: tuple[dict[str, Any], int | None] | None) -> dict[str, Any]:
    """The row as read (`current`), for the write to compare with (`_patched` refuses a missing one first)."""
    if found is None:
        raise _not_found()
    return found[0]


def _update_event(who: Principal, row: Mapping[str, Any], body: Mapping[str, Any]) -> Entry:
    """`credential.replace_secret` when the PATCH names a secret field, else `credential.update`; the record
    names the fields changed, never their values."""
    ctype = credential_types.TYPES[row["credential_type"]]
    fields = sorted(k for k in body if k != "credentialType")
    secret = any((f := ctype.field(k)) is not None and f.secret for k in fields)
    return _event("credential.replace_secret" if secret else "credential.update", 200, who, row, fields=fields)


class _Refused(Exception):
    """The remembered path cannot answer this request: the ordinary one must (and says why)."""


def _not_found() -> NotFound:
    return NotFound("credential not found")


def _hidden(credential_id: str) -> Hidden:
    return Hidden("credential not found", target=credential_id)


def _busy() -> Conflict:
    return Conflict("credential: changed by other requests during this update; retry", {"credential": "busy"})


def _lost_race(if_match: Revisions) -> None:
    """The credential changed between our read and our write: with If-Match the client's revision is stale
    (412); without, the caller reads again."""
    if if_match is not None:
        raise _stale(if_match, None)


def _stale(expected: Collection[int], current: int | None) -> PreconditionFailed:
    now = f" (it is now at {current})" if current is not None else ""
    if expected:
        sent = ", ".join(str(r) for r in sorted(expected))
        msg = f"the credential changed since revision {sent} was read{now}; GET it again"
    else:
        msg = f"weak ETags never match{now}; send the strong ETag from a GET"
    return PreconditionFailed(f"If-Match: {msg}", {"If-Match": "stale revision"}, current_revision=current)


def _name_taken(name: str) -> Conflict:
    return Conflict(f"name: the name {name[:80]!r} is already in use", {"name": "already in use"})


def _merge(
    ctype: credential_types.CredentialType, current: Mapping[str, Any], patch: Mapping[str, Any]
) -> dict[str, Any]:
    """Patch field values; switching between a configId and explicit secrets replaces the other mode."""
    merged = dict(current)
    ref = ctype.exclusive
    if ref and patch.get(ref) is not None:
        merged = {k: v for k, v in merged.items() if k == ref}
    elif ref and any(v is not None for k, v in patch.items() if k != ref):
        merged.pop(ref, None)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
