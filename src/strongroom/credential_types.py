"""Credential types, declared once: each declaration drives validation, the OpenAPI schema, the SDK's
`create_*` methods and the split between public (queryable) and secret (encrypted) fields."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from strongroom.errors import InvalidInput

FieldKind = Literal["string", "string_list", "object"]

NAME_MAX = 255
DESCRIPTION_MAX = 4096
VALUE_MAX = 32768  # a 4096-bit RSA private key in PEM is about 3.3 KB; leave room for chains
LIST_MAX = 100
DEFAULT_TYPE = "basic"  # DataRobot documents `basic` as the default credentialType

# Character classes written once, in a syntax both Python's `re` and JSON Schema (ECMA-262, Unicode mode) read,
# so the published schema states exactly what validation enforces.
_CC = r"\u0000-\u001f\u007f-\u009f"  # C0, DEL and C1 (NEL, CSI…): Unicode category Cc
_CC_EXCEPT_LINE_BREAKS = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"  # tab, LF and CR allowed
# Invisible format characters (Unicode category Cf): soft hyphen, zero-width space, the bidi marks, embeddings,
# overrides and isolates (U+202E…), word joiners and the BOM; beyond the Basic Multilingual Plane, written as the
# characters themselves (ECMA-262 has no escape for them outside Unicode mode), Egyptian and shorthand format
# controls, musical formatting (U+1D173…) and the tag characters (U+E0001, U+E0020…U+E007F), which render as
# nothing after any text. Zero-width non-joiner and joiner (U+200C, U+200D) stay allowed: scripts such as Persian
# and emoji sequences need them. `tests/unit/test_validation.py` checks this against `unicodedata`.
_CF = (
    r"\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b\u200e-\u200f\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_CONTROL = re.compile(f"[{_CC}]")
_CONTROL_EXCEPT_WHITESPACE = re.compile(f"[{_CC_EXCEPT_LINE_BREAKS}]")
_FORMAT = re.compile(f"[{_CF}]")
_VISIBLE = re.compile(f"[^\\s{_CC}{_CF}\\u200c\\u200d]")  # something that is not blank, control or format
NO_CONTROL_PATTERN = f"^[^{_CC}]*$"
# No control or format characters, and at least one visible character.
NAME_PATTERN = f"^[^{_CC}{_CF}]*[^\\s{_CC}{_CF}\\u200c\\u200d][^{_CC}{_CF}]*$"
ERRORS_LISTED = 20  # an error lists at most this many fields, then says how many more
DESCRIPTION_PATTERN = f"^[^{_CC_EXCEPT_LINE_BREAKS}]*$"
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")


def has_control(value: str) -> bool:
    """Whether `value` holds a control character (Unicode Cc: C0, DEL, C1; PostgreSQL's text cannot hold NUL)."""
    return _CONTROL.search(value) is not None


def snake(name: str) -> str:
    """camelCase -> snake_case, as the DataRobot client converts keyword arguments the other way."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


@dataclass(frozen=True)
class Field:
    """One type-specific field, named as on the wire (camelCase)."""

    name: str
    secret: bool
    doc: str
    kind: FieldKind = "string"
    allow_empty: bool = False
    sdk_param: str | None = None  # where the DataRobot SDK's keyword differs from snake(name)

    @property
    def param(self) -> str:
        return self.sdk_param or snake(self.name)


@dataclass(frozen=True)
class CredentialType:
    """A credential type: its fields, which combinations are complete, and its SDK method."""

    name: str
    title: str  # for people: the schema's title in the API docs
    sdk_method: str
    doc: str
    fields: tuple[Field, ...]
    # Alternatives: a credential is complete when every field of at least one alternative is present.
    requires: tuple[tuple[str, ...], ...]
    # A reference field (configId) that stands for all the others: when set, no other field may be.
    exclusive: str | None = None
    # An inline `credentialData` object of this type, where its keys differ from the stored fields (DataRobot's
    # oauth data says oauthRefreshToken where a stored credential says refreshToken): its fields and alternatives.
    data_fields: tuple[Field, ...] | None = None
    data_requires: tuple[tuple[str, ...], ...] | None = None

    @cached_property
    def inline(self) -> CredentialType:
        """The type as an inline `credentialData` object is validated: its own keys where it declares them."""
        if self.data_fields is None:
            return self
        requires = self.data_requires or (tuple(f.name for f in self.data_fields),)
        return CredentialType(self.name, self.title, self.sdk_method, self.doc, self.data_fields, requires)

    @cached_property
    def _by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    def field(self, name: str) -> Field | None:
        return self._by_name.get(name)

    @property
    def always_required(self) -> tuple[str, ...]:
        """Fields present in every alternative: required in the SDK signature and the schema."""
        common = set(self.requires[0]).intersection(*map(set, self.requires[1:]))
        return tuple(f.name for f in self.fields if f.name in common)

    def split(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (public, secret) parts of already validated field values."""
        public = {k: v for k, v in values.items() if not self._field(k).secret}
        secret = {k: v for k, v in values.items() if self._field(k).secret}
        return public, secret

    def _field(self, name: str) -> Field:
        found = self.field(name)
        if found is None:
            raise KeyError(name)
        return found


def _s(name: str, doc: str, **kw: Any) -> Field:
    return Field(name=name, secret=True, doc=doc, **kw)


def _p(name: str, doc: str, **kw: Any) -> Field:
    return Field(name=name, secret=False, doc=doc, **kw)


_CONFIG_ID = _p("configId", "Id of a secure configuration that holds the secret fields instead.")
_CLIENT_ID = _s("clientId", "OAuth client id.")
_CLIENT_SECRET = _s("clientSecret", "OAuth client secret.")

TYPES: dict[str, CredentialType] = {
    t.name: t
    for t in (
        CredentialType(
            name="basic",
            title="Basic credential (user and password)",
            sdk_method="create_basic",
            doc="A user name and password, e.g. for a JDBC database.",
            fields=(
                _s("user", "User name."),
                _s("password", "Password (may be empty).", allow_empty=True),
                _p("snowflakeAccountName", "Snowflake account name, when the database is Snowflake."),
            ),
            requires=(("user", "password"),),
        ),
        CredentialType(
            name="oauth",
            title="OAuth credential",
            sdk_method="create_oauth",
            doc="An OAuth access token and its refresh token; with oauthProviderId, Strongroom refreshes it "
            "(POST credentials/{id}/accessToken/).",
            fields=(
                _s("token", "OAuth access token."),
                _s("refreshToken", "OAuth refresh token."),
                _p(
                    "oauthProviderId",
                    "Id of the OAuth provider (oauthProviders/) whose token endpoint refreshes this credential.",
                ),
            ),
            requires=(("token", "refreshToken"),),
            data_fields=(
                _s("oauthRefreshToken", "OAuth refresh token."),
                _s("oauthClientId", "OAuth client id (default: the provider's)."),
                _s("oauthClientSecret", "OAuth client secret (default: the provider's, with its own client id only)."),
                _s("oauthAccessToken", "OAuth access token (not used: a new one is obtained)."),
            ),
            data_requires=(("oauthRefreshToken",),),
        ),
        CredentialType(
            name="s3",
            title="Amazon S3 credential",
            sdk_method="create_s3",
            doc="AWS keys for S3: an access key id and secret (optionally a session token), or a configId.",
            fields=(
                _s("awsAccessKeyId", "AWS access key id."),
                _s("awsSecretAccessKey", "AWS secret access key."),
                _s("awsSessionToken", "AWS session token for temporary credentials."),
                _CONFIG_ID,
            ),
            requires=(("awsAccessKeyId", "awsSecretAccessKey"), ("configId",)),
            exclusive="configId",
        ),
        CredentialType(
            name="azure",
            title="Azure storage credential",
            sdk_method="create_azure",
            doc="An Azure storage connection string.",
            fields=(_s("azureConnectionString", "Azure storage connection string."),),
            requires=(("azureConnectionString",),),
        ),
        CredentialType(
            name="gcp",
            title="Google Cloud service account credential",
            sdk_method="create_gcp",
            doc="A Google Cloud service-account key (the JSON object; snake_case or camelCase keys).",
            fields=(_s("gcpKey", "Service-account key object.", kind="object"),),
            requires=(("gcpKey",),),
        ),
        CredentialType(
            name="snowflake_key_pair_user_account",
            title="Snowflake key pair credential",
            sdk_method="create_snowflake_key_pair",
            doc="A Snowflake user with a key pair (PEM private key, optional passphrase), or a configId.",
            fields=(
                _s("user", "Snowflake user name."),
                _s("privateKeyStr", "PEM private key.", sdk_param="private_key"),
                _s("passphrase", "Passphrase of the private key.", allow_empty=True),
                _CONFIG_ID,
            ),
            requires=(("user", "privateKeyStr"), ("configId",)),
            exclusive="configId",
        ),
        CredentialType(
            name="databricks_access_token_account",
            title="Databricks access token credential",
            sdk_method="create_databricks_access_token",
            doc="A Databricks personal access token.",
            fields=(_s("databricksAccessToken", "Databricks personal access token."),),
            requires=(("databricksAccessToken",),),
        ),
        CredentialType(
            name="databricks_service_principal_account",
            title="Databricks service principal credential",
            sdk_method="create_databricks_service_principal",
            doc="A Databricks service principal (client id and secret), or a configId.",
            fields=(_CLIENT_ID, _CLIENT_SECRET, _CONFIG_ID),
            requires=(("clientId", "clientSecret"), ("configId",)),
            exclusive="configId",
        ),
        CredentialType(
            name="azure_service_principal",
            title="Azure service principal credential",
            sdk_method="create_azure_service_principal",
            doc="An Azure service principal (client id, secret and tenant id), or a configId.",
            fields=(_CLIENT_ID, _CLIENT_SECRET, _p("azureTenantId", "Azure tenant id."), _CONFIG_ID),
            requires=(("clientId", "clientSecret", "azureTenantId"), ("configId",)),
            exclusive="configId",
        ),
        CredentialType(
            name="adls_gen2_oauth",
            title="Azure Data Lake Gen2 OAuth credential",
            sdk_method="create_adls_oauth",
            doc="Azure Data Lake Gen2 OAuth (client id, secret, optional scopes), or a configId.",
            fields=(
                _CLIENT_ID,
                _CLIENT_SECRET,
                _p("oauthScopes", "OAuth scopes.", kind="string_list"),
                _CONFIG_ID,
            ),
            requires=(("clientId", "clientSecret"), ("configId",)),
            exclusive="configId",
        ),
        CredentialType(
            name="external_oauth_provider",
            title="External OAuth provider credential",
            sdk_method="create_external_oauth_provider",
            doc="A reference to an authorization made with an external OAuth provider.",
            fields=(_p("authenticationId", "Id of the external OAuth authorization."),),
            requires=(("authenticationId",),),
        ),
        CredentialType(
            name="box_jwt",
            title="Box JWT credential",
            sdk_method="create_box_jwt",
            doc="A Box JWT application: client id and secret, enterprise id, public key id, private key.",
            fields=(
                _CLIENT_ID,
                _CLIENT_SECRET,
                _p("enterpriseId", "Box enterprise id."),
                _p("publicKeyId", "Id of the public key registered with Box."),
                _s("privateKeyStr", "PKCS#8 PEM private key."),
                _s("passphrase", "Passphrase of the private key.", allow_empty=True),
            ),
            requires=(("clientId", "clientSecret", "enterpriseId", "publicKeyId", "privateKeyStr", "passphrase"),),
        ),
        CredentialType(
            name="api_token",
            title="API token credential",
            sdk_method="create_api_token",
            doc="A bare API token (as the DataRobot Terraform provider creates).",
            fields=(_s("apiToken", "The API token."),),
            requires=(("apiToken",),),
        ),
    )
}


def get_type(name: Any, field: str = "credentialType") -> CredentialType:
    """Look a type up by its wire name, or fail naming the valid ones (and the field or parameter at fault)."""
    if not isinstance(name, str) or name not in TYPES:
        printable = isinstance(name, str) and len(name) <= 64 and not _CONTROL.search(name)
        shown = f"unknown type {name!r}" if printable else "unknown type"
        if not isinstance(name, str):
            shown = "must be a string naming a type"
        raise InvalidInput(f"{field}: {shown}; expected one of {', '.join(TYPES)}", {field: "unknown credential type"})
    return TYPES[name]


def parse_credential_data(data: Any, field: str = "credentialData") -> tuple[CredentialType, dict[str, Any]]:
    """An inline `credentialData` object (used once, never stored): its type and fields, validated as the type
    declares them (`CredentialType.inline`), with the same per-field messages as a stored credential."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{field}: must be an object", {field: "must be an object"})
    rest = dict(data)
    ctype = get_type(rest.pop("credentialType", None), field=f"{field}.credentialType").inline
    values = parse_fields(ctype, rest)
    check_complete(ctype, values)
    return ctype, values


def credential_data_schema(ctype: CredentialType) -> dict[str, Any]:
    """JSON Schema of an inline `credentialData` object of one type."""
    inline = ctype.inline
    props: dict[str, Any] = {"credentialType": {"type": "string", "enum": [ctype.name]}}
    props.update({f.name: _field_schema(f) for f in inline.fields})
    required = ["credentialType", *inline.always_required]
    return {
        "title": f"{ctype.title}, inline",
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def check_name(value: Any, field: str = "name") -> str:
    """A name is a single-line string of at most NAME_MAX characters with a visible one, free of control and
    format (bidi, zero-width, BOM) characters; returned in Unicode NFC, so look-alike spellings are one name.
    `field` is the key the errors name (a data store's `canonicalName` follows the same rules)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be a string", {field: "must be a string"})
    if len(value) > 4 * NAME_MAX:  # before normalising: never spend work on a name that cannot fit
        raise InvalidInput(f"{field}: at most {NAME_MAX} characters", {field: f"at most {NAME_MAX} characters"})
    value = unicodedata.normalize("NFC", value)
    if not value.strip():
        raise InvalidInput(f"{field}: must not be empty", {field: "must not be empty"})
    if len(value) > NAME_MAX:
        raise InvalidInput(f"{field}: at most {NAME_MAX} characters", {field: f"at most {NAME_MAX} characters"})
    if _CONTROL.search(value):
        raise InvalidInput(f"{field}: must not contain control characters", {field: "contains control characters"})
    if _FORMAT.search(value):
        msg = "must not contain invisible format characters (bidi controls, zero-width spaces, BOM)"
        raise InvalidInput(f"{field}: {msg}", {field: msg})
    if not _VISIBLE.search(value):
        raise InvalidInput(f"{field}: must contain a visible character", {field: "must contain a visible character"})
    return value


def shown_key(key: str) -> str:
    """A client's key as an error may name it: itself when short and free of control characters."""
    return key if len(key) <= 64 and not _CONTROL.search(key) else "(unprintable)"


def reject_unknown(data: Mapping[str, Any], known: Collection[str], what: str, prefix: str = "") -> None:
    """422 naming the keys of `data` that are not `known` (each as `prefix` + key, the first in the message)."""
    errors = {f"{prefix}{shown_key(key)}": f"unknown field for {what}" for key in data if key not in known}
    if errors:
        raise InvalidInput(_summary(errors), capped(errors))


def check_description(value: Any) -> str:
    """A description is free text (line breaks allowed) of at most DESCRIPTION_MAX characters."""
    if not isinstance(value, str):
        raise InvalidInput("description: must be a string", {"description": "must be a string"})
    if len(value) > DESCRIPTION_MAX:
        msg = f"at most {DESCRIPTION_MAX} characters"
        raise InvalidInput(f"description: {msg}", {"description": msg})
    if _CONTROL_EXCEPT_WHITESPACE.search(value):
        msg = "must not contain control characters"
        raise InvalidInput(f"description: {msg}", {"description": msg})
    return value


def _gcp_key(value: Any) -> dict[str, str]:
    """Normalise a service-account key: accept a JSON string, camelCase or snake_case keys; store snake_case."""
    if isinstance(value, str):
        import orjson  # the server's (validation runs there); the SDK and CLI install without it

        try:  # orjson, not json: it stops at 1024 levels where json.loads raises RecursionError (a 500)
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError("must be a JSON object (or a string holding one)") from None
    if not isinstance(value, dict) or not value:
        raise ValueError("must be a non-empty JSON object")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str) or len(item) > VALUE_MAX or len(key) > 128:
            raise ValueError("every key must map to a string of reasonable length")
        if snake(key) in out:  # e.g. clientEmail and client_email: one value would silently replace the other
            raise ValueError(f"has two keys for {snake(key)!r} (camelCase and snake_case spellings)")
        out[snake(key)] = item
    return out


def _check_value(f: Field, value: Any) -> Any:
    """Validate one field value; the message never contains the value, which may be secret."""
    if f.kind == "object":
        return _gcp_key(value)
    if f.kind == "string_list":
        if not isinstance(value, list) or len(value) > LIST_MAX:
            raise ValueError(f"must be a list of at most {LIST_MAX} strings")
        if not all(isinstance(v, str) and v and len(v) <= NAME_MAX for v in value):
            raise ValueError(f"every item must be a non-empty string of at most {NAME_MAX} characters")
        if any(_CONTROL.search(v) for v in value):
            raise ValueError("items must not contain control characters")
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not f.secret and _CONTROL.search(value):  # public values are echoed back; secrets may hold anything
        raise ValueError("must not contain control characters")
    if not value and not f.allow_empty:
        raise ValueError("must not be empty")
    if len(value) > VALUE_MAX:
        raise ValueError(f"at most {VALUE_MAX} characters")
    return value


def parse_fields(ctype: CredentialType, data: Mapping[str, Any], *, allow_null: bool = False) -> dict[str, Any]:
    """Validate the type-specific fields in `data` (common keys already removed).

    With allow_null (PATCH), a null value means "clear this field" and is returned as None.
    """
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, value in data.items():
        f = ctype.field(key)
        if f is None:
            errors[shown_key(key)] = f"unknown field for credential type {ctype.name!r}"
            continue
        if value is None:
            if allow_null:
                values[key] = None
            else:
                errors[key] = "must not be null"
            continue
        try:
            values[key] = _check_value(f, value)
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise InvalidInput(_summary(errors), capped(errors))
    return values


def check_complete(ctype: CredentialType, values: Mapping[str, Any]) -> None:
    """Enforce the alternatives (which fields make the credential usable) and the exclusive reference."""
    present = {k for k, v in values.items() if v is not None}
    if ctype.exclusive and ctype.exclusive in present and len(present) > 1:
        others = sorted(present - {ctype.exclusive})
        msg = f"cannot be combined with {', '.join(others)}"
        raise InvalidInput(f"{ctype.exclusive}: {msg}", {ctype.exclusive: msg})
    if any(set(alt) <= present for alt in ctype.requires):
        return
    # Name the missing fields of the alternative the caller seems to be using (else the first one).
    started = [alt for alt in ctype.requires if set(alt) & present]
    closest = started[0] if started else ctype.requires[0]
    reason = "is required"
    if len(ctype.requires) > 1:
        choices = " or ".join("+".join(alt) for alt in ctype.requires)
        reason = f"is required (credential type {ctype.name!r} needs {choices})"
    errors = {name: reason for name in closest if name not in present}
    raise InvalidInput(_summary(errors), errors)


def _summary(errors: Mapping[str, str]) -> str:
    """One line naming at most ERRORS_LISTED fields, then how many more."""
    listed = "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:ERRORS_LISTED])
    more = len(errors) - ERRORS_LISTED
    return f"{listed}; and {more} more" if more > 0 else listed


def capped(errors: dict[str, str]) -> dict[str, str]:
    """At most ERRORS_LISTED field errors, plus one `…` entry saying how many were left out."""
    if len(errors) <= ERRORS_LISTED:
        return errors
    kept = dict(list(errors.items())[:ERRORS_LISTED])
    kept["…"] = f"and {len(errors) - ERRORS_LISTED} more"
    return kept


# ---- OpenAPI / JSON Schema, generated from the declarations ------------------------------------------


def _field_schema(f: Field) -> dict[str, Any]:
    if f.kind == "object":
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": VALUE_MAX},
            "propertyNames": {"maxLength": 128},
            "minProperties": 1,
        }
    elif f.kind == "string_list":
        item = {"type": "string", "minLength": 1, "maxLength": NAME_MAX, "pattern": NO_CONTROL_PATTERN}
        schema = {"type": "array", "items": item, "maxItems": LIST_MAX}
    else:
        schema = {"type": "string", "maxLength": VALUE_MAX, "minLength": 0 if f.allow_empty else 1}
        if not f.secret:
            schema["pattern"] = NO_CONTROL_PATTERN
    schema["description"] = f.doc + (" Secret: encrypted, never returned." if f.secret else "")
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI 3.1 spelling of "or null" (3.0's `nullable` is ignored by 3.1 tools)."""
    return {**schema, "type": [schema["type"], "null"]}


_NAME = {"type": "string", "minLength": 1, "maxLength": NAME_MAX, "pattern": NAME_PATTERN}
_DESCRIPTION = _nullable({"type": "string", "maxLength": DESCRIPTION_MAX, "pattern": DESCRIPTION_PATTERN})


def _alternatives(ctype: CredentialType) -> list[dict[str, Any]]:
    """`requires` as JSON Schema; the exclusive reference (configId) stands alone or not at all."""
    ref = ctype.exclusive
    titled = [{"title": "with " + " and ".join(alt), "type": "object", "required": list(alt)} for alt in ctype.requires]
    if ref is None:
        return titled
    others = [f.name for f in ctype.fields if f.name != ref]
    alone = {"title": f"no other field with {ref}", "type": "object"}
    for schema, alt in zip(titled, ctype.requires, strict=True):
        if ref in alt:
            schema["not"] = {**alone, "anyOf": [{"type": "object", "required": [o]} for o in others]}
        else:
            schema["not"] = {"title": f"without {ref}", "type": "object", "required": [ref]}
    return titled


def create_schema(ctype: CredentialType) -> dict[str, Any]:
    """JSON Schema of a POST body for one type."""
    props: dict[str, Any] = {
        "name": _NAME,
        "description": _DESCRIPTION,
        "credentialType": {"type": "string", "enum": [ctype.name]},
    }
    required = ["name", "credentialType", *ctype.always_required]
    if ctype.name == DEFAULT_TYPE:  # as in DataRobot, a body without credentialType is a basic credential
        props["credentialType"]["default"] = DEFAULT_TYPE
        required.remove("credentialType")
    props.update({f.name: _field_schema(f) for f in ctype.fields})
    schema: dict[str, Any] = {
        "title": ctype.title,
        "description": ctype.doc,
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }
    if len(ctype.requires) > 1 or ctype.exclusive:
        schema["anyOf"] = _alternatives(ctype)
    return schema


def update_schema() -> dict[str, Any]:
    """JSON Schema of a PATCH body: name, description and any field of the credential's own type.

    Which fields apply depends on the stored credential's type, so the union of all is listed; a field of
    another type is a 422. `null` clears an optional field.
    """
    props: dict[str, Any] = {
        "name": _NAME,
        "description": _DESCRIPTION,
        "credentialType": {"type": "string", "enum": list(TYPES), "description": "Must be the current type."},
    }
    for ctype in TYPES.values():
        for f in ctype.fields:
            props.setdefault(f.name, _nullable(_field_schema(f)))
    return {"title": "Credential update", "type": "object", "properties": props, "minProperties": 1}


def credential_schema() -> dict[str, Any]:
    """JSON Schema of a credential as returned: the DataRobot keys plus any public fields."""
    props: dict[str, Any] = {
        "credentialId": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
        "name": {"type": "string"},
        "credentialType": {"type": "string", "enum": list(TYPES)},
        "description": {"type": "string"},
        "creationDate": {"type": "string", "format": "date-time"},
        "role": {
            "type": "string",
            "enum": ["OWNER", "EDITOR", "CONSUMER"],
            "description": "The caller's role on the credential (a Strongroom field; DataRobot clients ignore it)",
        },
    }
    for ctype in TYPES.values():
        for f in ctype.fields:
            if not f.secret:
                props.setdefault(f.name, _field_schema(f))
    return {
        "title": "Credential",
        "type": "object",
        "properties": props,
        "required": ["credentialId", "name", "credentialType", "description", "creationDate", "role"],
    }
