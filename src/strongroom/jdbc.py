"""JDBC URLs and the drivers behind them: which SQLAlchemy dialect a data store's `jdbc:postgresql://`,
`jdbc:mysql://` or `jdbc:mariadb://` URL (or its host/port/database fields) maps onto, and where it points.

Pure parsing, shared by the server (services/connections.py) and the SDK's `strongroom.connect.sql`, so it
imports nothing beyond the standard library and `errors`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any
from urllib.parse import unquote

from strongroom.errors import InvalidInput


@dataclass(frozen=True)
class Driver:
    """A driver as `externalDataDrivers/` lists it, and the SQLAlchemy dialect behind it."""

    id: str
    canonical_name: str
    class_name: str
    database_driver: str
    dialect: str
    default_port: int
    schemes: tuple[str, ...]

    def wire(self) -> dict[str, Any]:
        """The driver as `externalDataDrivers/` lists it (the server's SQLAlchemy version as its version)."""
        return {
            "id": self.id,
            "canonicalName": self.canonical_name,
            "className": self.class_name,
            "baseNames": [self.dialect.split("+")[1]],
            "databaseDriver": self.database_driver,
            "type": "jdbc",
            "version": version("sqlalchemy"),
            "creator": "strongroom",
        }


DRIVERS = {
    d.id: d
    for d in (
        Driver(
            "5d0000000000000000000001",
            "PostgreSQL (psycopg)",
            "org.postgresql.Driver",
            "postgres",
            "postgresql+psycopg",
            5432,
            ("postgresql",),
        ),
        Driver(
            "5d0000000000000000000002",
            "MySQL / MariaDB (PyMySQL)",
            "org.mariadb.jdbc.Driver",
            "mysql",
            "mysql+pymysql",
            3306,
            ("mysql", "mariadb"),
        ),
    )
}
_JDBC = re.compile(
    r"jdbc:(?P<scheme>[a-z]+)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:?;\[\]]+)(?::(?P<port>[0-9]{1,5}))?(?:/(?P<db>[^?;]*))?"
)

_PORT = re.compile("[0-9]{1,5}")


@dataclass(frozen=True)
class Target:
    """Where to connect: the driver, host, port and database."""

    driver: Driver
    host: str
    port: int
    database: str


def target(driver_id: str | None, jdbc_url: str | None, fields: Sequence[Mapping[str, Any]]) -> Target:
    """The connection target of a store's params (422 naming the field that is wrong)."""
    driver = DRIVERS.get(driver_id or "")
    if jdbc_url:
        found = _JDBC.fullmatch(jdbc_url.split("?", 1)[0].split(";", 1)[0].strip())
        if found is None:
            msg = "must look like jdbc:postgresql://host:port/database or jdbc:mysql://host:port/database"
            raise InvalidInput(f"params.jdbcUrl: {msg}", {"params.jdbcUrl": msg})
        scheme = found["scheme"]
        by_scheme = next((d for d in DRIVERS.values() if scheme in d.schemes), None)
        if by_scheme is None:
            msg = "only jdbc:postgresql, jdbc:mysql and jdbc:mariadb URLs are supported"
            raise InvalidInput(f"params.jdbcUrl: {msg}", {"params.jdbcUrl": msg})
        if driver is not None and driver is not by_scheme:
            msg = f"a jdbc:{scheme} URL needs the {by_scheme.canonical_name} driver ({by_scheme.id})"
            raise InvalidInput(f"params.driverId: {msg}", {"params.driverId": msg})
        host, port, database = found["host"].strip("[]"), found["port"], unquote(found["db"] or "")
        driver = by_scheme
    else:
        if driver is None:
            msg = f"must be one of {', '.join(DRIVERS)} (see externalDataDrivers/)"
            raise InvalidInput(f"params.driverId: {msg}", {"params.driverId": msg})
        named = {str(f.get("name") or f.get("id") or "").lower(): f.get("value") for f in fields}
        host = named.get("address") or named.get("host") or ""
        port, database = named.get("port"), named.get("database") or named.get("dbname") or ""
    if not host:
        raise InvalidInput("params: the store needs a host", {"params": "no host"})
    number = _port(port)
    return Target(driver, str(host), number or driver.default_port, str(database))


def _port(value: Any) -> int | None:
    """A port of 1 to 65535 written in ASCII digits (None: none given); `str.isdigit` would let superscripts
    and other scripts' digits through to an `int()` that fails or reads them."""
    if value is None:
        return None
    text = str(value)
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise InvalidInput("params: the port must be 1 to 65535", {"params": "bad port"})
    return int(text)


def url_parts(where: Target) -> dict[str, Any]:
    """The SQLAlchemy `URL.create` arguments of a target, without the login: drivername, host, port, database."""
    return {
        "drivername": where.driver.dialect,
        "host": where.host,
        "port": where.port,
        "database": where.database or None,
    }


__all__ = ["DRIVERS", "Driver", "Target", "target", "url_parts"]
