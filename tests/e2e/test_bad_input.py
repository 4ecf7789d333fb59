"""The README's "Bad input" table, row by row, against a live server on each backend.

The table is parsed from README.md, so what the documentation promises is exactly what is tested: the status,
the JSON error shape, and the field the message names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import Server, assert_error, create_basic, http_client

README = Path(__file__).resolve().parents[2] / "README.md"
REPEAT = re.compile(r"(.)\u00d7(\d+)")  # the table writes c, a multiplication sign, N: c repeated N times


@dataclass(frozen=True)
class Row:
    """One table row: the request as written, the expected status and the field the message must name."""

    label: str
    method: str
    path: str
    body: bytes | None
    status: int
    field: str | None


def expand(text: str) -> str:
    """Expand the table's repetitions (how it writes 10 MB or 100 000 brackets) into the real input."""
    return REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), text)


def parse_table(markdown: str) -> list[Row]:
    section = markdown.split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        label, request, status, names = cells
        method, path, *rest = request.strip("`").split(" ", 2)
        field = re.match(r"`([^`]+)`", names)
        body = expand(rest[0]).encode() if rest else None
        rows.append(Row(label, method, path.lstrip("/"), body, int(status), field.group(1) if field else None))
    return rows


ROWS = parse_table(README.read_text(encoding="utf-8"))


def test_the_table_is_there() -> None:
    """Guard against a renamed section or a broken table making the parametrized test below vanish."""
    assert len(ROWS) >= 35, len(ROWS)
    assert {row.status for row in ROWS} >= {200, 201, 400, 404, 422}


@pytest.fixture(scope="module")
def table_api(server: Server) -> Iterator[httpx.Client]:
    """One user for the whole table (a user per row would cost more than the rows)."""
    token = server.new_user("table")
    with http_client(base_url=server.api, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        yield client


@pytest.mark.parametrize("row", ROWS, ids=[row.label for row in ROWS])
def test_readme_bad_input_table(table_api: httpx.Client, row: Row) -> None:
    path = row.path
    if "{id}" in path:
        path = path.replace("{id}", create_basic(table_api)["credentialId"])
    headers = {"Content-Type": "application/json"} if row.body is not None else {}
    resp = table_api.request(row.method, path, content=row.body, headers=headers)
    if row.status >= 400:
        body = assert_error(resp, row.status, row.field)
        assert len(resp.content) < 2000, "the error echoes the input"
        assert "\x00" not in body["message"]
    else:
        assert resp.status_code == row.status, resp.text[:500]
    if resp.status_code == 201:  # leave no name taken for the next row
        assert table_api.delete(f"credentials/{resp.json()['credentialId']}/").status_code == 204
