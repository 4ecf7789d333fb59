"""Who may use what: credential roles for users and groups, and the groups themselves.

A credential's owner (`credentials.owner_id`) always holds OWNER; `credential_roles` adds roles for other
users and for groups. A caller's role is the highest of their own row and their groups' rows, derived into
`credential_access` (`rederive`) by every change here that alters it, in that change's transaction; reads use
the derived rows. Roles are ranks: 3 OWNER, 2 EDITOR, 1 CONSUMER.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, literal, select, true, union_all, update
from sqlalchemy.exc import IntegrityError

from strongroom.store.db import Database, Tx
from strongroom.store.models import Credential, CredentialAccess, CredentialRole, Group, GroupMember, User
from strongroom.store.repositories.audit import Entry, append_in

OWNER, EDITOR, CONSUMER = 3, 2, 1


def groups_of(user_id: Any) -> Any:
    """The ids of the groups `user_id` (a column or parameter) belongs to, as a subquery."""
    return select(GroupMember.group_id).where(GroupMember.user_id == user_id).correlate_except(GroupMember)


def _held(user_id: Any, credential_id: Any, column: Any) -> Any:
    """`column` of the user's derived access row on the credential (NULL: none), as a scalar subquery."""
    return (
        select(column)
        .where(CredentialAccess.user_id == user_id, CredentialAccess.credential_id == credential_id)
        .correlate_except(CredentialAccess)
        .scalar_subquery()
    )


def role_of(credential_id: Any, owner_id: Any, user_id: Any) -> Any:
    """The caller's role rank on a credential (NULL: none): OWNER for its owner, else what is shared."""
    return case((owner_id == user_id, literal(OWNER)), else_=_held(user_id, credential_id, CredentialAccess.role))


def can_share_of(credential_id: Any, owner_id: Any, user_id: Any) -> Any:
    """Whether the caller may share the credential: its owner, or any of their rows says so."""
    shared = _held(user_id, credential_id, case((CredentialAccess.can_share, 1), else_=0))
    return case((owner_id == user_id, literal(1)), else_=func.coalesce(shared, 0))


def _granted(user: bool = False, credential: bool = False) -> Any:
    """The `credential_access` rows the roles and memberships give (every one, or those of the user `uid` or of
    the credential `cid`): per user and credential not theirs, the highest role and whether any row may share."""
    direct = select(
        CredentialRole.recipient_id.label("uid"),
        CredentialRole.credential_id.label("cid"),
        CredentialRole.role.label("role"),
        CredentialRole.can_share.label("share"),
    ).where(CredentialRole.recipient_type == "user")
    via = (
        select(GroupMember.user_id, CredentialRole.credential_id, CredentialRole.role, CredentialRole.can_share)
        .join(GroupMember, GroupMember.group_id == CredentialRole.recipient_id)
        .where(CredentialRole.recipient_type == "group")
    )
    if user:
        direct = direct.where(CredentialRole.recipient_id == bindparam("uid"))
        via = via.where(GroupMember.user_id == bindparam("uid"))
    if credential:
        direct, via = (part.where(CredentialRole.credential_id == bindparam("cid")) for part in (direct, via))
    g = union_all(direct, via).subquery("granted")
    rows = (
        select(
            g.c.uid,
            g.c.cid,
            func.max(g.c.role),
            func.max(case((g.c.share, 1), else_=0)) > 0,
            Credential.created_at,
        )
        .join(Credential, Credential.id == g.c.cid)
        .where(Credential.owner_id != g.c.uid)
        .group_by(g.c.uid, g.c.cid, Credential.created_at)
    )
    columns = ["user_id", "credential_id", "role", "can_share", "created_at"]
    return CredentialAccess.__table__.insert().from_select(columns, rows)


