"""name search: a trigram index for the case-insensitive substring `search` of credential lists

PostgreSQL: `pg_trgm` (a trusted extension: the database's owner may create it) and a GIN index on
`credentials.name`, which `ILIKE '%…%'` uses. SQLite: an FTS5 table with the trigram tokenizer holding each
credential's name under the credential's rowid, kept in step by triggers; a search looks its candidates up
there and checks them against the name itself, so the index only ever narrows what is read.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SQLITE_UP = [
    "CREATE VIRTUAL TABLE credential_names USING fts5(name, tokenize='trigram')",
    "INSERT INTO credential_names (rowid, name) SELECT rowid, name FROM credentials",
    "CREATE TRIGGER credential_names_insert AFTER INSERT ON credentials BEGIN "
    "INSERT INTO credential_names (rowid, name) VALUES (new.rowid, new.name); END",
    "CREATE TRIGGER credential_names_delete AFTER DELETE ON credentials BEGIN "
    "DELETE FROM credential_names WHERE rowid = old.rowid; END",
    "CREATE TRIGGER credential_names_rename AFTER UPDATE OF name ON credentials WHEN new.name IS NOT old.name BEGIN "
    "UPDATE credential_names SET name = new.name WHERE rowid = new.rowid; END",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_UP:
            op.execute(statement)
        return
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError:  # a user who may not create it: `search` still works, without the index
        return
    op.execute("CREATE INDEX ix_credentials_name_trgm ON credentials USING gin (name gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("insert", "delete", "rename"):
            op.execute(f"DROP TRIGGER IF EXISTS credential_names_{trigger}")
        op.execute("DROP TABLE IF EXISTS credential_names")
        return
    op.execute("DROP INDEX IF EXISTS ix_credentials_name_trgm")
