"""Data stores (DataRobot's `externalDataStores`): CRUD, roles, connection tests, browsing, and the credential
associations that name a user's default credential for a store.

A store holds where to connect, never a secret. Its creator is OWNER; other users and groups get roles as on
credentials (CONSUMER sees and uses it, EDITOR also changes it, OWNER also deletes and shares it). A test or
a browse connects with `{credentialId}` (opened by `CredentialService.use`, any role from CONSUMER up, audited),
`{user, password}` or `{credentialData}` (used once, never stored), or else the caller's default credential.
A credential's OWNER and EDITORs log in with it anywhere; a user who is only its CONSUMER (and may not see its
password) only at a store one of them has linked it to, so a store of theirs cannot send it to a server of theirs.

A change of where a store connects (its driver, URL or fields) removes every other user's association with
it, in the same transaction: a default credential is only ever sent where its user last chose to use it.

An association counts only while its user holds a role on both its credential and its store. When they lose
either, it is dormant: not listed, not taken as their default (the store answers as if they had set none, as
it does once the credential is deleted), and no reason to refuse the credential's plain delete; it comes back
if the role does. A 409 for a delete names only the stores the caller holds a role on and counts the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

from strongroom import credential_types
from strongroom.errors import Conflict, Forbidden, Hidden, InvalidInput, NotFound
from strongroom.representation import iso
from strongroom.services import s3
from strongroom.services.accounts import Principal
from strongroom.services.audit import Event
from strongroom.services.connections import DRIVERS, MAX_ROWS, Connector, Target, target
from strongroom.services.credentials import CredentialService, is_id, name_filters
from strongroom.services.roles import CONSUMER, EDITOR, OWNER, ROLE_NAMES, access_entries
from strongroom.services.sharing import parse_role_changes, resolve_recipients
from strongroom.store.models import new_id, utcnow
from strongroom.store.repositories.datastores import DATACONNECTION, DataStoreRepository
from strongroom.store.repositories.sharing import SharingRepository

T = TypeVar("T")
STORE_TYPES = ("jdbc",)
# The complete bodies the datarobot client sends (the shared spec's datarobot-use-by-id.md: externalDataStores/
# and its test/, schemas/ and tables/); preview/ and previewQuery/ are not listed there, so they are not checked.
_STORE_KEYS = ("type", "canonicalName", "params")
_CHANGEABLE = ("canonicalName", "params")
_PARAMS_KEYS = ("driverId", "connectorId", "jdbcUrl", "fields")
_LOGIN_KEYS = ("credentialId", "user", "password", "credentialData", "useKerberos")
_USE_KEYS = {"test": _LOGIN_KEYS, "schemas": _LOGIN_KEYS, "tables": (*_LOGIN_KEYS, "schema")}
# Connection properties and field names that hold secrets, compared lower-cased without separators: these
# whole names, and names containing one of the parts (password, sslPassword, clientCertificateKeyStorePassword,
# awsSecretAccessKey, accessToken, ...). A bare "key" part would refuse MySQL's allowPublicKeyRetrieval.
_SECRET_NAMES = frozenset({"pass", "pw", "key", "apikey", "accesskey", "privatekey", "accountkey"})
_SECRET_PARTS = ("password", "passwd", "passphrase", "pwd", "secret", "token")
_SEPARATORS = re.compile(r"[\s_.\-]+")
_AUTHORITY_END = re.compile(r"[/?;]")  # where a JDBC URL's host part ends
# A `name=` anywhere after the scheme: query (?a=1&b=2), `;a=1` properties, MySQL's (host=h,password=p) hosts.
_PROPERTY = re.compile(r"([^=&;?/(),@\s]+)\s*=")


class DataStoreService:
    """Data store use cases."""

    def __init__(
        self,
        stores: DataStoreRepository,
        sharing: SharingRepository,
        credentials: CredentialService,
        connector: Connector,
    ) -> None:
        self.stores = stores
        self.sharing = sharing
        self.credentials = credentials
        self.connector = connector

    # ---- drivers and stores -----------------------------------------------------------------------------

    def drivers(self, who: Principal) -> list[dict[str, Any]]:
        """The drivers the server can connect with."""
        who.require("read")
        return [d.wire() for d in DRIVERS.values()]

    def list(self, who: Principal, store_type: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """The stores the caller has a role on, each with that role; `type` and `name` filter."""
        who.require("read")
        exact = name_filters(name or None, None).get("name")  # in NFC, as canonical names are stored
        wanted = None if store_type in (None, "", "all") else store_type
        if wanted is not None and wanted not in STORE_TYPES:
            return []  # no store is of another type
        return [_wire(r) for r in self.stores.visible(who.user_id, wanted, exact)]

    def get(self, who: Principal, store_id: str) -> dict[str, Any]:
        who.require("read")
        return _wire(self._store(who, store_id, CONSUMER, "see it"))

    def create(self, who: Principal, body: Mapping[str, Any]) -> dict[str, Any]:
        """A new store owned by the caller (audited)."""
        who.require("write")
        credential_types.reject_unknown(body, _STORE_KEYS, "a data store")
        store_type = body.get("type", "jdbc")
        if store_type not in STORE_TYPES:
            raise InvalidInput("type: must be jdbc", {"type": "must be jdbc"})
        now = utcnow()
        row: dict[str, Any] = {
            "id": new_id(),
            "owner_id": who.user_id,
            "store_type": store_type,
            "created_at": now,
            "updated_at": now,
            "canonical_name": _name(body.get("canonicalName")),
            **_params(body.get("params")),
        }
        self.stores.insert(row, _event("dataStore.create", 201, who, row))
        return _wire({**row, "role": OWNER, "creator": who.username})

    def update(self, who: Principal, store_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change the name or params (EDITOR or OWNER; audited); the store as it now is."""
        who.require("write")
        row = self._store(who, store_id, EDITOR, "change it")
        unknown = [credential_types.shown_key(key) for key in body if key not in _CHANGEABLE]
        if unknown or not body:
            msg = "only canonicalName and params can be changed"
            raise InvalidInput(f"{(unknown or ['body'])[0]}: {msg}", {(unknown or ["body"])[0]: msg})
        if "canonicalName" in body:
            row["canonical_name"] = _name(body["canonicalName"])
        before = tuple(row[k] for k in _TARGET)
        if "params" in body:
            row.update(_params(body["params"]))
        row["updated_at"] = utcnow()
        # Pointed elsewhere: other users' links go, or their default credential would follow the store to
        # wherever its editor points it (theirs to set again, knowing where it now connects).
        repointed = before != tuple(row[k] for k in _TARGET)
        audit = _event("dataStore.update", 200, who, row, fields=sorted(body), repointed=repointed)
        if not self.stores.update(row, audit, keep_links_of=who.user_id if repointed else None):
            raise _not_found()
        return _wire(row)

    def delete(self, who: Principal, store_id: str) -> None:
        """Delete the store and every association with it (OWNER; audited)."""
        who.require("write")
        row = self._store(who, store_id, OWNER, "delete it")
        if not self.stores.delete(store_id, _event("dataStore.delete", 204, who, row)):
            raise _not_found()

    # ---- roles ------------------------------------------------------------------------------------------

    def access_list(self, who: Principal, store_id: str) -> list[dict[str, Any]]:
        """Everyone with a role on the store, its owner first (DataRobot's sharedRoles items)."""
        who.require("read")
        row = self._store(who, store_id, CONSUMER, "see it")
        return access_entries(row["owner_id"], row["creator"], self.stores.roles(store_id))

    def update_roles(self, who: Principal, store_id: str, body: Mapping[str, Any]) -> None:
        """Apply an `updateRoles` body (OWNER only), validated and resolved exactly as a credential's."""
        who.require("write")
        row = self._store(who, store_id, OWNER, "share it")
        changes = []
        for kind, rid, rank, can_share in resolve_recipients(self.sharing, parse_role_changes(body)):
            if (kind, rid) == ("user", row["owner_id"]):
                if rank != OWNER:
                    raise Conflict("roles: a data store keeps its owner", {"roles": "would leave no owner"})
                continue
            changes.append((kind, rid, rank, can_share))
        self.stores.set_roles(store_id, changes, utcnow(), _event("dataStore.share", 204, who, row))

    # ---- using a store ----------------------------------------------------------------------------------

    def test(self, who: Principal, store_id: str, body: Mapping[str, Any]) -> dict[str, str]:
        """Connect with the credentials given (or the caller's default) and run a trivial statement."""
        return {"message": self._use(who, store_id, body, "test", self.connector.test)}

    def schemas(self, who: Principal, store_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._use(who, store_id, body, "schemas", self.connector.schemas)

    def tables(self, who: Principal, store_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        schema = _optional_string(body, "schema")
        return self._use(who, store_id, body, "tables", lambda t, u, p: self.connector.tables(t, u, p, schema))

    def preview(self, who: Principal, store_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        table = _optional_string(body, "table")
        if table is None:
            raise InvalidInput("table: is required", {"table": "is required"})
        schema, rows = _optional_string(body, "schema"), _max_rows(body)
        return self._use(
            who, store_id, body, "preview", lambda t, u, p: self.connector.preview(t, u, p, table, schema, rows)
        )

    def preview_query(self, who: Principal, store_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        sql = _optional_string(body, "sql")
        if sql is None:
            raise InvalidInput("sql: is required", {"sql": "is required"})
        rows = _max_rows(body)
        return self._use(who, store_id, body, "previewQuery", lambda t, u, p: self.connector.query(t, u, p, sql, rows))

    def _use(
        self, who: Principal, store_id: str, body: Mapping[str, Any], purpose: str, fn: Callable[[Target, str, str], T]
    ) -> T:
        who.require("use")
        known = _USE_KEYS.get(purpose)
        if known is not None:
            credential_types.reject_unknown(body, known, f"{purpose}/")
        row = self._store(who, store_id, CONSUMER, "use it")
        where = target(row["driver_id"], row["jdbc_url"], json.loads(row["fields"]))
        user, password = self._login(who, row, body, purpose)
        return fn(where, user, password)

    def _login(self, who: Principal, row: Mapping[str, Any], body: Mapping[str, Any], purpose: str) -> tuple[str, str]:
        """(user, password) from the body's credentialId, user/password or credentialData, else the default."""
        if body.get("useKerberos"):
            raise InvalidInput("useKerberos: Kerberos is not supported", {"useKerberos": "not supported"})
        credential_id = body.get("credentialId")
        if credential_id is None and body.get("credentialData") is None and body.get("user") is None:
            defaults = [a for a in self.stores.for_store(row["id"], who.user_id) if a["is_default"]]
            if not defaults:
                msg = "give credentialId, user and password, or credentialData; you have no default credential here"
                raise InvalidInput(f"credentialId: {msg}", {"credentialId": msg})
            credential_id = defaults[0]["credential_id"]
        if credential_id is not None:
            if not isinstance(credential_id, str):
                raise InvalidInput("credentialId: must be a string", {"credentialId": "must be a string"})
            kind, fields = self.credentials.use(
                who,
                credential_id,
                {"purpose": f"dataStore.{purpose}", "dataStoreId": row["id"]},
                guard=self._linked_for(credential_id, row["id"], "credentialId"),
            )
            return _basic(kind, fields, "credentialId")
        data = body.get("credentialData")
        if data is not None:
            return _basic(*_credential_data(data), "credentialData")
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not user or not isinstance(password, str):
            msg = "user and password must both be strings"
            raise InvalidInput(f"user: {msg}", {"user": msg})
        return user, password

    # ---- S3 checks of a credential -----------------------------------------------------------------------

    def test_credential(self, who: Principal, credential_id: str, body: Mapping[str, Any]) -> dict[str, str]:
        """List one key of `body.url` with a stored s3 credential (`use` scope, any role from CONSUMER up;
        audited as credential.use with the purpose and the URL)."""
        who.require("use")
        where = s3.location(body)
        if body.get("credentialData") is not None:
            msg = "give credentialData to credentials/test/, without a credential id"
            raise InvalidInput(f"credentialData: {msg}", {"credentialData": msg})
        kind, fields = self.credentials.use(
            who, credential_id, {"purpose": "credential.test", "url": where.url, "endpointUrl": where.endpoint}
        )
        return {"message": s3.list_one(self.connector, where, s3.keys(kind, fields, "credentialId"))}

    def test_credential_data(self, who: Principal, body: Mapping[str, Any]) -> dict[str, str]:
        """List one key of `body.url` with the s3 `credentialData` of the body (validated like a stored
        credential, used once, never stored)."""
        who.require("use")
        where = s3.location(body)
        kind, values = _credential_data(body.get("credentialData"))
        return {"message": s3.list_one(self.connector, where, s3.keys(kind, values, "credentialData"))}

    # ---- batch jobs -------------------------------------------------------------------------------------

    def check_job_use(self, who: Principal, store_id: str, credential_id: str | None, field: str) -> tuple[str, str]:
        """The credential a job will connect to the store with (the given one or the caller's default), once
        the caller may use both (404 with no role, 403 with too low a one), and the fingerprint of where the store
        connects now, which the job keeps (see `job_login`); nothing is opened or audited."""
        who.require("use")
        row = self._store(who, store_id, CONSUMER, "use it")
        target(row["driver_id"], row["jdbc_url"], json.loads(row["fields"]))
        if credential_id is None:
            defaults = [a for a in self.stores.for_store(row["id"], who.user_id) if a["is_default"]]
            if not defaults:
                msg = "give credentialId: you have no default credential for this data store"
                raise InvalidInput(f"{field}.credentialId: {msg}", {f"{field}.credentialId": msg})
            credential_id = str(defaults[0]["credential_id"])
        kind = self.credentials.check_use(
            who, credential_id, guard=self._linked_for(credential_id, row["id"], f"{field}.credentialId")
        )
        if kind != "basic":
            msg = f"a database connection needs a basic credential (user and password), not {kind}"
            raise InvalidInput(f"{field}.credentialId: {msg}", {f"{field}.credentialId": msg})
        return credential_id, target_fingerprint(row)

    def job_login(
        self, who: Principal, store_id: str, credential_id: str, purpose: Mapping[str, Any], pinned: str | None
    ) -> tuple[Target, str, str]:
        """Where to connect and with which user and password, for a job on the caller's behalf: the roles are
        checked again, the store must still connect where it did when the job was created (`pinned`, from
        `check_job_use`), and only then is the credential opened, its use audited with `purpose` (never a value)."""
        who.require("use")
        row = self._store(who, store_id, CONSUMER, "use it")
        if pinned != target_fingerprint(row):
            # Repointed since: the credential was given for the old target, so it goes nowhere (a job created
            # before fingerprints were kept cannot tell, and fails the same way).
            raise Conflict(
                f"data store {row['canonical_name']!r} ({row['id']}) was changed to connect elsewhere after this job "
                "was created; the job does not connect to its new target. Create the job again to use the store as "
                "it is now",
                {"dataStoreId": "changed after the job was created"},
            )
        where = target(row["driver_id"], row["jdbc_url"], json.loads(row["fields"]))
        kind, fields = self.credentials.use(
            who,
            credential_id,
            {**purpose, "dataStoreId": row["id"]},
            guard=self._linked_for(credential_id, row["id"], "credentialId"),
        )
        user, password = _basic(kind, fields, "credentialId")
        return where, user, password

    # ---- credential associations ------------------------------------------------------------------------

    def associate(self, who: Principal, credential_id: str, key: str, body: Mapping[str, Any]) -> bool:
        """Link a credential the caller may use to a store they may use (`dataconnection:<id>`); with isDefault
        it becomes their default there. True if the link is new."""
        who.require("write")
        store_id = _object(key)
        is_default = body.get("isDefault", False)
        if not isinstance(is_default, bool):
            raise InvalidInput("isDefault: must be true or false", {"isDefault": "must be a boolean"})
        self.credentials.get(who, credential_id)
        row = self._store(who, store_id, CONSUMER, "use it")
        created = self.stores.associate(credential_id, store_id, who.user_id, is_default, utcnow())
        self.credentials.record(
            Event(
                "credential.associate",
                201 if created else 200,
                who,
                credential_id=credential_id,
                detail={"dataStoreId": row["id"], "isDefault": is_default},
            ).entry()
        )
        return created

    def associations_of_store(self, who: Principal, key: str) -> list[dict[str, Any]]:
        """The caller's credentials linked to a store, the default first."""
        who.require("read")
        store_id = _object(key)
        self._store(who, store_id, CONSUMER, "see it")
        return [
            {
                "credentialId": a["credential_id"],
                "name": a["name"],
                "credentialType": a["credential_type"],
                "creationDate": iso(a["created_at"]),
                "description": a["description"] or "",
                "isDefault": bool(a["is_default"]),
            }
            for a in self.stores.for_store(store_id, who.user_id)
        ]

    def associations_of_credential(self, who: Principal, credential_id: str) -> list[dict[str, Any]]:
        """What the caller linked a credential to."""
        who.require("read")
        self.credentials.get(who, credential_id)
        return [
            {"objectType": kind, "objectId": oid, "isDefault": default}
            for kind, oid, default in self.stores.for_credential(credential_id, who.user_id)
        ]

    def check_deletable(self, who: Principal, credential_id: str) -> None:
        """Before a plain delete: 409 while a live association makes the credential someone's default (once the
        caller may delete it; else the delete's own 404/403), naming only stores the caller holds a role on."""
        using = self.stores.defaults_using(credential_id, who.user_id) if is_id(credential_id) else []
        if not using:
            return  # the delete itself checks the caller's role: the common case costs one read here
        self.credentials.check_delete(who, credential_id)
        # Another user's store is theirs to keep private: its name and id never reach the credential's owner.
        seen = [f"{name!r} ({sid})" for sid, name, visible in using if visible]
        hidden = sum(1 for _, _, visible in using if not visible)
        parts = []
        if seen:
            parts.append(f"data store {', '.join(seen[:5])}" + (f" and {len(seen) - 5} more" if len(seen) > 5 else ""))
        if hidden:
            parts.append("1 other user's data store" if hidden == 1 else f"{hidden} other users' data stores")
        raise Conflict(
            f"credential is the default credential of {' and of '.join(parts)}; delete with ?force=true to proceed",
            {"credential": "in use as a default"},
        )

    def _linked_for(self, credential_id: str, store_id: str, field: str) -> Callable[[int], None]:
        """The check before a credential logs in to a store: its OWNER and EDITORs use it anywhere, a CONSUMER
        only with a store one of them has linked it to (else 403 naming `field`, before any connection). A
        consumer never sees the secret, so a store of theirs pointed at a server of theirs must not receive it."""

        def check(role: int) -> None:
            if role >= EDITOR or self.stores.vouched(credential_id, store_id):
                return
            msg = (
                f"{field}: your role on credential {credential_id} is CONSUMER: a credential you may only use may "
                "only be used with data stores its owner has linked it to; ask its owner (or an editor) to link it "
                f"to this data store (credentials/{credential_id}/associations/dataconnection:{store_id}/)"
            )
            raise Forbidden(msg, {field: "not linked to this data store by its owner"}, target=credential_id)

        return check

    def _store(self, who: Principal, store_id: str, needed: int, doing: str) -> dict[str, Any]:
        row = self.stores.get(store_id, who.user_id) if is_id(store_id) else None
        if row is None:
            raise _not_found()
        if row["role"] is None:
            raise Hidden("data store not found", target=store_id)
        if row["role"] < needed:
            names = " or ".join(ROLE_NAMES[r] for r in (OWNER, EDITOR) if r >= needed)
            raise Forbidden(
                f"your role on this data store is {ROLE_NAMES[row['role']]}; to {doing} you need {names}",
                {"role": f"needs {names}"},
            )
        return row


def _wire(row: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"driverId": row["driver_id"]}
    if row["jdbc_url"]:
        params["jdbcUrl"] = row["jdbc_url"]
    fields = json.loads(row["fields"])
    if fields:
        params["fields"] = fields
    driver = DRIVERS.get(row["driver_id"] or "")
    return {
        "id": row["id"],
        "type": row["store_type"],
        "canonicalName": row["canonical_name"],
        "creator": row["creator"],
        "updated": iso(row["updated_at"]),
        "role": ROLE_NAMES[row["role"]],
        "params": params,
        "driverClassType": driver.database_driver if driver else None,
    }


def _name(value: Any) -> str:
    """A canonical name under the rules of a credential's name (NFC; no control, format or bidi characters)."""
    return credential_types.check_name(value, field="canonicalName")


_TARGET = ("driver_id", "jdbc_url", "fields")  # the store columns that say where it connects


def target_fingerprint(row: Mapping[str, Any]) -> str:
    """A digest of where a store connects (its `_TARGET` columns): equal exactly while it is not repointed."""
    where = json.dumps([row[k] for k in _TARGET], separators=(",", ":"))
    return hashlib.sha256(where.encode()).hexdigest()


def _params(value: Any) -> dict[str, Any]:
    """The store columns of a params object (validated by parsing its target)."""
    if not isinstance(value, dict):
        raise InvalidInput("params: must be an object", {"params": "must be an object"})
    credential_types.reject_unknown(value, _PARAMS_KEYS, "data store params", prefix="params.")
    driver_id, jdbc_url, fields = value.get("driverId"), value.get("jdbcUrl"), value.get("fields") or []
    if driver_id is not None and not isinstance(driver_id, str):
        raise InvalidInput("params.driverId: must be a string", {"params.driverId": "must be a string"})
    if jdbc_url is not None and (not isinstance(jdbc_url, str) or len(jdbc_url) > 2048):
        msg = "must be a string of at most 2048 characters"
        raise InvalidInput(f"params.jdbcUrl: {msg}", {"params.jdbcUrl": msg})
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and all(isinstance(f.get(k), str) for k in ("id", "name", "value")) for f in fields
    ):
        msg = "must be a list of {id, name, value} strings"
        raise InvalidInput(f"params.fields: {msg}", {"params.fields": msg})
    if not jdbc_url and not fields:
        raise InvalidInput("params: needs jdbcUrl or fields", {"params": "needs jdbcUrl or fields"})
    _no_nul(driver_id, jdbc_url, fields)
    _no_secrets(jdbc_url, fields)
    where = target(driver_id, jdbc_url, fields)
    kept = [{"id": f["id"], "name": f["name"], "value": f["value"]} for f in fields]
    return {"driver_id": where.driver.id, "jdbc_url": jdbc_url or None, "fields": json.dumps(kept)}


def _no_nul(driver_id: str | None, jdbc_url: str | None, fields: list[dict[str, Any]]) -> None:
    """422 for a NUL character in any string of the params (PostgreSQL text cannot hold one)."""
    strings = [("params.driverId", driver_id), ("params.jdbcUrl", jdbc_url)]
    strings += [(f"params.fields[{i}].{k}", f[k]) for i, f in enumerate(fields) for k in ("id", "name", "value")]
    for where, text in strings:
        if text is not None and "\x00" in text:
            raise InvalidInput(f"{where}: must not contain NUL", {where: "must not contain NUL"})


def _secret_like(name: str) -> bool:
    """Whether a connection property or field name (any case, separators ignored) names a secret."""
    squeezed = _SEPARATORS.sub("", unquote(name)).lower()
    return squeezed in _SECRET_NAMES or any(part in squeezed for part in _SECRET_PARTS)


def _no_secrets(jdbc_url: str | None, fields: list[dict[str, Any]]) -> None:
    """422 for a password in a JDBC URL (its userinfo, or a password-like property) or a password-like field:
    a data store holds where to connect, never a secret, which belongs in a credential."""
    use = "a data store holds no secret: store it in a credential and connect with its credentialId"
    if jdbc_url:
        rest = jdbc_url.partition("//")[2]
        if "@" in _AUTHORITY_END.split(rest, maxsplit=1)[0]:
            msg = f"must not hold a user or password before the host; {use}"
            raise InvalidInput(f"params.jdbcUrl: {msg}", {"params.jdbcUrl": msg})
        if any(_secret_like(found[1]) for found in _PROPERTY.finditer(rest)):
            msg = f"must not hold a password-like property; {use}"
            raise InvalidInput(f"params.jdbcUrl: {msg}", {"params.jdbcUrl": msg})
    for i, f in enumerate(fields):
        for key in ("name", "id"):
            if _secret_like(f[key]):
                where = f"params.fields[{i}].{key}"
                msg = f"must not name a password-like field; {use}"
                raise InvalidInput(f"{where}: {msg}", {where: msg})


def _credential_data(data: Any) -> tuple[str, dict[str, Any]]:
    """The type and fields of an inline `credentialData` object, validated like a stored credential's."""
    ctype, values = credential_types.parse_credential_data(data)
    return ctype.name, values


def _basic(kind: str, fields: Mapping[str, Any], field: str) -> tuple[str, str]:
    if kind != "basic":
        msg = f"a database connection needs a basic credential (user and password), not {kind}"
        raise InvalidInput(f"{field}: {msg}", {field: msg})
    return str(fields["user"]), str(fields["password"])


def _optional_string(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidInput(f"{name}: must be a non-empty string", {name: "must be a non-empty string"})
    return value


def _max_rows(body: Mapping[str, Any]) -> int:
    value = body.get("maxRows", 100)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_ROWS:
        msg = f"must be a whole number from 1 to {MAX_ROWS}"
        raise InvalidInput(f"maxRows: {msg}", {"maxRows": msg})
    return value


def _object(key: str) -> str:
    kind, _, store_id = key.partition(":")
    if kind != DATACONNECTION or not is_id(store_id):
        msg = "must be dataconnection:<data store id>"
        raise InvalidInput(f"association: {msg}", {"association": msg})
    return store_id


def _event(action: str, status: int, who: Principal, row: Mapping[str, Any], **detail: Any) -> Any:
    """A data store's audit record: the store in `detail` (audit targets name credentials)."""
    return Event(
        action, status, who, detail={"dataStoreId": row["id"], "name": row["canonical_name"], **detail}
    ).entry()


def _not_found() -> NotFound:
    return NotFound("data store not found")
