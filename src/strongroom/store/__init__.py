"""Persistence: SQLAlchemy models, engine setup with automatic Alembic migrations."""

from strongroom.store.db import Database

__all__ = ["Database"]
