"""The type declarations: validation rules and the schemas generated from them."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom import credential_types
from strongroom.errors import InvalidInput


def invalid(ctype: str, data: dict[str, Any]) -> InvalidInput:
    t = credential_types.get_type(ctype)
    with pytest.raises(InvalidInput) as info:
        credential_types.check_complete(t, credential_types.parse_fields(t, data))
    return info.value


def test_every_type_has_a_secret_and_a_complete_alternative() -> None:
    assert len(credential_types.TYPES) == 13
    for t in credential_types.TYPES.values():
        names = {f.name for f in t.fields}
        assert all(set(alt) <= names for alt in t.requires), t.name
        assert t.exclusive is None or t.exclusive in names
        assert t.sdk_method.startswith("create_")


def test_secret_public_split() -> None:
    s3 = credential_types.TYPES["s3"]
    public, secret = s3.split({"configId": "cfg"})
    assert public == {"configId": "cfg"} and secret == {}
    public, secret = s3.split({"awsAccessKeyId": "a", "awsSecretAccessKey": "b"})
    assert public == {} and secret == {"awsAccessKeyId": "a", "awsSecretAccessKey": "b"}


@pytest.mark.parametrize(
    ("ctype", "data", "field"),
    [
        ("basic", {"user": "u"}, "password"),
        ("basic", {"user": "u", "password": 5}, "password"),
        ("basic", {"user": "", "password": "p"}, "user"),
        ("basic", {"user": "u", "password": "p", "extra": 1}, "extra"),
        ("s3", {"awsAccessKeyId": "a"}, "awsSecretAccessKey"),
        ("s3", {"configId": "c", "awsAccessKeyId": "a"}, "configId"),
        ("s3", {}, "awsAccessKeyId"),
        ("adls_gen2_oauth", {"clientId": "i", "clientSecret": "s", "oauthScopes": "x"}, "oauthScopes"),
        ("adls_gen2_oauth", {"clientId": "i", "clientSecret": "s", "oauthScopes": [""]}, "oauthScopes"),
        ("gcp", {"gcpKey": []}, "gcpKey"),
        ("gcp", {"gcpKey": "not json"}, "gcpKey"),
        ("gcp", {"gcpKey": {}}, "gcpKey"),
        ("box_jwt", {"clientId": "i"}, "clientSecret"),
        ("oauth", {"token": "t", "refreshToken": None}, "refreshToken"),
    ],
)
def test_invalid_fields_are_named(ctype: str, data: dict[str, Any], field: str) -> None:
    err = invalid(ctype, data)
    assert field in err.errors
    assert field in err.message


def test_messages_never_contain_values() -> None:
    err = invalid("basic", {"user": "u", "password": ["hunter2-secret"]})
    assert "hunter2" not in err.message and "hunter2" not in str(err.errors)


def test_empty_password_allowed_but_not_empty_user() -> None:
    t = credential_types.TYPES["basic"]
    credential_types.check_complete(t, credential_types.parse_fields(t, {"user": "u", "password": ""}))


def test_gcp_key_normalised_to_snake_case() -> None:
    t = credential_types.TYPES["gcp"]
    camel = {"gcpKey": {"clientEmail": "e", "privateKeyId": "k", "authProviderX509CertUrl": "u"}}
    assert credential_types.parse_fields(t, camel)["gcpKey"] == {
        "client_email": "e",
        "private_key_id": "k",
        "auth_provider_x509_cert_url": "u",
    }
    assert credential_types.parse_fields(t, {"gcpKey": '{"type": "service_account"}'})["gcpKey"] == {
        "type": "service_account"
    }


def test_alternative_being_used_is_the_one_reported() -> None:
    err = invalid("azure_service_principal", {"clientId": "i"})
    assert set(err.errors) == {"clientSecret", "azureTenantId"}


@pytest.mark.parametrize("name", ["", "   ", "a" * 256, "tab\there", "nul\x00", 7])
def test_bad_names(name: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        credential_types.check_name(name)
    assert "name" in info.value.errors


def test_unknown_type_lists_valid_ones() -> None:
    with pytest.raises(InvalidInput) as info:
        credential_types.get_type("ftp")
    assert "'ftp'" in info.value.message and "basic" in info.value.message and "box_jwt" in info.value.message


def test_schemas_follow_declarations() -> None:
    for t in credential_types.TYPES.values():
        schema = credential_types.create_schema(t)
        assert set(schema["properties"]) == {"name", "description", "credentialType", *(f.name for f in t.fields)}
        assert set(t.always_required) <= set(schema["required"])
        assert schema["additionalProperties"] is False
    returned = set(credential_types.credential_schema()["properties"])
    secrets = {f.name for t in credential_types.TYPES.values() for f in t.fields if f.secret}
    publics = {f.name for t in credential_types.TYPES.values() for f in t.fields if not f.secret}
    assert not (returned & (secrets - publics))  # no field that is only ever secret is in a response


def test_gcp_key_with_both_spellings_of_a_key_is_invalid() -> None:
    """clientEmail and client_email normalise to one key: keeping either would silently drop the other."""
    err = invalid("gcp", {"gcpKey": {"clientEmail": "e", "client_email": "f"}})
    assert set(err.errors) == {"gcpKey"} and "client_email" in err.message


@pytest.mark.parametrize("value", [5, None, ["basic"], "bad\x00type", "x" * 65])
def test_unprintable_or_non_string_type_is_not_quoted(value: Any) -> None:
    """An odd value is described, not shown (it used to read "unknown type 'value'")."""
    with pytest.raises(InvalidInput) as info:
        credential_types.get_type(value)
    assert "'value'" not in info.value.message and "basic" in info.value.message
    assert "\x00" not in info.value.message and "x" * 65 not in info.value.message


def test_inline_credential_data_uses_the_keys_its_type_declares() -> None:
    """oauth credentialData says oauthRefreshToken (DataRobot's key), a stored oauth credential refreshToken;
    types without their own data keys validate data like a stored credential."""
    ctype, values = credential_types.parse_credential_data({"credentialType": "oauth", "oauthRefreshToken": "r"})
    assert ctype.name == "oauth" and values == {"oauthRefreshToken": "r"}
    with pytest.raises(InvalidInput) as info:
        credential_types.parse_credential_data({"credentialType": "oauth", "refreshToken": "r"})
    assert "refreshToken" in info.value.errors
    with pytest.raises(InvalidInput) as info:
        credential_types.parse_credential_data({"credentialType": "oauth", "oauthClientId": "c"})
    assert "oauthRefreshToken" in info.value.errors
    basic, fields = credential_types.parse_credential_data({"credentialType": "basic", "user": "u", "password": "p"})
    assert basic.name == "basic" and fields == {"user": "u", "password": "p"}
    schema = credential_types.credential_data_schema(credential_types.TYPES["oauth"])
    assert schema["required"] == ["credentialType", "oauthRefreshToken"]
    assert set(schema["properties"]) == {
        "credentialType",
        "oauthRefreshToken",
        "oauthClientId",
        "oauthClientSecret",
        "oauthAccessToken",
    }
