"""Production mode: several server processes on one database serve one consistent view."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Server, backend_database, http_client


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_servers(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Server, Server]:
    """Two independent server processes sharing one database and master key."""
    with backend_database(request.param) as url:
        data = tmp_path / "data"
        first = Server(data_dir=data, database_url=url)
        first.start()  # creates the key file and schema
        second = Server(data_dir=data, database_url=url, extra_env={"STRONGROOM_WORKERS": "2"})
        second.start()
        yield first, second
        first.stop()
        second.stop()


def test_write_through_one_read_through_other_at_once(two_servers: tuple[Server, Server]) -> None:
    a, b = two_servers
    headers = {"Authorization": f"Bearer {a.new_user()}"}
    with http_client(headers=headers, timeout=30) as http:
        for i in range(20):
            created = http.post(f"{a.api}/credentials/", json={"name": f"c{i}", "user": "u", "password": "p"})
            assert created.status_code == 201
            cid = created.json()["credentialId"]
            # No delay: the other process (itself two workers) must already see it, in GET and list.
            assert http.get(f"{b.api}/credentials/{cid}/").json()["name"] == f"c{i}"
            assert http.get(f"{b.api}/credentials/", params={"limit": 1}).json()["totalCount"] == i + 1
            renamed = http.patch(f"{b.api}/credentials/{cid}/", json={"name": f"r{i}"})
            assert renamed.status_code == 200
            assert http.get(f"{a.api}/credentials/{cid}/").json()["name"] == f"r{i}"
        gone = http.delete(f"{a.api}/credentials/{cid}/")
        assert gone.status_code == 204
        assert http.get(f"{b.api}/credentials/{cid}/").status_code == 404
