"""Validation of create and update bodies through the credential service, every case of the API's tables.

Each case calls the service in-process (`calls`, see `tests.support.InProcess`) and checks the answer the API
would send: status, JSON error naming the field, nothing echoed, nothing stored. The HTTP route in front of it is
proven once per kind of answer in `tests/e2e/test_api_create.py` and `tests/e2e/test_api_updates.py`.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any

import pytest

from strongroom import credential_types
from strongroom.errors import InvalidInput
from tests.support import (
    EXCLUSIVE_TYPES,
    InProcess,
    LeakGuard,
    assert_error,
    complete_body,
    field_value,
    unique,
)

BAD_NAMES = {
    "empty": "",
    "blank": "   ",
    "blank tab": "\t",
    "256 chars": "x" * (credential_types.NAME_MAX + 1),
    "10000 chars": "y" * 10_000,
    "newline": "a\nb",
    "carriage return": "a\rb",
    "escape": "a\x1b[31mb",
    "NUL": "a\x00b",
    "DEL": "a\x7fb",
    "number": 5,
    "null": None,
    "list": ["a"],
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_name_is_422(calls: InProcess, name: Any) -> None:
    """Names are non-blank single-line strings of at most 255 characters; the message names `name` but never
    echoes the value (a 10 000-character name must not come back)."""
    resp = calls.create({"name": name, "user": "u", "password": "p"})
    body = assert_error(resp, 422, "name")
    assert len(resp.content) < 1000, "the error echoes the input"
    assert calls.total() == 0
    assert "\x00" not in body["message"]


@pytest.mark.parametrize("name", ["a\x85b", "a\x9b31mb"], ids=["NEL", "CSI"])
def test_c1_control_characters_in_name_are_422(calls: InProcess, name: str) -> None:
    """C1 controls are control characters too (Unicode Cc): NEL splits the "single-line" name and CSI can
    drive a terminal that prints it (the CLI lists names)."""
    assert_error(calls.create({"name": name, "user": "u", "password": "p"}), 422, "name")


def test_every_format_character_but_the_joiners_is_refused_in_names() -> None:
    """Every Unicode format character (category Cf) this Python knows, beyond the Basic Multilingual Plane too
    (the tag characters after "pgcred" look like "pgcred" alone), is refused by the rule and by the published
    pattern alike; the zero-width non-joiner and joiner stay allowed."""
    pattern = re.compile(credential_types.NAME_PATTERN)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) != "Cf":
            continue
        name = f"pgcred{char}"
        if char in "\u200c\u200d":
            assert credential_types.check_name(name) == name and pattern.search(name)
            continue
        with pytest.raises(InvalidInput):
            credential_types.check_name(name)
        assert not pattern.search(name), f"U+{code:04X} passes the published pattern"


def test_missing_name_is_422(calls: InProcess) -> None:
    assert_error(calls.create({"user": "u", "password": "p"}), 422, "name")


@pytest.mark.parametrize("bad_type", ["nope", "BASIC", "", 5, ["basic"], "x" * 200, "bad\x00type"])
def test_unknown_credential_type_lists_valid_types(calls: InProcess, bad_type: Any) -> None:
    """The message must tell the caller what would have worked: every declared type."""
    body = assert_error(
        calls.create({"name": unique(), "credentialType": bad_type, "user": "u", "password": "p"}),
        422,
        "credentialType",
    )
    for name in credential_types.TYPES:
        assert name in body["message"]
    assert "\x00" not in body["message"] and "x" * 200 not in body["message"]


MISSING_REQUIRED = [(t.name, field) for t in credential_types.TYPES.values() for field in t.requires[0]]


@pytest.mark.parametrize(("type_name", "missing"), MISSING_REQUIRED, ids=[f"{t}-{f}" for t, f in MISSING_REQUIRED])
def test_missing_required_field_is_422(calls: InProcess, guard: LeakGuard, type_name: str, missing: str) -> None:
    """Dropping any field of the (first) complete combination makes the body incomplete: 422 naming it."""
    body = complete_body(credential_types.TYPES[type_name], guard)
    del body[missing]
    assert_error(calls.create(body), 422, missing)


EMPTY_NOT_ALLOWED = [
    (t.name, f.name)
    for t in credential_types.TYPES.values()
    for f in t.fields
    if f.kind == "string" and not f.allow_empty
]


@pytest.mark.parametrize(("type_name", "field"), EMPTY_NOT_ALLOWED, ids=[f"{t}-{f}" for t, f in EMPTY_NOT_ALLOWED])
def test_empty_string_is_422_unless_declared(calls: InProcess, guard: LeakGuard, type_name: str, field: str) -> None:
    ctype = credential_types.TYPES[type_name]
    body = {"name": unique(), "credentialType": type_name, field: ""}
    if field != ctype.exclusive:
        body = complete_body(ctype, guard, **{field: ""})
    assert_error(calls.create(body), 422, field)


BAD_FIELDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "unknown extra field": ("basic", {"user": "u", "password": "p", "nonsense": "x"}, "nonsense"),
    "field of another type": ("basic", {"user": "u", "password": "p", "awsAccessKeyId": "A"}, "awsAccessKeyId"),
    "number for password": ("basic", {"user": "u", "password": 12345}, "password"),
    "object for password": ("basic", {"user": "u", "password": {"v": "p"}}, "password"),
    "null for password": ("basic", {"user": "u", "password": None}, "password"),
    "bool for user": ("basic", {"user": True, "password": "p"}, "user"),
    "string for oauthScopes": (
        "adls_gen2_oauth",
        {"clientId": "c", "clientSecret": "s", "oauthScopes": "scope.read"},
        "oauthScopes",
    ),
    "numbers in oauthScopes": (
        "adls_gen2_oauth",
        {"clientId": "c", "clientSecret": "s", "oauthScopes": [1, 2]},
        "oauthScopes",
    ),
    "101 oauthScopes": (
        "adls_gen2_oauth",
        {"clientId": "c", "clientSecret": "s", "oauthScopes": ["s"] * (credential_types.LIST_MAX + 1)},
        "oauthScopes",
    ),
    "list for gcpKey": ("gcp", {"gcpKey": ["type", "service_account"]}, "gcpKey"),
    "empty gcpKey": ("gcp", {"gcpKey": {}}, "gcpKey"),
    "nested gcpKey": ("gcp", {"gcpKey": {"type": {"nested": "x"}}}, "gcpKey"),
    "gcpKey string not JSON": ("gcp", {"gcpKey": "{not json"}, "gcpKey"),
    "s3 with only awsAccessKeyId": ("s3", {"awsAccessKeyId": "AKIA"}, "awsSecretAccessKey"),
    "s3 with nothing": ("s3", {}, "awsAccessKeyId"),
    "value over 32768 chars": ("basic", {"user": "u" * (credential_types.VALUE_MAX + 1), "password": "p"}, "user"),
    "description not a string": ("basic", {"user": "u", "password": "p", "description": 5}, "description"),
    "description too long": (
        "basic",
        {"user": "u", "password": "p", "description": "d" * (credential_types.DESCRIPTION_MAX + 1)},
        "description",
    ),
    "description with NUL": ("basic", {"user": "u", "password": "p", "description": "a\x00b"}, "description"),
}


@pytest.mark.parametrize(("type_name", "fields", "field"), BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_bad_field_is_422(calls: InProcess, type_name: str, fields: dict[str, Any], field: str) -> None:
    resp = calls.create({"name": unique(), "credentialType": type_name, **fields})
    assert_error(resp, 422, field)
    assert len(resp.content) < 2000, "the error echoes the input"


def test_rejected_secret_values_are_not_echoed(calls: InProcess, guard: LeakGuard) -> None:
    """A value rejected for its type or length may still be a real secret: never repeat it in the error."""
    bad = [
        {"user": "u", "password": [guard.secret()]},
        {"user": "u", "password": guard.secret() + "x" * credential_types.VALUE_MAX},
        {"credentialType": "gcp", "gcpKey": "{" + guard.secret()},
        {"credentialType": "gcp", "gcpKey": {"private_key": [guard.secret()]}},
    ]
    for fields in bad:
        assert_error(calls.create({"name": unique(), **fields}), 422)


@pytest.mark.parametrize("type_name", EXCLUSIVE_TYPES)
def test_config_id_with_keys_is_422(calls: InProcess, guard: LeakGuard, type_name: str) -> None:
    """`configId` stands for the secret fields and cannot be combined with them (client docstrings)."""
    ctype = credential_types.TYPES[type_name]
    assert_error(calls.create(complete_body(ctype, guard, configId="cfg")), 422, "configId")
    for f in ctype.fields:  # each other field alone is enough to conflict
        if f.name != "configId":
            body = {"name": unique(), "credentialType": type_name, "configId": "cfg", f.name: field_value(f, guard)}
            assert_error(calls.create(body), 422, "configId")


BAD_PATCHES: dict[str, tuple[dict[str, Any], str]] = {
    "field of another type": ({"awsAccessKeyId": "A"}, "awsAccessKeyId"),
    "unknown field": ({"nonsense": "x"}, "nonsense"),
    "change credentialType": ({"credentialType": "s3"}, "credentialType"),
    "null required user": ({"user": None}, "user"),
    "null required password": ({"password": None}, "password"),
    "null name": ({"name": None}, "name"),
    "empty name": ({"name": ""}, "name"),
    "256-char name": ({"name": "n" * (credential_types.NAME_MAX + 1)}, "name"),
    "NUL in name": ({"name": "a\x00b"}, "name"),
    "number for password": ({"password": 1}, "password"),
    "description not a string": ({"description": ["x"]}, "description"),
}


@pytest.mark.parametrize(("body", "field"), BAD_PATCHES.values(), ids=BAD_PATCHES.keys())
def test_bad_patch_is_422_and_changes_nothing(calls: InProcess, body: dict[str, Any], field: str) -> None:
    cred = calls.basic(description="unchanged", snowflakeAccountName="acct")
    assert_error(calls.update(cred["credentialId"], body), 422, field)
    assert calls.get(cred["credentialId"]).json() == cred


@pytest.mark.parametrize("type_name", ["adls_gen2_oauth", "gcp"])
def test_patch_wrong_value_type_is_422(calls: InProcess, guard: LeakGuard, type_name: str) -> None:
    cred = calls.created(complete_body(credential_types.TYPES[type_name], guard))
    field, value = ("oauthScopes", "not-a-list") if type_name == "adls_gen2_oauth" else ("gcpKey", ["x"])
    assert_error(calls.update(cred["credentialId"], {field: value}), 422, field)


def test_description_round_trip(calls: InProcess) -> None:
    """Given descriptions come back verbatim (line breaks and tabs allowed); absent ones are "" (spec §2)."""
    text = "line one\nline two\ttabbed — ünïcode"
    assert calls.basic(description=text)["description"] == text
    assert calls.basic()["description"] == ""
    assert calls.basic(description=None)["description"] == ""


def test_empty_password_allowed(calls: InProcess) -> None:
    """Fields declared allow_empty (passwords, passphrases) accept ""; others do not (see the 422 table)."""
    for ctype in credential_types.TYPES.values():
        for f in ctype.fields:
            if f.allow_empty:
                body = complete_body(ctype, LeakGuard(), **{f.name: ""})
                assert calls.create(body).status_code == 201, (ctype.name, f.name)
