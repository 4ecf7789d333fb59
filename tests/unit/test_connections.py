"""The SSRF guard and JDBC URL mapping of outbound data store connections (services/connections.py)."""

from __future__ import annotations

import pytest

from strongroom.config import Settings
from strongroom.errors import Forbidden, InvalidInput
from strongroom.services.connections import DRIVERS, Connector, target


def _connector(answers: dict[str, list[str]], **settings: str) -> Connector:
    return Connector(Settings(**settings), resolve=lambda host, port: answers.get(host, []))


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "169.254.0.1", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254"]
)
def test_link_local_and_metadata_addresses_are_refused_after_resolution(address: str) -> None:
    with pytest.raises(Forbidden, match="link-local or cloud metadata"):
        _connector({"innocent.example": [address]}).address("innocent.example", 5432)


def test_deny_and_allow_lists() -> None:
    deny = _connector({"db.example": ["10.1.2.3"], "ok.example": ["10.9.0.1"]}, connect_deny="bad.example,10.1.0.0/16")
    with pytest.raises(Forbidden, match="deny list"):
        deny.address("bad.example", 5432)
    with pytest.raises(Forbidden, match="deny list"):
        deny.address("db.example", 5432)
    assert deny.address("ok.example", 5432) == "10.9.0.1"
    allow = _connector({"db.example": ["10.1.2.3"], "x.example": ["192.0.2.1"]}, connect_allow="10.0.0.0/8")
    assert allow.address("db.example", 5432) == "10.1.2.3"
    with pytest.raises(Forbidden, match="allow list"):
        allow.address("x.example", 5432)
    metadata = _connector({"m.example": ["169.254.169.254"]}, connect_allow="169.254.169.254/32")
    assert metadata.address("m.example", 80) == "169.254.169.254"  # an admin may name it explicitly


@pytest.mark.parametrize(
    ("url", "dialect", "host", "port", "database"),
    [
        ("jdbc:postgresql://db.example:6543/sales", "postgresql+psycopg", "db.example", 6543, "sales"),
        ("jdbc:postgresql://db.example/sales?ssl=true", "postgresql+psycopg", "db.example", 5432, "sales"),
        ("jdbc:mysql://10.0.0.5:3307/shop", "mysql+pymysql", "10.0.0.5", 3307, "shop"),
        ("jdbc:mariadb://[::1]:3306/shop", "mysql+pymysql", "::1", 3306, "shop"),
    ],
)
def test_jdbc_urls_map_onto_the_drivers(url: str, dialect: str, host: str, port: int, database: str) -> None:
    where = target(None, url, [])
    assert (where.driver.dialect, where.host, where.port, where.database) == (dialect, host, port, database)


def test_a_driver_that_does_not_match_the_url_is_refused() -> None:
    mysql = next(d.id for d in DRIVERS.values() if d.database_driver == "mysql")
    with pytest.raises(InvalidInput, match=r"params\.driverId"):
        target(mysql, "jdbc:postgresql://h:5432/d", [])
    with pytest.raises(InvalidInput, match=r"params\.jdbcUrl"):
        target(None, "jdbc:sqlserver://h:1433;databaseName=x", [])
