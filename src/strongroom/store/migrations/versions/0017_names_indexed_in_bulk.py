"""name search (SQLite): new names join the trigram index in bulk, not one by one as each create commits

FTS5 indexed each name in the create's own transaction, a third of a create's database time. Now the index
holds every credential whose rowid is at most `credential_names_indexed.through`; the rows above it are read
directly by a search, and the store's committer indexes them together (`CredentialRepository.index_names`).
A delete that leaves `through` above the highest rowid lowers it, since SQLite gives the next row the highest
rowid plus one: a new row is always above `through`. Renames and deletes still change the index at once.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HIGHEST = "(SELECT coalesce(max(rowid), 0) FROM credentials)"

_SQLITE_UP = [
    "CREATE TABLE credential_names_indexed (one INTEGER PRIMARY KEY CHECK (one = 1), through INTEGER NOT NULL)",
    f"INSERT INTO credential_names_indexed (one, through) VALUES (1, {_HIGHEST})",
    "DROP TRIGGER credential_names_insert",
    "DROP TRIGGER credential_names_delete",
    "CREATE TRIGGER credential_names_delete AFTER DELETE ON credentials BEGIN "
    "DELETE FROM credential_names WHERE rowid = old.rowid; "
    f"UPDATE credential_names_indexed SET through = {_HIGHEST} WHERE through > {_HIGHEST}; END",
]

_SQLITE_DOWN = [
    "INSERT INTO credential_names (rowid, name) SELECT rowid, name FROM credentials "
    "WHERE rowid > (SELECT through FROM credential_names_indexed)",
    "DROP TRIGGER credential_names_delete",
    "CREATE TRIGGER credential_names_insert AFTER INSERT ON credentials BEGIN "
    "INSERT INTO credential_names (rowid, name) VALUES (new.rowid, new.name); END",
    "CREATE TRIGGER credential_names_delete AFTER DELETE ON credentials BEGIN "
    "DELETE FROM credential_names WHERE rowid = old.rowid; END",
    "DROP TABLE credential_names_indexed",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_DOWN:
            op.execute(statement)
