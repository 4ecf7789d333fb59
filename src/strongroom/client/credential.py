"""`Credential`: the datarobot.Credential surface, with one `create_*` classmethod generated per declared type.

The object holds only what the server returns (never a secret), so it is safe to print, log or pickle.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from strongroom.client.client import get_client
from strongroom.client.dates import parse_date, wire_date
from strongroom.client.errors import ClientError, StrongroomSDKError
from strongroom.credential_types import TYPES, CredentialType, Field

_PATH = "credentials/"
_STANDARD_KEYS = ("credentialId", "name", "credentialType", "description", "creationDate")
_ALL_SECRET_NAMES = frozenset(f.name for t in TYPES.values() for f in t.fields if f.secret)


def camel(name: str) -> str:
    """snake_case -> camelCase, as datarobot's `to_api` turns keyword arguments into JSON keys."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _item_path(credential_id: str) -> str:
    """The credential's URL; the id is quoted so a crafted id cannot walk to another route."""
    return f"{_PATH}{quote(str(credential_id), safe='')}/"


def _roles_path(credential_id: str) -> str:
    return f"{_item_path(credential_id)}sharedRoles/"


class SharingRole:
    """One holder of a role on a credential, as DataRobot's `SharingRole`: id, name, role, share_recipient_type
    ("user" or "group") and can_share."""

    def __init__(self, id: str, name: str, role: str, share_recipient_type: str, can_share: bool) -> None:
        self.id = id
        self.name = name
        self.role = role
        self.share_recipient_type = share_recipient_type
        self.can_share = can_share

    def __repr__(self) -> str:
        return f"SharingRole({self.share_recipient_type} {self.name!r}, {self.role!r}, can_share={self.can_share})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SharingRole):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_server_data(cls, data: Mapping[str, Any]) -> SharingRole:
        """Build from a `sharedRoles` entry."""
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise StrongroomSDKError("the server returned a shared role without an id")
        return cls(
            id=data["id"],
            name=str(data.get("name") or data["id"]),
            role=str(data.get("role")),
            share_recipient_type=str(data.get("shareRecipientType", "user")),
            can_share=bool(data.get("canShare")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The entry in its wire (camelCase) shape."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "shareRecipientType": self.share_recipient_type,
            "canShare": self.can_share,
        }


def _object_value(f: Field, value: Any) -> dict[str, Any]:
    """An object field (the GCP key) as a dict, parsing a JSON string client-side as datarobot does."""
    if isinstance(value, str):
        problem = None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:  # the message gives a position, never the text
            problem = f"Could not parse {f.param}: {exc.msg} at line {exc.lineno} column {exc.colno}"
        if problem is not None:  # raised outside the handler: no __context__ holding the error's `.doc` (the key)
            raise ValueError(problem)
    if not isinstance(value, Mapping):
        raise TypeError(f"{f.param} must be a dict or a JSON object string, not {type(value).__name__}")
    return dict(value)


def _wire_value(f: Field, value: Any) -> Any:
    """Shape a keyword argument for the wire according to the field's kind."""
    if f.kind == "object":
        return _object_value(f, value)
    if f.kind == "string_list" and isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    return value


class Credential:
    """A stored credential as the server describes it: id, name, type, description, date and public fields.

    Secret field values are write-only: they can be set by `create_*` and `update`, never read back.
    """

    def __init__(
        self,
        credential_id: str | None = None,
        name: str | None = None,
        credential_type: str | None = None,
        creation_date: datetime | None = None,
        description: str | None = None,
        public: dict[str, Any] | None = None,
    ) -> None:
        self.credential_id = credential_id
        self.name = name
        self.credential_type = credential_type
        self.creation_date = creation_date
        self.description = description
        self.public: dict[str, Any] = public if public is not None else {}

    def __repr__(self) -> str:
        return f"Credential({self.credential_id!r}, {self.name!r}, {self.credential_type!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credential):
            return NotImplemented
        return self.credential_id is not None and self.credential_id == other.credential_id

    def __hash__(self) -> int:
        return hash((Credential, self.credential_id))

    @classmethod
    def from_server_data(cls, data: Mapping[str, Any]) -> Credential:
        """Build from a response object, dropping any secret field a misbehaving server might have sent."""
        if not isinstance(data, Mapping) or not isinstance(data.get("credentialId"), str):
            raise StrongroomSDKError("the server returned a credential without a credentialId")
        ctype = TYPES.get(data.get("credentialType"))  # type: ignore[arg-type]
        secret = {f.name for f in ctype.fields if f.secret} if ctype else _ALL_SECRET_NAMES
        public = {k: v for k, v in data.items() if k not in _STANDARD_KEYS and k not in secret}
        return cls(
            credential_id=data["credentialId"],
            name=data.get("name"),
            credential_type=data.get("credentialType"),
            creation_date=parse_date(data.get("creationDate")),
            description=data.get("description") or "",
            public=public,
        )

    def _refresh(self, data: Mapping[str, Any]) -> None:
        """Adopt the server's view after an update, so derived changes (a cleared description) show."""
        fresh = self.from_server_data(data)
        self.__dict__.update(fresh.__dict__)

    def as_dict(self) -> dict[str, Any]:
        """The credential in its wire (camelCase) shape, e.g. for JSON output."""
        created = wire_date(self.creation_date)
        return {
            "credentialId": self.credential_id,
            "name": self.name,
            "credentialType": self.credential_type,
            "description": self.description,
            "creationDate": created,
            **self.public,
        }

    @classmethod
    def list(
        cls, types: str | Iterable[str] | None = None, name: str | None = None, search: str | None = None
    ) -> list[Credential]:
        """Every credential the caller may see, across all pages; `types` keeps only those types, `name` those of
        exactly that name, `search` those whose name contains it (ignoring case)."""
        params: dict[str, Any] = {}
        if types is not None:
            params["types"] = [types] if isinstance(types, str) else [str(t) for t in types]
        if name is not None:
            params["name"] = name
        if search is not None:
            params["search"] = search
        return [cls.from_server_data(item) for item in get_client().paginate(_PATH, params or None)]

    @classmethod
    def get_by_name(cls, name: str) -> Credential:
        """The one credential of that exact name the caller may see (ClientError 404 when there is none; an
        error naming the ids when credentials shared with the caller make the name ambiguous)."""
        found = cls.list(name=name)
        if len(found) == 1:
            return found[0]
        if not found:
            message = f"credential not found: none named {name!r}"
            raise ClientError(message, 404, {"message": message})
        ids = ", ".join(str(c.credential_id) for c in found)
        raise StrongroomSDKError(f"{len(found)} credentials named {name!r} ({ids}); give an id instead")

    @classmethod
    def get(cls, credential_id: str) -> Credential:
        """Fetch one credential by id (ClientError 404 when unknown or not the caller's)."""
        return cls.from_server_data(get_client().get(_item_path(credential_id)).json())

    def delete(self) -> None:
        """Delete this credential from the store."""
        get_client().delete(_item_path(self._id()))

    def update(self, name: str | None = None, description: str | None = None, **kwargs: Any) -> None:
        """Change the name, description or type-specific fields in place; None values are left out.

        As in DataRobot, a new name without a description clears the old description. Keyword arguments are
        the `create_*` parameter names (e.g. `password`, `aws_secret_access_key`, `private_key`).
        """
        ctype = TYPES.get(self.credential_type or "")
        by_param = {f.param: f for f in ctype.fields} if ctype else {}
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if description is not None:
            body["description"] = description
        for key, value in kwargs.items():
            if value is None:
                continue
            f = by_param.get(key)
            body[f.name if f else camel(key)] = _wire_value(f, value) if f else value
        response = get_client().patch(_item_path(self._id()), json=body or None)
        data = response.json() if response.content and response.status_code != 204 else None
        if isinstance(data, Mapping) and "credentialId" in data:
            self._refresh(data)
            return
        if name is not None:
            self.name = name
            self.description = description or ""
        elif description is not None:
            self.description = description

    def get_access_list(self) -> list[SharingRole]:
        """Everyone holding a role on this credential, its owner first (DataRobot's shared-roles entries)."""
        return [SharingRole.from_server_data(item) for item in get_client().paginate(_roles_path(self._id()))]

    def share(
        self,
        username: str | None = None,
        role: str = "CONSUMER",
        can_share: bool = False,
        *,
        group: str | None = None,
    ) -> None:
        """Give a user (by username) or a group (`group=`, by id or name) a role: OWNER, EDITOR, CONSUMER, or
        NO_ROLE to take their access away."""
        if (username is None) == (group is None):
            raise StrongroomSDKError("share with exactly one recipient: a username or group=")
        if group is not None:
            recipient: dict[str, Any] = {"shareRecipientType": "group", "name": group}
        else:
            recipient = {"shareRecipientType": "user", "username": username}
        self.update_shared_roles([{**recipient, "role": role, "canShare": can_share}])

    def update_shared_roles(self, roles: Iterable[Mapping[str, Any]]) -> None:
        """Apply several role changes at once (DataRobot's `updateRoles` entries); all apply or none does."""
        body = {"operation": "updateRoles", "roles": [dict(r) for r in roles]}
        get_client().patch(_roles_path(self._id()), json=body)

    def access_token(self) -> Any:
        """An `AccessToken` of this oauth credential, refreshed by the server first when it expires soon."""
        from strongroom.client.oauth import AccessToken

        return AccessToken.fetch(self._id())

    def _id(self) -> str:
        """The id, or a clear error for a Credential built by hand without one."""
        if not self.credential_id:
            raise StrongroomSDKError("this Credential has no credential_id")
        return self.credential_id


def _annotation(f: Field, required: bool) -> Any:
    """The parameter annotation help() shows, derived from the field kind."""
    base: Any = {"string": str, "string_list": list[str], "object": dict[str, Any] | str}[f.kind]
    return base if required else base | None


def _signature(ctype: CredentialType) -> inspect.Signature:
    """`(cls, name, <fields>, description=None)`: always-required fields are plain parameters, others default
    to None. Optional extras of a type with a single complete form (basic's snowflakeAccountName) are
    keyword-only, so `description` keeps the positional slot DataRobot gives it."""
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("cls", positional), inspect.Parameter("name", positional, annotation=str)]
    extras = []
    for f in ctype.fields:
        required = f.name in ctype.always_required
        if required:
            params.append(inspect.Parameter(f.param, positional, annotation=_annotation(f, True)))
        elif len(ctype.requires) == 1:
            extras.append(
                inspect.Parameter(
                    f.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_annotation(f, False)
                )
            )
        else:
            params.append(inspect.Parameter(f.param, positional, default=None, annotation=_annotation(f, False)))
    params.append(inspect.Parameter("description", positional, default=None, annotation=str | None))
    return inspect.Signature([*params, *extras], return_annotation=Credential)


