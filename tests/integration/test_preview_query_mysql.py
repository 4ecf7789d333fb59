"""previewQuery on MariaDB runs one statement because PyMySQL sends several only with CLIENT.MULTI_STATEMENTS:
the connections the server opens (through SQLAlchemy's pymysql dialect) must never carry that flag."""

from __future__ import annotations

import pytest
from pymysql.constants import CLIENT

from strongroom.config import Settings
from strongroom.errors import InvalidInput
from strongroom.services.connections import Connector, target
from tests.support import mariadb_user


def test_store_connections_cannot_send_several_statements() -> None:
    with mariadb_user() as peer:
        connector = Connector(Settings())
        where = target(None, peer.jdbc_url, [])
        with connector.connect(where, peer.user, peer.password) as conn:
            flags = conn.connection.driver_connection.client_flag
        assert not flags & CLIENT.MULTI_STATEMENTS
        with pytest.raises(InvalidInput) as refused:
            connector.query(where, peer.user, peer.password, "COMMIT; CREATE TABLE pwn (x int); SELECT 1", 1)
        assert "sql" in refused.value.errors
        catalog = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{peer.database}'"
        assert connector.query(where, peer.user, peer.password, catalog, 10)["records"] == [["orders"]]
