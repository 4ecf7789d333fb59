"""Batch job specs through the job service (`JobService.create`): csvSettings are checked when the job is created
(a 422 naming the setting, never a 500 nor a job that later fails as an internal error), and an error quotes at
most about 100 characters of what the client sent, never a Python repr."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from strongroom.api.errors import response_for
from strongroom.bootstrap import Services
from strongroom.errors import StrongroomError
from strongroom.services.accounts import Principal

PASSTHROUGH = "5e0000000000000000000001"
HUGE = "\u2028" * 349_000  # a 1 MiB JSON body of it; Python's repr escapes each to 6 characters


def _refusal(services: Services, who: Principal, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The status and JSON the API answers creating this job with: it must be refused."""
    with pytest.raises(StrongroomError) as raised:
        services.jobs.create(who, body, "http://in-process/api/v2")
    answer = response_for(raised.value)
    assert len(answer.body) < 1000, f"{len(answer.body)} bytes: {answer.body[:300]!r}"
    return answer.status_code, orjson.loads(answer.body)


BAD_CSV = {
    "NUL in encoding": ({"encoding": "utf\u0000-8"}, "csvSettings.encoding"),
    "unknown encoding": ({"encoding": "no-such-codec"}, "csvSettings.encoding"),
    "rot13 (text to text)": ({"encoding": "rot13"}, "csvSettings.encoding"),
    "zlib_codec (bytes to bytes)": ({"encoding": "zlib_codec"}, "csvSettings.encoding"),
    "hex (bytes to bytes)": ({"encoding": "hex"}, "csvSettings.encoding"),
    "punycode (not streamable)": ({"encoding": "punycode"}, "csvSettings.encoding"),
    "undefined (decodes nothing)": ({"encoding": "undefined"}, "csvSettings.encoding"),
    "empty encoding": ({"encoding": ""}, "csvSettings.encoding"),
    "long encoding": ({"encoding": "u" * 10_000}, "csvSettings.encoding"),
    "number encoding": ({"encoding": 8}, "csvSettings.encoding"),
    "delimiter is the quotechar": ({"delimiter": '"'}, "csvSettings.quotechar"),
    "tab is the quotechar": ({"delimiter": "tab", "quotechar": "\t"}, "csvSettings.quotechar"),
    "both set alike": ({"delimiter": ";", "quotechar": ";"}, "csvSettings.quotechar"),
    "newline delimiter": ({"delimiter": "\n"}, "csvSettings.delimiter"),
    "carriage return delimiter": ({"delimiter": "\r"}, "csvSettings.delimiter"),
    "NUL delimiter": ({"delimiter": "\u0000"}, "csvSettings.delimiter"),
    "non-ASCII delimiter": ({"delimiter": "é"}, "csvSettings.delimiter"),
    "two-character delimiter": ({"delimiter": ";;"}, "csvSettings.delimiter"),
    "empty delimiter": ({"delimiter": ""}, "csvSettings.delimiter"),
    "newline quotechar": ({"quotechar": "\n"}, "csvSettings.quotechar"),
    "empty quotechar": ({"quotechar": ""}, "csvSettings.quotechar"),
    "list quotechar": ({"quotechar": ["'"]}, "csvSettings.quotechar"),
}


@pytest.mark.parametrize(("settings", "field"), BAD_CSV.values(), ids=BAD_CSV.keys())
def test_csv_settings_the_reader_cannot_take_are_422(
    services: Services, who: Principal, settings: dict[str, Any], field: str
) -> None:
    status, body = _refusal(services, who, {"deploymentId": PASSTHROUGH, "csvSettings": settings})
    assert status == 422 and field in body["message"] and field in body["errors"], body


GOOD_CSV = {
    "utf-16": {"encoding": "utf-16"},
    "utf-32": {"encoding": "utf-32"},
    "latin-1": {"encoding": "latin-1"},
    "cp1252 with tab and a single quote": {"encoding": "cp1252", "delimiter": "tab", "quotechar": "'"},
    "shift_jis": {"encoding": "shift_jis", "delimiter": ";"},
    "utf-8-sig": {"encoding": "utf-8-sig"},
    "UTF8": {"encoding": "UTF8"},
    "a tab character": {"delimiter": "\t"},
    "a space": {"delimiter": " ", "quotechar": "|"},
}


@pytest.mark.parametrize("settings", GOOD_CSV.values(), ids=GOOD_CSV.keys())
def test_csv_settings_the_reader_takes_are_kept_as_given(
    services: Services, who: Principal, settings: dict[str, str]
) -> None:
    job = services.jobs.create(who, {"deploymentId": PASSTHROUGH, "csvSettings": settings}, "http://x/api/v2")
    kept = job["jobSpec"]["csvSettings"]
    assert {k: kept[k] for k in settings} == settings


QUOTED = {
    "a 1 MiB adapter type": ({"deploymentId": PASSTHROUGH, "intakeSettings": {"type": HUGE}}, 422),
    "a 1 MiB deployment id": ({"deploymentId": HUGE}, 404),
    "50000 strings as the type": ({"deploymentId": PASSTHROUGH, "outputSettings": {"type": ["x"] * 50_000}}, 422),
    "an object as the type": ({"deploymentId": PASSTHROUGH, "intakeSettings": {"type": {"a": "b" * 10_000}}}, 422),
    "a 1 MiB unknown key": ({"deploymentId": PASSTHROUGH, HUGE: 1}, 422),
    "a 1 MiB unknown setting": ({"deploymentId": PASSTHROUGH, "intakeSettings": {"type": "localFile", HUGE: 1}}, 422),
    "a 1 MiB csv setting name": ({"deploymentId": PASSTHROUGH, "csvSettings": {"x" * (1 << 20): 1}}, 422),
}


@pytest.mark.parametrize(("body", "status"), QUOTED.values(), ids=QUOTED.keys())
def test_errors_quote_at_most_100_characters_and_no_repr(
    services: Services, who: Principal, body: dict[str, Any], status: int
) -> None:
    """What the client sent comes back cut to 100 characters with "…", unprintable characters as U+FFFD, and a
    list or an object by its kind only (`_refusal` also holds the whole answer under 1000 bytes)."""
    answered, error = _refusal(services, who, body)
    assert answered == status
    for text in [error["message"], *error.get("errors", {}), *error.get("errors", {}).values()]:
        assert "\\u2028" not in text and "['x'" not in text and "{'a'" not in text, text
        assert len(text) < 250, text
    assert "…" in error["message"] or "(a list)" in error["message"] or "(an object)" in error["message"]


def test_a_short_value_is_quoted_whole(services: Services, who: Principal) -> None:
    status, body = _refusal(services, who, {"deploymentId": PASSTHROUGH, "intakeSettings": {"type": "ftp"}})
    assert status == 422 and "unsupported type 'ftp';" in body["message"]
