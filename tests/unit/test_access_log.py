"""The access log: one request is one line, whatever its path holds (no forged lines, no terminal escapes)."""

from __future__ import annotations

import io

from strongroom.api.boundary import AccessLog


def _line(path: str) -> str:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.add({"client": ("127.0.0.1", 1), "method": "GET", "path": path}, 404, 0.001, "rid1")
    log.flush()
    return stream.getvalue()


def test_a_plain_path_is_logged_as_it_is() -> None:
    line = _line("/api/v2/credentials/")
    assert line.endswith(' 127.0.0.1 - "GET /api/v2/credentials/" 404 1.0ms rid=rid1\n')
    assert line[:4].isdigit() and line[19] == "Z"


def test_a_path_cannot_forge_a_second_line_or_escape_its_quotes() -> None:
    line = _line('/x\n2026-01-01T00:00:00Z 10.0.0.1 admin "DELETE /y" 204\x1b[31m"')
    assert line.count("\n") == 1 and "\x1b" not in line
    assert '"GET /x\\n2026-01-01T00:00:00Z 10.0.0.1 admin \\"DELETE /y\\" 204\\x1b[31m\\"" 404' in line


def test_a_token_in_the_path_is_not_logged() -> None:
    """A token pasted where its id belongs (`DELETE /account/apiKeys/<token>/`) is cut down to its prefix."""
    line = _line("/api/v2/account/apiKeys/sr_Qhi23wI-abcdefghijklmnopqrstuvwxyz0123456789/")
    assert "Qhi23wI" not in line and '"GET /api/v2/account/apiKeys/sr_…/" 404' in line
