"""Persistence: SQLAlchemy models, engine setup with automatic Alembic migrations."""

from strongroom.store.db import Database, Tx

__all__ = ["Database", "Tx"]