def _docstring(ctype: CredentialType, sig: inspect.Signature) -> str:
    """A numpydoc docstring like datarobot's, built from the type and field declarations."""
    fields = {f.param: f for f in ctype.fields}
    lines = [f"Create a credential of type `{ctype.name}`. {ctype.doc}", "", "Parameters", "----------"]
    lines += ["name : str", "    The name to use for this set of credentials (unique per user)."]
    for param in list(sig.parameters.values())[2:]:
        if param.name == "description":
            lines += ["description : str, optional", "    The description to use for this set of credentials."]
            continue
        f = fields[param.name]
        kind = {"string": "str", "string_list": "list of str", "object": "dict or JSON str"}[f.kind]
        optional = "" if param.default is inspect.Parameter.empty else ", optional"
        note = " Secret: stored encrypted, never returned." if f.secret else ""
        lines += [f"{param.name} : {kind}{optional}", f"    {f.doc}{note} (wire key `{f.name}`)"]
    if len(ctype.requires) > 1:
        alternatives = " or ".join(" + ".join(alt) for alt in ctype.requires)
        lines += ["", f"Complete when it has {alternatives}."]
        if ctype.exclusive:
            lines += [f"`{ctype.exclusive}` cannot be combined with the other fields."]
    lines += ["", "Returns", "-------", "Credential", "    The created credential (without its secrets)."]
    return "\n".join(lines)


def _make_create(ctype: CredentialType) -> Callable[..., Credential]:
    """Build the `create_<type>` classmethod body for one declared type."""
    sig = _signature(ctype)

    def create(*args: Any, **kwargs: Any) -> Credential:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        cls = values.pop("cls")
        body: dict[str, Any] = {"name": values.pop("name"), "credentialType": ctype.name}
        description = values.pop("description")
        for f in ctype.fields:
            value = values.get(f.param)
            if value is not None:
                body[f.name] = _wire_value(f, value)
        if description is not None:
            body["description"] = description
        response = get_client().post(_PATH, json=body)
        return cls.from_server_data(response.json())

    create.__name__ = ctype.sdk_method
    create.__qualname__ = f"Credential.{ctype.sdk_method}"
    create.__module__ = __name__
    create.__doc__ = _docstring(ctype, sig)
    create.__signature__ = sig  # type: ignore[attr-defined]
    return create


for _ctype in TYPES.values():
    setattr(Credential, _ctype.sdk_method, classmethod(_make_create(_ctype)))
del _ctype