# Rewriting the derived rows of one user (a membership changed) or one credential (its roles or owner changed).
_REDERIVE_USER = (delete(CredentialAccess).where(CredentialAccess.user_id == bindparam("uid")), _granted(user=True))
_REDERIVE_CREDENTIAL = (
    delete(CredentialAccess).where(CredentialAccess.credential_id == bindparam("cid")),
    _granted(credential=True),
)
_REDERIVE_ALL = (delete(CredentialAccess), _granted())


# PostgreSQL: rewrites of derived rows take turns ("SRACCESS"). A user's and a credential's rows overlap, and two
# transactions rewriting them at once would each miss the other's rows (a duplicate key, or a stale role); in
# turn, each reads what the one before committed. SQLite's one writer takes turns already.
_ACCESS_TURN = select(func.pg_advisory_xact_lock(literal(0x5352414343455353)))


def rederive(tx: Tx, postgres: bool, *, user_id: str | None = None, credential_id: str | None = None) -> None:
    """Rewrite the derived access rows of a user or of a credential from the roles and memberships, in `tx`
    (after its changes to them)."""
    if postgres:
        tx.rows(_ACCESS_TURN, {})
    if user_id is not None:
        for statement in _REDERIVE_USER:
            tx.run(statement, {"uid": user_id})
    if credential_id is not None:
        for statement in _REDERIVE_CREDENTIAL:
            tx.run(statement, {"cid": credential_id})


def rederive_all(conn: Any) -> None:
    """Rewrite every derived access row (after a restore) on the SQLAlchemy connection `conn`."""
    for statement in _REDERIVE_ALL:
        conn.execute(statement)


_ACCESS = select(
    Credential.owner_id,
    Credential.name,
    role_of(Credential.id, Credential.owner_id, bindparam("user")),
    can_share_of(Credential.id, Credential.owner_id, bindparam("user")),
).where(Credential.id == bindparam("id"))
_ROLES = (
    select(
        CredentialRole.recipient_type,
        CredentialRole.recipient_id,
        CredentialRole.role,
        CredentialRole.can_share,
        func.coalesce(User.username, Group.name),
    )
    .outerjoin(User, and_(CredentialRole.recipient_type == "user", User.id == CredentialRole.recipient_id))
    .outerjoin(Group, and_(CredentialRole.recipient_type == "group", Group.id == CredentialRole.recipient_id))
    .where(CredentialRole.credential_id == bindparam("id"))
    .order_by(CredentialRole.created_at, CredentialRole.recipient_type, CredentialRole.recipient_id)
)


class NameTaken(Exception):
    """The new owner already has a credential of this name."""


class GroupNameTaken(Exception):
    """Another group already has this name."""


