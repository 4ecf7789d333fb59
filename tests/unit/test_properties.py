"""Hypothesis properties of validation: any JSON in gives a result or a 4xx error naming a field, never a crash.

A validator that raises anything but the project's own errors becomes a 500 on the wire. The first group
drives the validators in `strongroom.credential_types` directly (cheap, so many examples); the second runs whole
create and update bodies through the real service on a real SQLite store, as the server would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from strongroom import credential_types, representation
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import InvalidInput, StrongroomError
from strongroom.services.accounts import Principal
from tests.support import fetch_credential, make_credential

FIELD_NAMES = sorted({f.name for t in credential_types.TYPES.values() for f in t.fields})
SECRET_FIELDS = {f.name for t in credential_types.TYPES.values() for f in t.fields if f.secret}
CANARY = "SEKRET"  # every generated secret string starts with it, so a leak is recognisable

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
)
# Plausible values for declared fields: mostly strings (some secret-looking, some empty or with controls).
field_values = (
    st.text(max_size=40).map(lambda s: CANARY + s)
    | st.sampled_from(["", " ", "\x00", "\n", "a\x85b", "x" * (credential_types.VALUE_MAX + 1)])
    | st.lists(st.text(max_size=10), max_size=3)
    | st.dictionaries(st.text(max_size=12), st.text(max_size=12) | json_values, max_size=3)
    | json_values
)
type_names = st.sampled_from(list(credential_types.TYPES)) | json_values
declared_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=300) | json_values,
        "description": st.text(max_size=50) | json_values,
        "credentialType": type_names,
    },
).flatmap(
    lambda common: st.dictionaries(st.sampled_from(FIELD_NAMES), field_values, max_size=6).map(
        lambda fields: {**fields, **common}
    )
)
bodies = declared_bodies | st.dictionaries(st.text(max_size=20), json_values, max_size=5)
FAST = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def assert_names_its_fields(exc: StrongroomError, body: Any) -> None:
    """A client error: a 4xx, a message, each field it lists named in the message, no secret value quoted."""
    assert 400 <= exc.status_code < 500, exc
    assert exc.message
    for field in exc.errors:  # "body" is the whole request: DataRobot's empty-PATCH message does not say "body"
        assert field in exc.message or field == "body", (field, exc.message)
    if isinstance(body, dict):
        for key, value in body.items():
            if key in SECRET_FIELDS and isinstance(value, str) and value.startswith(CANARY):
                assert value not in exc.message and value not in str(exc.errors), "a secret value was quoted"


def validate_create(body: dict[str, Any]) -> None:
    """The validation half of Strongroom.create_credential, step by step."""
    data = dict(body)
    credential_types.check_name(data.pop("name", "n"))
    if data.get("description") is not None:
        credential_types.check_description(data.pop("description"))
    data.pop("description", None)
    ctype = credential_types.get_type(data.pop("credentialType", credential_types.DEFAULT_TYPE))
    credential_types.check_complete(ctype, credential_types.parse_fields(ctype, data))


@FAST
@given(value=json_values)
def test_name_and_description_checks_take_any_json(value: Any) -> None:
    for check, field in ((credential_types.check_name, "name"), (credential_types.check_description, "description")):
        try:
            assert check(value) == value
        except InvalidInput as exc:
            assert_names_its_fields(exc, value)
            assert set(exc.errors) == {field}


@FAST
@given(value=type_names)
def test_get_type_takes_any_json(value: Any) -> None:
    try:
        assert credential_types.get_type(value).name == value
    except InvalidInput as exc:
        assert_names_its_fields(exc, value)
        assert set(exc.errors) == {"credentialType"}


@FAST
@given(type_name=st.sampled_from(list(credential_types.TYPES)), data=bodies, allow_null=st.booleans())
def test_parse_fields_takes_any_object(type_name: str, data: dict[str, Any], allow_null: bool) -> None:
    """Unknown keys, wrong types, nulls, huge or control-laden values: a valid dict or InvalidInput."""
    ctype = credential_types.TYPES[type_name]
    try:
        values = credential_types.parse_fields(ctype, data, allow_null=allow_null)
    except InvalidInput as exc:
        assert_names_its_fields(exc, data)
        assert exc.errors
        return
    assert set(values) == set(data)
    try:
        credential_types.check_complete(ctype, values)
    except InvalidInput as exc:
        assert_names_its_fields(exc, data)
        assert exc.errors


@FAST
@given(body=bodies)
def test_create_validation_takes_any_object(body: dict[str, Any]) -> None:
    try:
        validate_create(body)
    except InvalidInput as exc:
        assert_names_its_fields(exc, body)


def test_gcp_key_string_nested_deeply_is_invalid_not_a_crash() -> None:
    """json.loads raised RecursionError (a 500) for a gcpKey string of many `[`; it must be a named 422."""
    gcp = credential_types.TYPES["gcp"]
    for text in ("[" * 100_000, '{"a":' * 50_000):
        with pytest.raises(InvalidInput) as info:
            credential_types.parse_fields(gcp, {"gcpKey": text})
        assert set(info.value.errors) == {"gcpKey"}


# ---- the whole use case, on a real store --------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, Principal, str]]:
    """A real SQLite-backed service, a user, and one stored credential of each kind to patch."""
    data_dir: Path = tmp_path_factory.mktemp("props")
    service = Services.open(Settings(data_dir=data_dir))
    try:
        service.accounts.create_user("props")
        who = service.accounts.authenticate(service.accounts.create_token("props")[1])
        cred = make_credential(service, who, {"name": "target", "user": "u", "password": "p"})
        yield service, who, cred["credentialId"]
    finally:
        service.close()


STORE = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@STORE
@given(body=bodies)
def test_service_create_takes_any_object(store: tuple[Services, Principal, str], body: dict[str, Any]) -> None:
    """Either stored (and readable back with only public fields) or a client error naming the field."""
    service, who, _ = store
    try:
        made = make_credential(service, who, body)
    except StrongroomError as exc:
        assert_names_its_fields(exc, body)
        return
    assert fetch_credential(service, who, made["credentialId"]) == made
    assert not SECRET_FIELDS & (
        set(made) - {f.name for t in credential_types.TYPES.values() for f in t.fields if not f.secret}
    )


@STORE
@given(body=bodies)
def test_service_update_takes_any_object(store: tuple[Services, Principal, str], body: dict[str, Any]) -> None:
    """A PATCH of any object: applied whole (and the result is what GET returns) or rejected whole."""
    service, who, credential_id = store
    before = fetch_credential(service, who, credential_id)
    try:
        updated = orjson.loads(service.credentials.update(who, credential_id, body)[0])
    except StrongroomError as exc:
        assert_names_its_fields(exc, body)
        assert fetch_credential(service, who, credential_id) == before, "a rejected PATCH changed the credential"
        return
    assert fetch_credential(service, who, credential_id) == updated


stored_values = st.recursive(  # what JSON can hold: no infinity (orjson writes it as null)
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
)


@given(stored_values)
@example(-(2**63) - 1)  # orjson reads it as a float, not refusing it: found by this test
@example([2**64, "12345678901234567890"])
def test_stored_json_reads_back_as_written(value: Any) -> None:
    """`parse_json` reads back whatever `compact_json` stores, integers beyond orjson's 64 bits included."""
    stored = representation.compact_json(value)
    assert representation.parse_json(stored) == value
    assert representation.parse_json(stored.encode()) == value


def test_a_principal_in_another_request_keeps_everything_but_where_it_came_from() -> None:
    """`Principal.at` spells out every field: one added later must be carried too."""
    every = {f.name: f"value-{f.name}" for f in dataclasses.fields(Principal)}
    moved = Principal(**every).at("10.0.0.9", "rid-2")  # type: ignore[arg-type]
    assert dataclasses.asdict(moved) == {**every, "address": "10.0.0.9", "request_id": "rid-2"}
