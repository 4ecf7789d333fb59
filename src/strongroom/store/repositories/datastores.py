"""Data stores, their roles (the credential role model: owner OWNER, then user and group rows), and the
credential associations that say which credential a user uses with a store (and which is their default)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, literal, or_, select, update

from strongroom.store.db import Database, Tx
from strongroom.store.models import Credential, CredentialAssociation, DataStore, DataStoreRole, Group, User
from strongroom.store.repositories.audit import Entry, append_in
from strongroom.store.repositories.sharing import EDITOR, OWNER, groups_of, role_of

DATACONNECTION = "dataconnection"
STORE_COLUMNS = (
    DataStore.id,
    DataStore.owner_id,
    DataStore.store_type,
    DataStore.canonical_name,
    DataStore.driver_id,
    DataStore.jdbc_url,
    DataStore.fields,
    DataStore.created_at,
    DataStore.updated_at,
)
_KEYS = (
    "id",
    "owner_id",
    "store_type",
    "canonical_name",
    "driver_id",
    "jdbc_url",
    "fields",
    "created_at",
    "updated_at",
)


def _shared(store_id: Any, user_id: Any) -> Any:
    return (
        select(func.max(DataStoreRole.role))
        .where(
            DataStoreRole.data_store_id == store_id,
            or_(
                and_(DataStoreRole.recipient_type == "user", DataStoreRole.recipient_id == user_id),
                and_(DataStoreRole.recipient_type == "group", DataStoreRole.recipient_id.in_(groups_of(user_id))),
            ),
        )
        .correlate_except(DataStoreRole)
        .scalar_subquery()
    )


def _role(user_id: Any) -> Any:
    return case((DataStore.owner_id == user_id, literal(OWNER)), else_=_shared(DataStore.id, user_id))


# An association is live while its user holds a role on both its credential and its store; a link left by a
# user who has since lost either is dormant: never listed, used or counted (it comes back if the role does).
_SEES_CREDENTIAL = role_of(Credential.id, Credential.owner_id, CredentialAssociation.user_id).is_not(None)
_LIVE = and_(_SEES_CREDENTIAL, _role(CredentialAssociation.user_id).is_not(None))

# A link of a credential to a store by someone who may reveal the credential (OWNER or EDITOR) and still holds a
# role on the store: what lets a mere CONSUMER of the credential log in there with it.
_VOUCHED = (
    select(CredentialAssociation.user_id)
    .join(Credential, Credential.id == CredentialAssociation.credential_id)
    .join(DataStore, DataStore.id == CredentialAssociation.object_id)
    .where(
        CredentialAssociation.credential_id == bindparam("credential"),
        CredentialAssociation.object_type == DATACONNECTION,
        CredentialAssociation.object_id == bindparam("store"),
        role_of(Credential.id, Credential.owner_id, CredentialAssociation.user_id) >= EDITOR,
        _role(CredentialAssociation.user_id).is_not(None),
    )
    .limit(1)
)

_WITH_ROLE = select(*STORE_COLUMNS, _role(bindparam("user")), User.username).join(User, User.id == DataStore.owner_id)
_ONE = _WITH_ROLE.where(DataStore.id == bindparam("id"))
_ROLES = (
    select(
        DataStoreRole.recipient_type,
        DataStoreRole.recipient_id,
        DataStoreRole.role,
        DataStoreRole.can_share,
        func.coalesce(User.username, Group.name),
    )
    .outerjoin(User, and_(DataStoreRole.recipient_type == "user", User.id == DataStoreRole.recipient_id))
    .outerjoin(Group, and_(DataStoreRole.recipient_type == "group", Group.id == DataStoreRole.recipient_id))
    .where(DataStoreRole.data_store_id == bindparam("id"))
    .order_by(DataStoreRole.created_at, DataStoreRole.recipient_type, DataStoreRole.recipient_id)
)


def _row(values: Sequence[Any]) -> dict[str, Any]:
    """A store's columns by name, with `role` (rank or None) and `creator` (the owner's username)."""
    row = dict(zip(_KEYS, values[: len(_KEYS)], strict=True))
    role = values[len(_KEYS)]
    row["role"] = None if role is None else int(role)
    row["creator"] = values[len(_KEYS) + 1]
    return row


class DataStoreRepository:
    """Every statement about data stores and credential associations."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def postgres(self) -> bool:
        return not self.db.is_sqlite

    def get(self, store_id: str, user_id: str) -> dict[str, Any] | None:
        """The store with the user's role (None: no role), or None if there is no such store."""
        rows = self.db.fetch(_ONE, {"id": store_id, "user": user_id})
        return _row(rows[0]) if rows else None

    def visible(self, user_id: str, store_type: str | None, name: str | None) -> list[dict[str, Any]]:
        """Stores the user has a role on, oldest first, optionally of one type and with one canonical name."""
        query = _WITH_ROLE.where(_role(bindparam("user")).is_not(None))
        params: dict[str, Any] = {"user": user_id}
        if store_type is not None:
            query = query.where(DataStore.store_type == bindparam("type"))
            params["type"] = store_type
        if name is not None:
            query = query.where(DataStore.canonical_name == bindparam("name"))
            params["name"] = name
        with self.db.read() as s:
            rows = s.execute(query.order_by(DataStore.created_at, DataStore.id), params).all()
        return [_row(r) for r in rows]

    def insert(self, row: Mapping[str, Any], audit: Entry) -> None:
        values = {k: row[k] for k in _KEYS}

        def add(tx: Tx) -> None:
            tx.run(DataStore.__table__.insert().values(**values), {})
            append_in(tx, audit, postgres=self.postgres)

        self.db.transact(add)

    def update(self, row: Mapping[str, Any], audit: Entry, keep_links_of: str | None = None) -> bool:
        """Write the store's changed columns, audited; with `keep_links_of`, delete every other user's association
        with the store in the same transaction. False: no such store."""
        changes = {k: row[k] for k in ("canonical_name", "driver_id", "jdbc_url", "fields", "updated_at")}

        def change(tx: Tx) -> bool:
            done = tx.run(update(DataStore).where(DataStore.id == row["id"]).values(**changes), {})
            if done and keep_links_of is not None:
                tx.run(
                    delete(CredentialAssociation).where(
                        CredentialAssociation.object_type == DATACONNECTION,
                        CredentialAssociation.object_id == row["id"],
                        CredentialAssociation.user_id != keep_links_of,
                    ),
                    {},
                )
            append_in(tx, audit, postgres=self.postgres)
            return bool(done)

        return self.db.transact(change)

    def delete(self, store_id: str, audit: Entry) -> bool:
        def remove(tx: Tx) -> bool:
            tx.run(
                delete(CredentialAssociation).where(
                    CredentialAssociation.object_type == DATACONNECTION, CredentialAssociation.object_id == store_id
                ),
                {},
            )
            done = tx.run(delete(DataStore).where(DataStore.id == store_id), {})
            append_in(tx, audit, postgres=self.postgres)
            return bool(done)

        return self.db.transact(remove)

    def roles(self, store_id: str) -> list[tuple[str, str, int, bool, str]]:
        """The store's shared rows: (recipient type, recipient id, role rank, can_share, recipient name)."""
        return [
            (kind, rid, int(role), bool(share), name)
            for kind, rid, role, share, name in self.db.fetch(_ROLES, {"id": store_id})
        ]

    def set_roles(
        self, store_id: str, changes: Sequence[tuple[str, str, int | None, bool]], at: datetime, audit: Entry
    ) -> None:
        """Apply (recipient type, recipient id, role rank or None to remove, can_share) with its audit record."""

        def apply(tx: Tx) -> None:
            for kind, rid, role, share in changes:
                tx.run(
                    delete(DataStoreRole).where(
                        DataStoreRole.data_store_id == store_id,
                        DataStoreRole.recipient_type == kind,
                        DataStoreRole.recipient_id == rid,
                    ),
                    {},
                )
                if role is not None:
                    tx.run(
                        DataStoreRole.__table__.insert().values(
                            data_store_id=store_id,
                            recipient_type=kind,
                            recipient_id=rid,
                            role=role,
                            can_share=share,
                            created_at=at,
                        ),
                        {},
                    )
                    if kind == "user":
                        tx.run(update(User).where(User.id == rid).values(shared=True), {})
            append_in(tx, audit, postgres=self.postgres)

        self.db.transact(apply)

    # ---- credential associations -------------------------------------------------------------------------

    def associate(self, credential_id: str, store_id: str, user_id: str, is_default: bool, at: datetime) -> bool:
        """Link the credential to the store for the user (a default replaces the user's earlier default);
        True if the link is new."""

        def link(tx: Tx) -> bool:
            mine = and_(
                CredentialAssociation.object_type == DATACONNECTION,
                CredentialAssociation.object_id == store_id,
                CredentialAssociation.user_id == user_id,
            )
            if is_default:
                tx.run(update(CredentialAssociation).where(mine).values(is_default=False), {})
            changed = tx.run(
                update(CredentialAssociation)
                .where(mine, CredentialAssociation.credential_id == credential_id)
                .values(is_default=is_default),
                {},
            )
            if changed:
                return False
            tx.run(
                CredentialAssociation.__table__.insert().values(
                    credential_id=credential_id,
                    object_type=DATACONNECTION,
                    object_id=store_id,
                    user_id=user_id,
                    is_default=is_default,
                    created_at=at,
                ),
                {},
            )
            return True

        return self.db.transact(link)

    def for_store(self, store_id: str, user_id: str) -> list[dict[str, Any]]:
        """The user's credentials linked to the store that they may still see, the default first (the caller
        checks their role on the store)."""
        query = (
            select(
                Credential.id,
                Credential.name,
                Credential.credential_type,
                Credential.created_at,
                Credential.description,
                CredentialAssociation.is_default,
            )
            .join(Credential, Credential.id == CredentialAssociation.credential_id)
            .where(
                CredentialAssociation.object_type == DATACONNECTION,
                CredentialAssociation.object_id == store_id,
                CredentialAssociation.user_id == user_id,
                _SEES_CREDENTIAL,
            )
            .order_by(CredentialAssociation.is_default.desc(), CredentialAssociation.created_at)
        )
        with self.db.read() as s:
            rows = s.execute(query).all()
        keys = ("credential_id", "name", "credential_type", "created_at", "description", "is_default")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def for_credential(self, credential_id: str, user_id: str) -> list[tuple[str, str, bool]]:
        """The user's links of one credential to stores they still hold a role on: (object type, object id, is
        default) (the caller checks their role on the credential)."""
        query = (
            select(CredentialAssociation.object_type, CredentialAssociation.object_id, CredentialAssociation.is_default)
            .join(DataStore, DataStore.id == CredentialAssociation.object_id)
            .where(
                CredentialAssociation.credential_id == credential_id,
                CredentialAssociation.user_id == user_id,
                CredentialAssociation.object_type == DATACONNECTION,
                _role(CredentialAssociation.user_id).is_not(None),
            )
        )
        with self.db.read() as s:
            return [(t, i, bool(d)) for t, i, d in s.execute(query.order_by(CredentialAssociation.created_at))]

    def vouched(self, credential_id: str, store_id: str) -> bool:
        """Whether a user who holds OWNER or EDITOR on the credential, and a role on the store, has a link of the
        credential to the store (the store's repointing deletes every link but its editor's)."""
        return bool(self.db.fetch(_VOUCHED, {"credential": credential_id, "store": store_id}))

    def defaults_using(self, credential_id: str, viewer_id: str) -> list[tuple[str, str, bool]]:
        """Stores with a live association that makes this credential someone's default: (store id, canonical
        name, whether `viewer_id` holds a role on the store), by name."""
        query = (
            select(DataStore.id, DataStore.canonical_name, _role(bindparam("viewer")).is_not(None))
            .join(
                CredentialAssociation,
                and_(
                    CredentialAssociation.object_id == DataStore.id, CredentialAssociation.object_type == DATACONNECTION
                ),
            )
            .join(Credential, Credential.id == CredentialAssociation.credential_id)
            .where(
                CredentialAssociation.credential_id == bindparam("credential"),
                CredentialAssociation.is_default.is_(True),
                _LIVE,
            )
            .distinct()
            .order_by(DataStore.canonical_name, DataStore.id)
        )
        with self.db.read() as s:
            rows = s.execute(query, {"credential": credential_id, "viewer": viewer_id})
            return [(i, n, bool(seen)) for i, n, seen in rows]