class SharingRepository:
    """Credential roles and groups."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def access(self, credential_id: str, user_id: str) -> tuple[str, str, int | None, bool] | None:
        """(owner id, name, the user's role rank or None, whether they may share), or None if no such credential."""
        rows = self.db.fetch(_ACCESS, {"id": credential_id, "user": user_id})
        if not rows:
            return None
        owner_id, name, role, can_share = rows[0]
        return owner_id, name, None if role is None else int(role), bool(can_share)

    def roles(self, credential_id: str) -> list[tuple[str, str, int, bool, str]]:
        """The credential's shared rows: (recipient type, recipient id, role rank, can_share, recipient name)."""
        return [
            (kind, rid, int(role), bool(share), name)
            for kind, rid, role, share, name in self.db.fetch(_ROLES, {"id": credential_id})
        ]

    # ---- names ------------------------------------------------------------------------------------------

    def users_named(self, names: Sequence[str]) -> dict[str, str]:
        """username -> id for those that exist."""
        if not names:
            return {}
        with self.db.read() as s:
            rows = s.execute(select(User.username, User.id).where(User.username.in_(list(names)))).all()
        return {name: uid for name, uid in rows}

    def users_by_id(self, ids: Sequence[str]) -> dict[str, str]:
        """id -> username for those that exist."""
        if not ids:
            return {}
        with self.db.read() as s:
            rows = s.execute(select(User.id, User.username).where(User.id.in_(list(ids)))).all()
        return {uid: name for uid, name in rows}

    def groups_by(self, *, ids: Sequence[str] = (), names: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
        """Groups found by id or name: key (the id or name asked for) -> (id, name)."""
        found: dict[str, tuple[str, str]] = {}
        with self.db.read() as s:
            if ids:
                for gid, name in s.execute(select(Group.id, Group.name).where(Group.id.in_(list(ids)))):
                    found[gid] = (gid, name)
            if names:
                for gid, name in s.execute(select(Group.id, Group.name).where(Group.name.in_(list(names)))):
                    found[name] = (gid, name)
        return found

    # ---- groups -----------------------------------------------------------------------------------------

    def add_group(self, group: Group, audit: Entry) -> None:
        """Store a new group with its audit record; GroupNameTaken if the name is in use."""
        values = {"id": group.id, "name": group.name, "created_at": group.created_at}

        def add(tx: Tx) -> None:
            if tx.rows(_GROUP_NAMED, {"name": group.name}):
                raise GroupNameTaken
            tx.run(_INSERT_GROUP, values)
            append_in(tx, audit, postgres=not self.db.is_sqlite)

        try:
            self.db.transact(add)
        except IntegrityError:
            raise GroupNameTaken from None

    def groups(self) -> list[tuple[Group, list[str]]]:
        """Every group with its members' usernames."""
        with self.db.read() as s:
            groups = list(s.scalars(select(Group).order_by(Group.name)))
            members = s.execute(
                select(GroupMember.group_id, User.username)
                .join(User, User.id == GroupMember.user_id)
                .order_by(User.username)
            ).all()
        by_group: dict[str, list[str]] = {}
        for gid, username in members:
            by_group.setdefault(gid, []).append(username)
        return [(g, by_group.get(g.id, [])) for g in groups]

    def add_member(self, group_id: str, user_id: str, audit: Entry) -> bool:
        """Add a member (and mark them as having shared access) with the audit record; False (and no record) if
        they already were one."""
        key = {"gid": group_id, "uid": user_id}

        def add(tx: Tx) -> bool:
            if tx.rows(_IS_MEMBER, key):
                return False
            tx.run(_ADD_MEMBER, key)
            tx.run(_MARK_SHARED, {"rid": user_id})
            rederive(tx, not self.db.is_sqlite, user_id=user_id)
            append_in(tx, audit, postgres=not self.db.is_sqlite)
            return True

        added: bool = self.db.transact(add)
        return added

    def remove_member(self, group_id: str, user_id: str, audit: Entry) -> bool:
        """Remove a member with the audit record; False (and no record) if they were not one."""

        def remove(tx: Tx) -> bool:
            if not tx.run(_REMOVE_MEMBER, {"gid": group_id, "uid": user_id}):
                return False
            rederive(tx, not self.db.is_sqlite, user_id=user_id)
            append_in(tx, audit, postgres=not self.db.is_sqlite)
            return True

        removed: bool = self.db.transact(remove)
        return removed

    def delete_group(self, group_id: str, audit: Entry) -> bool:
        """Delete a group, its members and every role given to it, with the audit record."""

        def remove(tx: Tx) -> bool:
            members = [row[0] for row in tx.rows(_MEMBERS, {"gid": group_id})]
            tx.run(_GROUP_ROLES, {"gid": group_id})
            tx.run(_GROUP_MEMBERS, {"gid": group_id})
            if not tx.run(_DELETE_GROUP, {"gid": group_id}):
                return False
            for member in members:
                rederive(tx, not self.db.is_sqlite, user_id=member)
            append_in(tx, audit, postgres=not self.db.is_sqlite)
            return True

        deleted: bool = self.db.transact(remove)
        return deleted

    # ---- changing roles ---------------------------------------------------------------------------------

    def set_roles(
        self,
        credential_id: str,
        changes: Sequence[tuple[str, str, int | None, bool]],
        created_at: datetime,
        audit: Entry,
        transfer: Mapping[str, Any] | None = None,
    ) -> bool:
        """Apply (recipient type, recipient id, role rank or None to remove, can_share) in one transaction, with
        its audit record; with `transfer` (the re-sealed columns under a new owner, `read_revision` and
        `old_owner`), hand the credential over in the same transaction. False if the credential changed since it
        was read for the transfer (nothing applied); NameTaken if the new owner already uses its name."""
        postgres = not self.db.is_sqlite

        def apply(tx: Tx) -> bool:
            if transfer is not None:
                try:
                    moved = tx.run(_TRANSFER, transfer)
                except IntegrityError as exc:
                    raise NameTaken from exc
                if not moved:
                    return False
                tx.count(transfer["old_owner"], transfer["credential_type"], -1)
                tx.count(transfer["new_owner"], transfer["credential_type"], +1)
            for kind, rid, role, share in changes:
                key = {"cid": credential_id, "kind": kind, "rid": rid}
                tx.run(_REMOVE_ROLE, key)
                if role is not None:
                    tx.run(_ADD_ROLE, {**key, "role": role, "share": share, "at": created_at})
                    if kind == "user":
                        tx.run(_MARK_SHARED, {"rid": rid})
            rederive(tx, postgres, credential_id=credential_id)
            append_in(tx, audit, postgres=postgres)
            return True

        try:
            return self.db.transact(apply)
        except IntegrityError as exc:
            if "uq_credentials_owner_name" in str(exc.orig) or "credentials.owner_id, credentials.name" in str(
                exc.orig
            ):
                raise NameTaken from None
            raise


_REMOVE_ROLE = delete(CredentialRole).where(
    CredentialRole.credential_id == bindparam("cid"),
    CredentialRole.recipient_type == bindparam("kind"),
    CredentialRole.recipient_id == bindparam("rid"),
)
_ADD_ROLE = CredentialRole.__table__.insert().values(
    credential_id=bindparam("cid"),
    recipient_type=bindparam("kind"),
    recipient_id=bindparam("rid"),
    role=bindparam("role"),
    can_share=bindparam("share"),
    created_at=bindparam("at"),
)
_TRANSFER = (
    update(Credential)
    .where(
        Credential.id == bindparam("cid"),
        Credential.owner_id == bindparam("old_owner"),
        Credential.revision == bindparam("read_revision"),
    )
    .values(
        owner_id=bindparam("new_owner"),
        key_version=bindparam("key_version"),
        wrapped_key=bindparam("wrapped_key"),
        ciphertext=bindparam("ciphertext"),
        seal_generation=bindparam("seal_generation"),
        revision=bindparam("revision"),
        updated_at=bindparam("updated_at"),
    )
)
_MARK_SHARED = update(User).where(User.id == bindparam("rid")).values(shared=true())
_GROUP_NAMED = select(Group.id).where(Group.name == bindparam("name"))
_INSERT_GROUP = Group.__table__.insert().values(
    id=bindparam("id"), name=bindparam("name"), created_at=bindparam("created_at")
)
_IS_MEMBER = select(GroupMember.user_id).where(
    GroupMember.group_id == bindparam("gid"), GroupMember.user_id == bindparam("uid")
)
_ADD_MEMBER = GroupMember.__table__.insert().values(group_id=bindparam("gid"), user_id=bindparam("uid"))
_REMOVE_MEMBER = delete(GroupMember).where(
    GroupMember.group_id == bindparam("gid"), GroupMember.user_id == bindparam("uid")
)
_GROUP_ROLES = delete(CredentialRole).where(
    CredentialRole.recipient_type == "group", CredentialRole.recipient_id == bindparam("gid")
)
_MEMBERS = select(GroupMember.user_id).where(GroupMember.group_id == bindparam("gid"))
_GROUP_MEMBERS = delete(GroupMember).where(GroupMember.group_id == bindparam("gid"))
_DELETE_GROUP = delete(Group).where(Group.id == bindparam("gid"))
